"""MF² (arXiv 2506.06275): the release-layout loader, answer parsers and pairwise metrics.

A model sees one claim at a time and answers TRUE or FALSE; a pair counts as correct only when
its true claim (fact) is judged TRUE and its false claim (fib) FALSE, so chance is 25%.
Answers are read by one of four parsers; an unparsable answer is None and counts as wrong.

Release layout (our reading of the MF² release; `jaxmm.data.movies_synth` writes it):
`<root>/metadata.csv` (`movie_id, true_claim, false_claim` + `category, granularity`, extra
columns kept), `subtitles/<id>.srt`, `synopses/<id>.txt`, `videos/<id>.{mp4,mkv,webm}`.
"""

from __future__ import annotations

import csv
import dataclasses
import os
import re
from collections.abc import Mapping, Sequence

from jaxmm.data.video import read_srt, subtitles_text

REQUIRED_COLUMNS = ("movie_id", "true_claim", "false_claim")
OPTIONAL_COLUMNS = ("category", "granularity")
VIDEO_SUFFIXES = (".mp4", ".mkv", ".webm")
PARSERS = ("strict", "first", "last", "strict_fallback")
CHANCE = 0.25


class MF2DataError(ValueError):
    """A malformed or incomplete MF² release folder; the message names file, line, column."""


@dataclasses.dataclass(frozen=True)
class ClaimPair:
    pair_id: str  # "<movie_id>-<k>", k counting the movie's pairs from 0 in file order
    movie_id: str
    true_claim: str
    false_claim: str
    category: str = ""
    granularity: str = ""
    extra: Mapping[str, str] = dataclasses.field(default_factory=dict)
    where: str = ""  # "metadata.csv:LINE"


def load_pairs(root: str | os.PathLike) -> list[ClaimPair]:
    """Every claim pair of `<root>/metadata.csv` in file order, checked row by row."""
    path = os.path.join(os.fspath(root), "metadata.csv")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"MF² metadata file {path!r} does not exist")
    pairs: list[ClaimPair] = []
    counts: dict[str, int] = {}
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        missing = [c for c in REQUIRED_COLUMNS if c not in header]
        if missing:
            raise MF2DataError(f"{path}:1: header lacks column(s) {missing}; has {header}")
        for row in reader:
            where = f"{path}:{reader.line_num}"
            if None in row:
                raise MF2DataError(
                    f"{where}: row has {len(header) + len(row[None])} fields, header has "
                    f"{len(header)} (extra: {row[None]})"
                )
            for col in REQUIRED_COLUMNS:
                if row[col] is None or not row[col].strip():
                    raise MF2DataError(f"{where}: column {col!r} is missing or empty")
            if row["true_claim"].strip() == row["false_claim"].strip():
                raise MF2DataError(f"{where}: column 'false_claim' equals 'true_claim'")
            movie = row["movie_id"].strip()
            k = counts.get(movie, 0)
            counts[movie] = k + 1
            known = set(REQUIRED_COLUMNS) | set(OPTIONAL_COLUMNS)
            pairs.append(
                ClaimPair(
                    pair_id=f"{movie}-{k}",
                    movie_id=movie,
                    true_claim=row["true_claim"].strip(),
                    false_claim=row["false_claim"].strip(),
                    category=(row.get("category") or "").strip(),
                    granularity=(row.get("granularity") or "").strip(),
                    extra={c: v for c, v in row.items() if c not in known and v is not None},
                    where=where,
                )
            )
    return pairs


def subtitles_path(root: str | os.PathLike, movie_id: str) -> str:
    return os.path.join(os.fspath(root), "subtitles", f"{movie_id}.srt")


def synopsis_path(root: str | os.PathLike, movie_id: str) -> str:
    return os.path.join(os.fspath(root), "synopses", f"{movie_id}.txt")


def video_path(root: str | os.PathLike, movie_id: str) -> str:
    """The movie's video file (first of .mp4/.mkv/.webm found); FileNotFoundError otherwise."""
    for suffix in VIDEO_SUFFIXES:
        p = os.path.join(os.fspath(root), "videos", f"{movie_id}{suffix}")
        if os.path.isfile(p):
            return p
    where = os.path.join(os.fspath(root), "videos", movie_id)
    raise FileNotFoundError(
        f"video file for movie {movie_id!r} does not exist: {where}.mp4|mkv|webm"
    )


def transcript(root: str | os.PathLike, movie_id: str, timestamps: bool = False) -> str:
    """The movie's subtitles as one text (index and timing lines dropped)."""
    return subtitles_text(read_srt(subtitles_path(root, movie_id)), timestamps=timestamps)


def synopsis(root: str | os.PathLike, movie_id: str) -> str:
    path = synopsis_path(root, movie_id)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"synopsis file {path!r} does not exist")
    with open(path, encoding="utf-8") as f:
        text = f.read().strip()
    if not text:
        raise MF2DataError(f"synopsis file {path!r} is empty")
    return text


# ------------------------------------------------------------------------------ parsing
_TAG = re.compile(r"<answer>(.*?)</answer>", re.IGNORECASE | re.DOTALL)
_WORD = re.compile(r"\b(true|false)\b", re.IGNORECASE)


def _strict(text: str) -> bool | None:
    """The last `<answer>...</answer>` holding exactly TRUE or FALSE (case and punctuation
    around the word ignored), else None."""
    tags = _TAG.findall(text)
    if not tags:
        return None
    word = re.sub(r"[^a-z]", "", tags[-1].lower())
    return {"true": True, "false": False}.get(word)


def _occurrence(text: str, which: str) -> bool | None:
    words = _WORD.findall(text)
    if not words:
        return None
    return (words[0] if which == "first" else words[-1]).lower() == "true"


def parse_answer(text: str, parser: str = "strict_fallback") -> bool | None:
    """True / False / None (unparsable) from a model answer.

    `strict`: the `<answer>` tag; `first` / `last`: the first / last whole word true or false
    anywhere; `strict_fallback`: the tag, else the first occurrence.
    """
    if parser == "strict":
        return _strict(text)
    if parser in ("first", "last"):
        return _occurrence(text, parser)
    if parser == "strict_fallback":
        tagged = _strict(text)
        return tagged if tagged is not None else _occurrence(text, "first")
    raise ValueError(f"unknown parser {parser!r}; known: {list(PARSERS)}")


# ------------------------------------------------------------------------------ metrics
@dataclasses.dataclass(frozen=True)
class PairResult:
    movie_id: str
    on_true: bool | None  # the model's verdict on the true claim (None: unparsable)
    on_false: bool | None  # ... on the false claim

    @property
    def correct(self) -> bool:
        return self.on_true is True and self.on_false is False


def _rates(results: Sequence[PairResult]) -> dict[str, float]:
    n = len(results)
    return {
        "pairs": float(n),
        "pairwise_accuracy": sum(r.correct for r in results) / n,
        "tpr": sum(r.on_true is True for r in results) / n,  # true claims judged TRUE
        "tnr": sum(r.on_false is False for r in results) / n,  # false claims judged FALSE
        "none_rate": sum((r.on_true is None) + (r.on_false is None) for r in results) / (2 * n),
    }


def pair_metrics(results: Sequence[PairResult]) -> dict[str, float]:
    """Micro (over pairs) pairwise accuracy, TPR, TNR, none-rate; `movie_pairwise_accuracy`
    is the mean over movies of each movie's pairwise accuracy; `movie/<id>/...` per movie."""
    if not results:
        return {"pairs": 0.0}
    out = _rates(results)
    by_movie: dict[str, list[PairResult]] = {}
    for r in results:
        by_movie.setdefault(r.movie_id, []).append(r)
    per_movie = {m: _rates(rs) for m, rs in sorted(by_movie.items())}
    out["movies"] = float(len(per_movie))
    out["movie_pairwise_accuracy"] = sum(v["pairwise_accuracy"] for v in per_movie.values()) / len(
        per_movie
    )
    for m, v in per_movie.items():
        out |= {f"movie/{m}/{k}": x for k, x in v.items() if k != "pairs"}
    return out
