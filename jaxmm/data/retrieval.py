"""BEIR-format retrieval data: corpus.jsonl, queries.jsonl, qrels/<split>.tsv.

corpus.jsonl   {"_id": str, "title": str (optional), "text": str} per line
queries.jsonl  {"_id": str, "text": str} per line
qrels/*.tsv    header `query-id  corpus-id  score`, tab separated
Every bad line is reported as `file:line: what is wrong`.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

from jaxmm.io.jsonl import iter_jsonl, write_jsonl


@dataclass(frozen=True)
class BeirDataset:
    corpus: dict[str, dict[str, str]]  # doc id -> {"title", "text"}
    queries: dict[str, str]  # query id -> text (only queries judged in the split)
    qrels: dict[str, dict[str, int]]  # query id -> {doc id: relevance}

    def doc_text(self, doc_id: str) -> str:
        """Title and body joined the way BEIR's dense baselines do."""
        doc = self.corpus[doc_id]
        return f"{doc['title']} {doc['text']}".strip() if doc["title"] else doc["text"]


def _read_jsonl(path: Path, required: tuple[str, ...]):
    """(line number, row) of a BEIR jsonl file; errors say `file:line: what is wrong`."""

    def has_required(row: dict) -> None:
        missing = [k for k in required if k not in row]
        if missing:
            raise ValueError(f"missing field(s) {missing}")

    return iter_jsonl(path, validate=has_required, what="BEIR file")


def load_corpus(path: str | os.PathLike) -> dict[str, dict[str, str]]:
    corpus: dict[str, dict[str, str]] = {}
    for lineno, row in _read_jsonl(Path(path), ("_id", "text")):
        doc_id = str(row["_id"])
        if doc_id in corpus:
            raise ValueError(f"{path}:{lineno}: duplicate _id {doc_id!r}")
        corpus[doc_id] = {"title": str(row.get("title") or ""), "text": str(row["text"])}
    return corpus


def load_queries(path: str | os.PathLike) -> dict[str, str]:
    return {
        str(row["_id"]): str(row["text"]) for _, row in _read_jsonl(Path(path), ("_id", "text"))
    }


def load_qrels(path: str | os.PathLike) -> dict[str, dict[str, int]]:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"BEIR qrels file missing: {path}")
    qrels: dict[str, dict[str, int]] = {}
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.reader(f, delimiter="\t")
        header = next(reader, None)
        if header is None or [h.strip() for h in header[:3]] != ["query-id", "corpus-id", "score"]:
            raise ValueError(f"{path}:1: expected header 'query-id<TAB>corpus-id<TAB>score'")
        for lineno, row in enumerate(reader, start=2):
            if not row:
                continue
            if len(row) != 3:
                raise ValueError(f"{path}:{lineno}: expected 3 tab-separated fields, got {row}")
            try:
                qrels.setdefault(row[0], {})[row[1]] = int(row[2])
            except ValueError:
                raise ValueError(f"{path}:{lineno}: score {row[2]!r} is not an integer") from None
    return qrels


def load_beir(folder: str | os.PathLike, split: str = "test") -> BeirDataset:
    """Loads a BEIR folder; keeps the queries judged in `split` and checks qrels doc ids."""
    folder = Path(folder)
    corpus = load_corpus(folder / "corpus.jsonl")
    queries = load_queries(folder / "queries.jsonl")
    qrels = load_qrels(folder / "qrels" / f"{split}.tsv")
    missing_q = sorted(set(qrels) - set(queries))
    if missing_q:
        raise ValueError(
            f"{folder}/qrels/{split}.tsv: query ids not in queries.jsonl: {missing_q[:5]}"
        )
    missing_d = sorted({d for judged in qrels.values() for d in judged} - set(corpus))
    if missing_d:
        raise ValueError(
            f"{folder}/qrels/{split}.tsv: doc ids not in corpus.jsonl: {missing_d[:5]}"
        )
    return BeirDataset(corpus, {q: queries[q] for q in qrels}, qrels)


def write_beir(folder: str | os.PathLike, dataset: BeirDataset, split: str = "test") -> Path:
    """Writes a BEIR folder (used to make small test/demo datasets)."""
    folder = Path(folder)
    (folder / "qrels").mkdir(parents=True, exist_ok=True)
    write_jsonl(
        folder / "corpus.jsonl",
        (
            {"_id": i, "title": doc["title"], "text": doc["text"]}
            for i, doc in dataset.corpus.items()
        ),
    )
    write_jsonl(
        folder / "queries.jsonl", ({"_id": qid, "text": t} for qid, t in dataset.queries.items())
    )
    with open(folder / "qrels" / f"{split}.tsv", "w", encoding="utf-8") as f:
        f.write("query-id\tcorpus-id\tscore\n")
        for qid, judged in dataset.qrels.items():
            for doc_id, rel in judged.items():
                f.write(f"{qid}\t{doc_id}\t{rel}\n")
    return folder
