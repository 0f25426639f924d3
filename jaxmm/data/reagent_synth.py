"""Procedural video questions for ReAgent-V: long stretches of black screen with a few brief
key moments, so which frames a method looks at decides whether it can answer; seeded.

A clip is `duration_s` of black frames with `num_events` short events (`event_frames` frames
each, never overlapping or adjacent): a figure of one colour holding a white square on a
coloured background. Colours and backgrounds differ between the events of a clip. The
captions file (SRT) describes what is on screen at every time ("a black screen", or the
event), and is what a text-only model reads for the frames it is shown. One multiple-choice
question per event: "What colour is the figure shown on the <background> background?" with
the clip's event colours as options (gold: the event's colour).

    python -m jaxmm.data.reagent_synth --out runs/reagent/data --n 10 --seed 0
"""

from __future__ import annotations

import argparse
import os
import random
from typing import Any

import numpy as np

from jaxmm.data.movies_synth import COLOURS, OBJECT_RGB
from jaxmm.data.video import Subtitle, write_srt, write_video
from jaxmm.io.jsonl import write_jsonl

WIDTH, HEIGHT, FPS = 128, 96, 8.0
BLACK = (0, 0, 0)
BACKGROUNDS = {
    "orange": (240, 140, 30),
    "teal": (30, 150, 150),
    "pink": (240, 150, 190),
    "grey": (128, 128, 128),
    "brown": (120, 80, 40),
}
BLANK_CAPTION = "a black screen"


def event_caption(colour: str, background: str) -> str:
    return f"a {colour} figure holding a white square on a {background} background"


def render_event(colour: str, background: str) -> np.ndarray:
    img = np.empty((HEIGHT, WIDTH, 3), np.uint8)
    img[:] = BACKGROUNDS[background]
    x0, y0 = WIDTH // 2 - 10, HEIGHT // 2 - 14
    img[y0 : y0 + 36, x0 : x0 + 20] = COLOURS[colour]
    img[y0 - 12 : y0 - 2, x0 + 5 : x0 + 15] = OBJECT_RGB
    return img


def make_clip(
    rng: random.Random, duration_s: float = 20.0, num_events: int = 3, event_frames: int = 2
) -> list[dict[str, Any]]:
    """Events as {"start": frame, "colour", "background"}, in time order."""
    n = int(round(duration_s * FPS))
    slots = list(range(1, n // (event_frames + 1) - 1))  # events never touch each other
    starts = sorted(s * (event_frames + 1) for s in rng.sample(slots, num_events))
    colours = rng.sample(sorted(COLOURS), num_events)
    backgrounds = rng.sample(sorted(BACKGROUNDS), num_events)
    return [
        {"start": s, "colour": c, "background": b}
        for s, c, b in zip(starts, colours, backgrounds, strict=True)
    ]


def render_clip(events: list[dict[str, Any]], num_frames: int, event_frames: int) -> np.ndarray:
    frames = np.zeros((num_frames, HEIGHT, WIDTH, 3), np.uint8)
    for e in events:
        frames[e["start"] : e["start"] + event_frames] = render_event(e["colour"], e["background"])
    return frames


def captions(events: list[dict[str, Any]], num_frames: int, event_frames: int) -> list[Subtitle]:
    """Blank stretches and events as consecutive subtitles covering the whole clip."""
    subs, t = [], 0
    for e in events:
        if e["start"] > t:
            subs.append((t, e["start"], BLANK_CAPTION))
        end = e["start"] + event_frames
        subs.append((e["start"], end, event_caption(e["colour"], e["background"])))
        t = end
    if t < num_frames:
        subs.append((t, num_frames, BLANK_CAPTION))
    return [Subtitle(i + 1, a / FPS, b / FPS, text) for i, (a, b, text) in enumerate(subs)]


def write_dataset(
    root: str,
    n: int = 10,
    seed: int = 0,
    *,
    duration_s: float = 20.0,
    num_events: int = 3,
    event_frames: int = 2,
) -> list[dict[str, Any]]:
    """`<root>/videos/<id>.mp4`, `<root>/captions/<id>.srt`, `<root>/questions.jsonl`
    (pipeline records without `mode`); returns the records."""
    rng = random.Random(seed)
    num_frames = int(round(duration_s * FPS))
    records = []
    for k in range(n):
        clip_id = f"clip{k:03d}"
        events = make_clip(rng, duration_s, num_events, event_frames)
        video = write_video(
            os.path.join(root, "videos", f"{clip_id}.mp4"),
            render_clip(events, num_frames, event_frames),
            fps=FPS,
        )
        srt = write_srt(
            os.path.join(root, "captions", f"{clip_id}.srt"),
            captions(events, num_frames, event_frames),
        )
        options = [e["colour"] for e in events]
        rng.shuffle(options)
        for j, e in enumerate(events):
            records.append(
                {
                    "id": f"{clip_id}-q{j}",
                    "video": os.path.abspath(video),
                    "captions": os.path.abspath(srt),
                    "question": (
                        f"What colour is the figure shown on the {e['background']} background?"
                    ),
                    "options": options,
                    "answer": "ABCDEF"[options.index(e["colour"])],
                    "event_frames": list(range(e["start"], e["start"] + event_frames)),
                    "tools": {"asr": "(no speech)", "ocr": "(no text found)"},
                }
            )
    write_jsonl(os.path.join(root, "questions.jsonl"), records)
    return records


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--n", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    records = write_dataset(args.out, args.n, args.seed)
    print(f"{len(records)} questions on {args.n} clips in {args.out}")


if __name__ == "__main__":
    main()
