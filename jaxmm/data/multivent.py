"""MultiVENT 2.0 / 2.0++ layout for CLaMR: videos with frames, OCR, ASR, description; typed queries.

The layout (one folder per corpus, splits side by side; the record format of the CLaMR spec):

    <root>/<split>.jsonl         one record per video:
        {"video_id": str, "images": [frame paths, relative to <root> or absolute],
         "ocr": str, "asr": str, "description": str, "title": str (optional),
         "query_id": str, "query": str, "query_type": "video"|"ocr"|"speech"|"description"}
        (the three query fields are optional: MultiVENT 2.0++ has one query per video,
         MultiVENT 2.0 keeps queries apart and judges them in the qrels file)
    <root>/<split>_queries.jsonl optional: {"query_id", "query", "query_type"} per line
    <root>/<split>_qrels.jsonl   optional: {"query_id", "doc_id", "relevance"} per line;
        without it, an inline query's one relevant video is the record that carries it.

Modality ids follow the CLaMR model: 0 = padding / system tokens, then `MODALITIES` from 1.
Every bad record is reported as `file:line: what is wrong` before any model work.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jaxmm.io.jsonl import iter_jsonl, write_jsonl

MODALITIES = ("video", "ocr", "asr", "description")  # modality id = index + 1
# Query types as MultiVENT 2.0++ writes them -> our modality names.
QUERY_TYPES = {
    "video": "video",
    "ocr": "ocr",
    "speech": "asr",
    "asr": "asr",
    "description": "description",
}
_TEXT_FIELDS = ("ocr", "asr", "description")


def modality_id(name: str) -> int:
    """1-based id of a modality name or MultiVENT query type ('speech' -> asr)."""
    modality = QUERY_TYPES.get(name, name)
    if modality not in MODALITIES:
        raise ValueError(
            f"unknown modality / query_type {name!r}; expected one of {sorted(QUERY_TYPES)}"
        )
    return MODALITIES.index(modality) + 1


@dataclass(frozen=True)
class Video:
    video_id: str
    frames: tuple[str, ...]  # absolute frame paths, in temporal order
    ocr: str
    asr: str
    description: str
    title: str = ""

    def text(self, modality: str) -> str:
        """The text of one text modality ('description' includes the title)."""
        if modality == "description":
            return f"{self.title} {self.description}".strip() if self.title else self.description
        return getattr(self, modality)


@dataclass(frozen=True)
class Query:
    query_id: str
    text: str
    query_type: str  # one of MODALITIES (MultiVENT's 'speech' is stored as 'asr')

    @property
    def modality_id(self) -> int:
        return modality_id(self.query_type)


@dataclass(frozen=True)
class MultiventSplit:
    videos: dict[str, Video]  # in file order
    queries: dict[str, Query]
    qrels: dict[str, dict[str, int]]  # query id -> {video id: relevance}
    empty: dict[str, int] = field(default_factory=dict)  # modality -> videos with no content

    def gold(self, query_id: str) -> list[str]:
        """Relevant video ids of a query, most relevant first."""
        judged = self.qrels.get(query_id, {})
        return [d for d, r in sorted(judged.items(), key=lambda kv: -kv[1]) if r > 0]


def _check_video(row: dict[str, Any]) -> None:
    """Field types of one video record (raised errors get `file:line` from the reader)."""
    for name in ("video_id", "images", *_TEXT_FIELDS):
        if name not in row:
            raise ValueError(f"missing field {name!r}")
    if not isinstance(row["images"], list) or not row["images"]:
        raise ValueError(
            f"field 'images' must be a non-empty list of frame paths, got {row['images']!r:.80}"
        )
    for name in (*_TEXT_FIELDS, "title"):
        if name in row and not isinstance(row[name], str):
            raise ValueError(f"field {name!r} must be a string, got {type(row[name]).__name__}")
    if "query" in row or "query_type" in row:
        for name in ("query_id", "query", "query_type"):
            if name not in row:
                raise ValueError(f"record has an inline query but no {name!r}")
        modality_id(str(row["query_type"]))


def _check_query(row: dict[str, Any]) -> None:
    for name in ("query_id", "query", "query_type"):
        if name not in row:
            raise ValueError(f"missing field {name!r}")
    if not str(row["query"]).strip():
        raise ValueError(f"query {row['query_id']!r} has empty text")
    modality_id(str(row["query_type"]))


def _query(row: dict[str, Any]) -> Query:
    return Query(str(row["query_id"]), str(row["query"]), QUERY_TYPES[str(row["query_type"])])


def _frame_path(root: Path, frame: Any, where: str) -> str:
    if not isinstance(frame, str):
        raise ValueError(f"{where}: frame path must be a string, got {frame!r}")
    path = Path(frame) if os.path.isabs(frame) else root / frame
    return os.fspath(path)


def load_multivent(
    root: str | os.PathLike, split: str = "test", *, check_frames: bool = True
) -> MultiventSplit:
    """Reads one split; `check_frames` stats every frame file (names the first missing one)."""
    root = Path(root)
    videos_path = root / f"{split}.jsonl"
    if not videos_path.is_file():
        have = sorted(p.name for p in root.glob("*.jsonl")) if root.is_dir() else []
        raise FileNotFoundError(f"MultiVENT split file {videos_path} not found (have: {have})")

    videos: dict[str, Video] = {}
    queries: dict[str, Query] = {}
    inline_gold: dict[str, str] = {}
    for lineno, row in iter_jsonl(videos_path, validate=_check_video, what="MultiVENT videos"):
        where = f"{videos_path}:{lineno}"
        vid = str(row["video_id"])
        if vid in videos:
            raise ValueError(f"{where}: duplicate video_id {vid!r}")
        frames = tuple(_frame_path(root, f, where) for f in row["images"])
        if check_frames:
            for frame in frames:
                if not os.path.isfile(frame):
                    raise FileNotFoundError(f"{where}: video {vid!r} frame file missing: {frame}")
        videos[vid] = Video(
            vid,
            frames,
            row["ocr"],
            row["asr"],
            row["description"],
            str(row.get("title") or ""),
        )
        if "query" in row:
            query = _query(row)
            if query.query_id in queries:
                raise ValueError(f"{where}: duplicate query_id {query.query_id!r}")
            queries[query.query_id] = query
            inline_gold[query.query_id] = vid

    queries_path = root / f"{split}_queries.jsonl"
    if queries_path.is_file():
        for lineno, row in iter_jsonl(queries_path, validate=_check_query, what="queries"):
            query = _query(row)
            if query.query_id in queries:
                raise ValueError(f"{queries_path}:{lineno}: duplicate query_id {query.query_id!r}")
            queries[query.query_id] = query

    qrels = _load_qrels(root / f"{split}_qrels.jsonl", videos, queries, inline_gold)
    unjudged = sorted(set(queries) - set(qrels))
    if unjudged:
        raise ValueError(
            f"{split}: {len(unjudged)} queries have no relevant video (e.g. {unjudged[:3]}); "
            f"add them to {split}_qrels.jsonl"
        )
    empty = {m: sum(not v.text(m).strip() for v in videos.values()) for m in _TEXT_FIELDS}
    return MultiventSplit(videos, queries, qrels, empty)


def _load_qrels(
    path: Path,
    videos: Mapping[str, Video],
    queries: Mapping[str, Query],
    inline_gold: Mapping[str, str],
) -> dict[str, dict[str, int]]:
    if not path.is_file():
        return {qid: {vid: 1} for qid, vid in inline_gold.items()}
    qrels: dict[str, dict[str, int]] = {}
    required = ("query_id", "doc_id", "relevance")
    for lineno, row in iter_jsonl(path, required_keys=required, what="MultiVENT qrels"):
        qid, vid = str(row["query_id"]), str(row["doc_id"])
        where = f"{path}:{lineno}"
        if qid not in queries:
            raise ValueError(f"{where}: query_id {qid!r} is not a query of this split")
        if vid not in videos:
            raise ValueError(f"{where}: doc_id {vid!r} is not a video of this split")
        try:
            qrels.setdefault(qid, {})[vid] = int(row["relevance"])
        except (TypeError, ValueError):
            raise ValueError(f"{where}: relevance {row['relevance']!r} is not an integer") from None
    return qrels


def write_multivent(
    root: str | os.PathLike,
    split: str,
    videos: Iterable[Mapping[str, Any]],
    qrels: Mapping[str, Mapping[str, int]] | None = None,
) -> int:
    """Writes `<split>.jsonl` (and `<split>_qrels.jsonl` when given); returns the video count."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    n = write_jsonl(root / f"{split}.jsonl", videos)
    if qrels is not None:
        rows = [
            {"query_id": q, "doc_id": d, "relevance": int(r)}
            for q, judged in qrels.items()
            for d, r in judged.items()
        ]
        write_jsonl(root / f"{split}_qrels.jsonl", rows)
    return n
