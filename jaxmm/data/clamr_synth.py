"""A procedural multimodal video corpus in the MultiVENT layout, for CLaMR on CPU.

Why this design: CLaMR's claim is that one model must pick the right modality per query. So
videos come in groups of four siblings that share three modalities and differ in the fourth:
sibling k carries a unique value in modality k (a coloured shape moving one way, an on-screen
word, a spoken topic, an event/city description) and the group's shared value elsewhere. Each
sibling gets one query of type k that names only its unique value: it can be answered from
modality k alone, and every other modality is shared with distractors, so a retriever that
looks at the wrong modality is at chance within the group.

    python -m jaxmm.data.clamr_synth --out data/clamr_synth --train_groups 48 --test_groups 16

Frames are PNG files drawn with Pillow (the on-screen word is drawn into every frame, as real
OCR text is); the text modalities are short synthetic strings.

`noise=True` (the demo's setting, `configs/clamr.py:tiny` `data.synth_noise`) models the
condition CLaMR targets, real news videos whose ASR/OCR/metadata are long and noisy: OCR and
speech values are two words (every query names two or three content words), each text field
gets realistic clutter (ASR: filler words and off-topic sentences; OCR: ticker / station text;
description: uploader boilerplate), and the content words of each video's query are planted as
distractors in *other* videos: split one word per modality across the wrong modalities of each
sibling (so a sibling holds every query word, but no single modality of it holds them all),
plus one word in a wrong modality of one random video of another group. A plain token-max
score (each query token takes its best match in any modality) cannot tell such a sibling from
the positive by the words; a modality-max score can (only the positive's gold modality holds
all of them). Guarantees (tests/data/test_multivent.py): every content word of a query is in the
positive's gold modality and in none of the positive's other text modalities; no modality of
any other video holds all of them; each query's words appear in a wrong modality of a negative.
`noise=False` writes exactly the old corpus (same seed, same files).
"""

from __future__ import annotations

import argparse
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from jaxmm.data.multivent import MODALITIES, write_multivent

COLORS = {
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (50, 80, 230),
    "yellow": (235, 215, 40),
    "purple": (150, 60, 190),
    "orange": (245, 140, 30),
    "white": (240, 240, 240),
    "cyan": (40, 205, 215),
}
SHAPES = ("circle", "square", "triangle", "cross")
MOTIONS = ("left", "right", "up", "down")
_SYLLABLES = "ka lo mi ru ten vos zar pel dun fi go ha ji bu ner qua sol tri wex yor".split()

QUERY_TEMPLATES = {
    "video": "a {color} {shape} moving {motion}",
    "ocr": "the on-screen text says {word}",
    "asr": "the reporter talks about the {topic} festival",
    "description": "news about the {event} in {city}",
}
TEXT_MODALITIES = ("ocr", "asr", "description")

# Clutter of the noisy corpus (noise=True). No colour, shape or motion word of the video
# queries is in these lists, so the video words appear in text only where planted.
FILLERS = ("um", "uh", "so", "you know", "well", "okay", "i mean", "like")
OFF_TOPIC = (
    "traffic is heavy tonight",
    "cloudy until the weekend",
    "stay with us",
    "back to the studio",
    "markets closed higher",
    "thanks for joining us",
)
TICKERS = ("LIVE", "BREAKING", "NEWS 24", "CH 7", "HD", "12:45", "UPDATE", "EXCLUSIVE", "WORLD")
BOILERPLATE = ("uploaded by the newsroom", "subscribe", "all rights reserved", "watch online")
DISTRACTOR_ASR = ("also {w}", "{w} again", "earlier {w}")
DISTRACTOR_DESCRIPTION = ("see {w}", "tags {w}", "related {w}")


@dataclass(frozen=True)
class Visual:
    color: str
    shape: str
    motion: str


def _words(rng: random.Random, n: int, used: set[str]) -> list[str]:
    """`n` new pseudo-words (2-3 syllables), never repeating one in `used`."""
    out = []
    while len(out) < n:
        word = "".join(rng.choice(_SYLLABLES) for _ in range(rng.choice((2, 3))))
        if word not in used:
            used.add(word)
            out.append(word)
    return out


def _values(
    rng: random.Random, visuals: list[Visual], used: set[str], two_words: bool = False
) -> dict[str, Any]:
    """One value per modality; visuals are drawn without replacement from `visuals`.
    `two_words`: OCR and ASR values of two pseudo-words (the noisy corpus)."""
    word, topic, event, city = _words(rng, 4, used)
    if two_words:
        word2, topic2 = _words(rng, 2, used)
        word, topic = f"{word} {word2}", f"{topic} {topic2}"
    return {
        "video": visuals.pop(),
        "ocr": word.upper(),
        "asr": topic,
        "description": (event, city),
    }


def content_words(modality: str, value: Any) -> list[str]:
    """The lower-case words a query of `modality` names (its answer)."""
    if modality == "video":
        return [value.color, value.shape, value.motion]
    if modality == "description":
        return list(value)
    return value.lower().split()


def draw_frames(visual: Visual, ocr: str, n_frames: int, size: int, seed: int) -> list[Image.Image]:
    """The shape crosses the frame in `visual.motion`; the OCR word sits in a bottom band."""
    rng = np.random.default_rng(seed)
    background = rng.integers(20, 60, (size, size, 3), dtype=np.uint8)
    r = size // 8
    travel = np.linspace(r + 2, size - r - 2, n_frames)
    if visual.motion in ("left", "up"):
        travel = travel[::-1]
    font = ImageFont.load_default()
    frames = []
    for i in range(n_frames):
        im = Image.fromarray(background.copy())
        draw = ImageDraw.Draw(im)
        mid = size * 0.4
        cx, cy = (travel[i], mid) if visual.motion in ("left", "right") else (size / 2, travel[i])
        cy = min(cy, size * 0.78 - r)  # keep clear of the text band
        color = COLORS[visual.color]
        box = (cx - r, cy - r, cx + r, cy + r)
        if visual.shape == "circle":
            draw.ellipse(box, fill=color)
        elif visual.shape == "square":
            draw.rectangle(box, fill=color)
        elif visual.shape == "triangle":
            draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=color)
        else:  # cross
            w = max(r // 3, 1)
            draw.rectangle((cx - r, cy - w, cx + r, cy + w), fill=color)
            draw.rectangle((cx - w, cy - r, cx + w, cy + r), fill=color)
        draw.rectangle((0, int(size * 0.8), size, size), fill=(0, 0, 0))
        draw.text((2, int(size * 0.8) + 1), ocr, fill=(255, 255, 255), font=font)
        frames.append(im)
    return frames


def _query_text(modality: str, value: Any) -> str:
    template = QUERY_TEMPLATES[modality]
    if modality == "video":
        return template.format(color=value.color, shape=value.shape, motion=value.motion)
    if modality == "ocr":
        return template.format(word=value)
    if modality == "asr":
        return template.format(topic=value)
    return template.format(event=value[0], city=value[1])


def _record(video_id: str, frames: list[str], values: dict[str, Any]) -> dict[str, Any]:
    event, city = values["description"]
    return {
        "video_id": video_id,
        "images": frames,
        "ocr": values["ocr"],
        "asr": f"hello and welcome, today the reporter talks about the {values['asr']} festival",
        "description": f"a news report on the {event} in {city}",
        "title": f"{city} today",
    }


def generate_split(
    root: str | os.PathLike,
    split: str,
    n_groups: int,
    *,
    rng: random.Random,
    visuals: list[Visual],
    used_words: set[str],
    n_frames: int = 4,
    frame_size: int = 64,
    noise: bool = False,
) -> int:
    """Writes `n_groups` × 4 videos (one inline query each) of one split; returns the count."""
    root = Path(root)
    if noise:
        return _generate_noisy_split(
            root, split, n_groups, rng=rng, visuals=visuals, used_words=used_words,
            n_frames=n_frames, frame_size=frame_size,
        )  # fmt: skip
    records = []
    for g in range(n_groups):
        base = _values(rng, visuals, used_words)
        for modality in MODALITIES:
            # Only the video sibling consumes a visual of its own (the others' is unused).
            own = _values(rng, visuals if modality == "video" else [None], used_words)
            values = {**base, modality: own[modality]}
            video_id = f"{split}-g{g:03d}-{modality}"
            frame_dir = root / "frames" / video_id
            frame_dir.mkdir(parents=True, exist_ok=True)
            paths = []
            seed = rng.randrange(2**31)
            for i, im in enumerate(
                draw_frames(values["video"], values["ocr"], n_frames, frame_size, seed)
            ):
                im.save(frame_dir / f"{i:02d}.png")
                paths.append(f"frames/{video_id}/{i:02d}.png")
            record = _record(video_id, paths, values)
            record |= {
                "query_id": f"q-{video_id}",
                "query": _query_text(modality, own[modality]),
                "query_type": "speech" if modality == "asr" else modality,
            }
            records.append(record)
    return write_multivent(root, split, records)


def num_queries(groups: int) -> int:
    """Queries (= videos) of a split of `groups` groups: one sibling per modality."""
    return groups * len(MODALITIES)


def _save_frames(root: Path, video_id: str, values: dict[str, Any], n_frames, size, seed) -> list:
    frame_dir = root / "frames" / video_id
    frame_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, im in enumerate(draw_frames(values["video"], values["ocr"], n_frames, size, seed)):
        im.save(frame_dir / f"{i:02d}.png")
        paths.append(f"frames/{video_id}/{i:02d}.png")
    return paths


def _noisy_texts(rng: random.Random, values: dict[str, Any], planted: dict[str, list[str]]):
    """(ocr, asr, description) of one video: its values, the words planted in each field, and
    clutter, in a random order (a value's own words stay together)."""
    ocr = [values["ocr"], *(w.upper() for w in planted["ocr"]), *rng.sample(TICKERS, 2)]
    rng.shuffle(ocr)
    asr = [f"the reporter talks about the {values['asr']} festival", rng.choice(OFF_TOPIC)]
    asr += [rng.choice(DISTRACTOR_ASR).format(w=w) for w in planted["asr"]]
    rng.shuffle(asr)
    asr = [f"{rng.choice(FILLERS)} {s}" if rng.random() < 0.5 else s for s in asr]
    event, city = values["description"]
    desc = [f"a news report on the {event} in {city}", rng.choice(BOILERPLATE)]
    desc += [rng.choice(DISTRACTOR_DESCRIPTION).format(w=w) for w in planted["description"]]
    rng.shuffle(desc)
    return " ".join(ocr), ", ".join(asr), ". ".join(desc)


def _generate_noisy_split(
    root: Path,
    split: str,
    n_groups: int,
    *,
    rng: random.Random,
    visuals: list[Visual],
    used_words: set[str],
    n_frames: int,
    frame_size: int,
) -> int:
    """The `noise=True` corpus (module docstring): values first, then the planted distractors
    (each query's words split over the wrong modalities of its siblings, one word in a wrong
    modality of one video of another group), then the cluttered texts."""
    values, words = {}, {}  # (group, modality of the video's query) -> values / query words
    for g in range(n_groups):
        base = _values(rng, visuals, used_words, two_words=True)
        for modality in MODALITIES:
            pool = visuals if modality == "video" else [None]
            own = _values(rng, pool, used_words, two_words=True)[modality]
            values[g, modality] = {**base, modality: own}
            words[g, modality] = content_words(modality, own)
    planted = {key: {t: [] for t in TEXT_MODALITIES} for key in values}
    for (g, k), query_words in words.items():
        for j in MODALITIES:
            if j == k:
                continue
            wrong = [t for t in TEXT_MODALITIES if t != k]
            rng.shuffle(wrong)
            assert len(query_words) <= len(wrong)  # at most one word per modality
            for w, t in zip(query_words, wrong, strict=False):
                planted[g, j][t].append(w)
    if n_groups > 1:
        for g, j in values:
            g2 = rng.choice([h for h in range(n_groups) if h != g])
            k2 = rng.choice(MODALITIES)
            w = rng.choice(words[g2, k2])
            if w not in words[g, j]:  # never a word of the video's own query
                planted[g, j][rng.choice([t for t in TEXT_MODALITIES if t != k2])].append(w)
    records = []
    for (g, k), vals in values.items():
        video_id = f"{split}-g{g:03d}-{k}"
        paths = _save_frames(root, video_id, vals, n_frames, frame_size, rng.randrange(2**31))
        ocr, asr, description = _noisy_texts(rng, vals, planted[g, k])
        records.append(
            {
                "video_id": video_id,
                "images": paths,
                "ocr": ocr,
                "asr": asr,
                "description": description,
                "title": f"{vals['description'][1]} today",
                "query_id": f"q-{video_id}",
                "query": _query_text(k, vals[k]),
                "query_type": "speech" if k == "asr" else k,
            }
        )
    return write_multivent(root, split, records)


def generate(
    root: str | os.PathLike,
    *,
    splits: dict[str, int] | None = None,
    seed: int = 0,
    n_frames: int = 4,
    frame_size: int = 64,
    noise: bool = False,
) -> dict[str, int]:
    """Writes every split (name -> number of 4-video groups); values never repeat across splits.
    `noise`: the cluttered corpus with planted distractors (module docstring)."""
    splits = splits or {"train": 48, "test": 16}
    rng = random.Random(seed)
    visuals = [Visual(c, s, m) for c in COLORS for s in SHAPES for m in MOTIONS]
    rng.shuffle(visuals)
    # Each group uses 2 visuals (its shared one and the video sibling's own).
    need = 2 * sum(splits.values())
    if need > len(visuals):
        raise ValueError(
            f"{sum(splits.values())} groups need {need} distinct visuals; only {len(visuals)} "
            f"(colour x shape x motion) exist: use at most {len(visuals) // 2} groups"
        )
    if n_frames < 2:
        raise ValueError(f"n_frames must be >= 2 to show motion, got {n_frames}")
    used: set[str] = set()
    return {
        split: generate_split(
            root,
            split,
            n,
            rng=rng,
            visuals=visuals,
            used_words=used,
            n_frames=n_frames,
            frame_size=frame_size,
            noise=noise,
        )
        for split, n in splits.items()
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--train_groups", type=int, default=48)
    parser.add_argument("--test_groups", type=int, default=16)
    parser.add_argument("--frames", type=int, default=4)
    parser.add_argument("--frame_size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--noise", action="store_true", help="clutter + planted distractors")
    args = parser.parse_args(argv)
    counts = generate(
        args.out,
        splits={"train": args.train_groups, "test": args.test_groups},
        seed=args.seed,
        n_frames=args.frames,
        frame_size=args.frame_size,
        noise=args.noise,
    )
    print(", ".join(f"{split}: {n} videos" for split, n in counts.items()), "->", args.out)


if __name__ == "__main__":
    main()
