"""Procedural movies with known facts, in MF²'s release layout; seeded.

A movie is a few scenes; in each, two coloured figures (the characters) walk in from the
sides, meet, and one hands the other an object (a small white square moves from one head to
the other) on a scene-coloured background. Subtitles carry what they say; a synopsis tells
the plot. Facts are split by where they can be read, so the harness's input settings matter:

  * subtitles only: where the receiver says it will take the object (`dialogue`);
  * synopsis only: how two characters are related (`relationship`);
  * video only: the figures' colours and the backgrounds (`visual`: names never have colours
    in text, colours never have names in the video);
  * subtitles or synopsis: who gives what to whom, and in which order.

Every claim pair is a true claim and a minimal edit of it (two characters, two colours or two
events swapped, or one object/place replaced). Layout written by `write_dataset` (our reading
of the MF² release: one metadata table, one folder per modality, files named by movie id):

    <root>/metadata.csv          movie_id,true_claim,false_claim,category,granularity,evidence
    <root>/subtitles/<id>.srt
    <root>/synopses/<id>.txt
    <root>/videos/<id>.mp4

    python -m jaxmm.data.movies_synth --out runs/mf2/data --n 10 --seed 0
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import os
import random

import numpy as np

from jaxmm.data.video import Subtitle, write_srt, write_video

NAMES = ("Mara", "Tobias", "Ilse", "Kofi", "Anika", "Ruben", "Lena", "Osman", "Petra", "Yuki")
COLOURS = {  # figures
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 70, 220),
    "yellow": (235, 205, 40),
    "purple": (140, 50, 180),
}
BACKGROUNDS = {"grey": (128, 128, 128), "black": (20, 20, 20), "beige": (215, 195, 160)}
OBJECT_RGB = (255, 255, 255)
OBJECTS = ("key", "lamp", "letter", "compass", "ring", "map", "violin", "clock")
PLACES = ("harbour", "market", "library", "station", "chapel", "bakery", "tower", "mill")
RELATIONS = ("aunt", "teacher", "landlord", "mentor", "employer", "godmother")
COLUMNS = ("movie_id", "true_claim", "false_claim", "category", "granularity", "evidence")

WIDTH, HEIGHT, FPS, SCENE_S = 128, 96, 8, 4.0
FIG_W, FIG_H, OBJ = 16, 32, 8


@dataclasses.dataclass(frozen=True)
class Scene:
    giver: str
    receiver: str
    obj: str
    place: str  # where the receiver says it will take the object (subtitles only)
    background: str


@dataclasses.dataclass(frozen=True)
class Movie:
    movie_id: str
    colours: dict[str, str]  # character -> figure colour name
    scenes: tuple[Scene, ...]
    relation: tuple[str, str, str]  # (a, relation, b): "a is b's relation" (synopsis only)

    @property
    def duration_s(self) -> float:
        return SCENE_S * len(self.scenes)

    @property
    def num_frames(self) -> int:
        return int(round(self.duration_s * FPS))


def make_movie(movie_id: str, rng: random.Random, num_scenes: int = 3) -> Movie:
    """Three characters with distinct colours; each scene a distinct ordered (giver,
    receiver) pair, object and place; consecutive backgrounds differ."""
    names = rng.sample(NAMES, 3)
    colours = dict(zip(names, rng.sample(list(COLOURS), 3), strict=True))
    pairs = rng.sample([(a, b) for a in names for b in names if a != b], num_scenes)
    objs, places = rng.sample(OBJECTS, num_scenes), rng.sample(PLACES, num_scenes)
    backgrounds, scenes = list(BACKGROUNDS), []
    for i, (g, r) in enumerate(pairs):
        bg = rng.choice([b for b in backgrounds if not scenes or b != scenes[-1].background])
        scenes.append(Scene(g, r, objs[i], places[i], bg))
    a, b = rng.sample(names, 2)
    return Movie(movie_id, colours, tuple(scenes), (a, rng.choice(RELATIONS), b))


# ------------------------------------------------------------------------------ rendering
def figure_box(movie: Movie, t: float, who: str) -> tuple[int, int, int, int] | None:
    """(x0, y0, x1, y1) of a character's figure at time t, or None when off screen. The giver
    walks in from the left, the receiver from the right; they meet at mid-scene."""
    scene = movie.scenes[min(int(t // SCENE_S), len(movie.scenes) - 1)]
    u = min(max((t % SCENE_S) / SCENE_S, 0.0), 1.0)
    walk = min(u / 0.5, 1.0)  # 0 -> 1 during the first half, then they stand
    y0 = HEIGHT // 2 - FIG_H // 2 + 8
    if who == scene.giver:
        x0 = int(round(4 + walk * (WIDTH // 2 - FIG_W - 6 - 4)))
    elif who == scene.receiver:
        x0 = int(round(WIDTH - 4 - FIG_W - walk * (WIDTH // 2 - FIG_W - 6 - 4)))
    else:
        return None
    return x0, y0, x0 + FIG_W, y0 + FIG_H


def object_holder(movie: Movie, t: float) -> str:
    """Who holds the scene's object at time t: the giver until 60% of the scene."""
    scene = movie.scenes[min(int(t // SCENE_S), len(movie.scenes) - 1)]
    return scene.giver if (t % SCENE_S) / SCENE_S < 0.6 else scene.receiver


def render_frame(movie: Movie, t: float) -> np.ndarray:
    """uint8 [H, W, 3] of the movie at time t (what the MP4 shows, before compression)."""
    scene = movie.scenes[min(int(t // SCENE_S), len(movie.scenes) - 1)]
    img = np.empty((HEIGHT, WIDTH, 3), np.uint8)
    img[:] = BACKGROUNDS[scene.background]
    for who in (scene.giver, scene.receiver):
        x0, y0, x1, y1 = figure_box(movie, t, who)
        img[y0:y1, x0:x1] = COLOURS[movie.colours[who]]
    x0, y0, x1, _ = figure_box(movie, t, object_holder(movie, t))
    ox = (x0 + x1) // 2 - OBJ // 2
    img[y0 - OBJ - 2 : y0 - 2, ox : ox + OBJ] = OBJECT_RGB
    return img


def frame_times(movie: Movie) -> np.ndarray:
    return np.arange(movie.num_frames) / FPS


# ------------------------------------------------------------------------------ text
def subtitles(movie: Movie) -> list[Subtitle]:
    """Two lines per scene; speakers are not named (as in real subtitles)."""
    out = []
    for i, s in enumerate(movie.scenes):
        t0 = i * SCENE_S
        out.append(Subtitle(0, t0 + 0.5, t0 + 1.8, f"{s.receiver}, I brought you the {s.obj}."))
        out.append(
            Subtitle(
                0,
                t0 + 2.0,
                t0 + 3.6,
                f"Thank you, {s.giver}. I will take the {s.obj} to the {s.place}.",
            )
        )
    return out


def synopsis(movie: Movie) -> str:
    """The relation (only here) and every exchange in order (no places, no colours)."""
    a, rel, b = movie.relation
    n = len(movie.scenes)
    words = ["First"] + ["Then"] * max(n - 2, 0) + (["Finally"] if n > 1 else [])
    lines = [f"{a} is {b}'s {rel}."]
    for word, s in zip(words, movie.scenes, strict=True):
        lines.append(f"{word}, {s.giver} gives {s.receiver} the {s.obj}.")
    return " ".join(lines)


def claims(movie: Movie, rng: random.Random) -> list[dict[str, str]]:
    """True/false pairs of known answers; each false claim a minimal edit of the true one."""
    sc = movie.scenes
    s = rng.choice(sc)
    other_obj = rng.choice([x.obj for x in sc if x.obj != s.obj])
    i, j = sorted(rng.sample(range(len(sc)), 2))
    a, rel, b = movie.relation
    d = rng.choice(sc)
    other_place = rng.choice([p for p in PLACES if p not in {x.place for x in sc}])
    cg, cr = movie.colours[sc[0].giver], movie.colours[sc[0].receiver]
    bg0, bg1 = sc[0].background, sc[-1].background
    order = "{} gives away the {} before {} gives away the {}."
    rows = [
        (f"{s.giver} gives the {s.obj} to {s.receiver}.",
         f"{s.receiver} gives the {s.obj} to {s.giver}.", "character", "scene", "text"),
        (f"{s.giver} gives {s.receiver} the {s.obj}.",
         f"{s.giver} gives {s.receiver} the {other_obj}.", "object", "scene", "text"),
        (order.format(sc[i].giver, sc[i].obj, sc[j].giver, sc[j].obj),
         order.format(sc[j].giver, sc[j].obj, sc[i].giver, sc[i].obj), "event order", "movie",
         "text"),
        (f"{d.receiver} says they will take the {d.obj} to the {d.place}.",
         f"{d.receiver} says they will take the {d.obj} to the {other_place}.", "dialogue",
         "scene", "subtitles"),
        (f"{a} is {b}'s {rel}.", f"{b} is {a}'s {rel}.", "relationship", "movie", "synopsis"),
        (f"In the first scene, the {cg} figure hands an object to the {cr} figure.",
         f"In the first scene, the {cr} figure hands an object to the {cg} figure.", "visual",
         "scene", "video"),
    ]  # fmt: skip
    if bg0 != bg1:
        rows.append(
            (f"The movie starts on a {bg0} background and ends on a {bg1} background.",
             f"The movie starts on a {bg1} background and ends on a {bg0} background.",
             "visual", "movie", "video")
        )  # fmt: skip
    return [dict(zip(COLUMNS, (movie.movie_id, *r), strict=True)) for r in rows]


# ------------------------------------------------------------------------------ files
def write_movie(root: str, movie: Movie, video: bool = True) -> None:
    """`videos/<id>.mp4` (unless `video=False`), `subtitles/<id>.srt`, `synopses/<id>.txt`."""
    if video:
        frames = np.stack([render_frame(movie, t) for t in frame_times(movie)])
        write_video(os.path.join(root, "videos", f"{movie.movie_id}.mp4"), frames, fps=FPS)
    write_srt(os.path.join(root, "subtitles", f"{movie.movie_id}.srt"), subtitles(movie))
    os.makedirs(os.path.join(root, "synopses"), exist_ok=True)
    with open(os.path.join(root, "synopses", f"{movie.movie_id}.txt"), "w") as f:
        f.write(synopsis(movie) + "\n")


def write_dataset(root: str, n: int = 10, seed: int = 0, video: bool = True) -> list[Movie]:
    """Writes `n` movies (ids movie000, ...) and `metadata.csv`; the same (n, seed) gives the
    same files. `video=False` skips the MP4s (text-only experiments)."""
    rng = random.Random(seed)
    movies, rows = [], []
    for k in range(n):
        movie = make_movie(f"movie{k:03d}", rng)
        movies.append(movie)
        rows.extend(claims(movie, rng))
        write_movie(root, movie, video=video)
    with open(os.path.join(root, "metadata.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return movies


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--n", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no_video", action="store_true")
    args = ap.parse_args()
    movies = write_dataset(args.out, args.n, args.seed, video=not args.no_video)
    print(f"wrote {len(movies)} movies to {args.out}")


if __name__ == "__main__":
    main()
