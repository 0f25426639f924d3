"""Multiple-choice questions with known answers about procedural movies (`movies_synth`).

The text stand-in for CinePile-style video QA used by Video-SKoT's real-model run: each record
shows a movie's subtitles and synopsis (the text a video model would also read) and asks one
question of a kind that needs a different skill: who hands over an object (`giver`), what is
handed over (`object`), where it will be taken (`place`, subtitles only), how two characters
are related (`relation`, synopsis only) and which exchange comes first (`order`). Four options
A-D, one correct; the wrong ones are drawn from the same movie where possible, seeded.

Record: {"id", "movie_id", "qtype", "context", "question", "options", "answer"} where
`answer` is the correct letter; with `generate(..., video_root=dir)` also "video", the path
of the movie's procedural MP4 (`movies_synth.write_movie`: `<dir>/videos/<movie_id>.mp4`).
"""

from __future__ import annotations

import os
import random
from typing import Any

from jaxmm.data.movies_synth import (
    NAMES,
    OBJECTS,
    PLACES,
    RELATIONS,
    Movie,
    make_movie,
    write_movie,
)
from jaxmm.data.movies_synth import subtitles as movie_subtitles
from jaxmm.data.movies_synth import synopsis as movie_synopsis

LETTERS = ("A", "B", "C", "D")
QTYPES = ("giver", "object", "place", "relation", "order")


def context_text(movie: Movie) -> str:
    """Subtitle lines (no timestamps, as MF² joins them) then the synopsis."""
    lines = " ".join(s.text for s in movie_subtitles(movie))
    return f"Subtitles: {lines}\nSynopsis: {movie_synopsis(movie)}"


def _options(correct: str, pool: list[str], rng: random.Random) -> tuple[list[str], str]:
    wrong = rng.sample([p for p in dict.fromkeys(pool) if p != correct], 3)
    options = [correct, *wrong]
    rng.shuffle(options)
    return options, LETTERS[options.index(correct)]


def make_question(movie: Movie, qtype: str, rng: random.Random) -> dict[str, Any]:
    """One question of kind `qtype` about `movie` (ValueError for an unknown kind)."""
    s = rng.choice(movie.scenes)
    cast = list(movie.colours)
    if qtype == "giver":
        question = f"Who gives the {s.obj} to {s.receiver}?"
        correct, pool = s.giver, cast + list(NAMES)
    elif qtype == "object":
        question = f"What does {s.giver} give to {s.receiver}?"
        correct, pool = s.obj, [x.obj for x in movie.scenes] + list(OBJECTS)
    elif qtype == "place":
        question = f"Where does {s.receiver} say they will take the {s.obj}?"
        correct, pool = s.place, [x.place for x in movie.scenes] + list(PLACES)
    elif qtype == "relation":
        a, rel, b = movie.relation
        question = f"How is {a} related to {b}?"
        correct, pool = f"{b}'s {rel}", [f"{b}'s {r}" for r in RELATIONS]
    elif qtype == "order":
        question = "Which object is handed over first in the movie?"
        correct, pool = movie.scenes[0].obj, [x.obj for x in movie.scenes] + list(OBJECTS)
    else:
        raise ValueError(f"unknown question type {qtype!r}; known: {list(QTYPES)}")
    options, answer = _options(correct, pool, rng)
    return {"qtype": qtype, "question": question, "options": options, "answer": answer}


def generate(
    n: int, seed: int = 0, prefix: str = "q", video_root: str | None = None
) -> list[dict[str, Any]]:
    """`n` questions cycling through QTYPES, one new movie each; same (n, seed) -> same list.
    `video_root`: also write each movie's files there (MP4 + SRT + synopsis) and give each
    record its `video` path (the questions are the same as without it)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        movie = make_movie(f"{prefix}movie{i:03d}", rng)
        q = make_question(movie, QTYPES[i % len(QTYPES)], rng)
        rec = {"id": f"{prefix}{i:03d}", "movie_id": movie.movie_id,
               "context": context_text(movie), **q}  # fmt: skip
        if video_root is not None:
            write_movie(video_root, movie)
            rec["video"] = os.path.join(video_root, "videos", f"{movie.movie_id}.mp4")
        out.append(rec)
    return out


def format_options(options: list[str]) -> str:
    """`A. x` lines, the layout every Video-SKoT prompt shows."""
    return "\n".join(f"{letter}. {o}" for letter, o in zip(LETTERS, options, strict=False))
