"""TREC run and qrels files (the formats trec_eval / pytrec_eval / ranx read).

run:   `qid Q0 docid rank score tag`, one line per retrieved doc, ranked by score.
qrels: `qid 0 docid relevance`.
In memory both are `{qid: {docid: value}}` (the pytrec_eval convention).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

Run = dict[str, dict[str, float]]
Qrels = dict[str, dict[str, int]]


def _check_id(kind: str, value: str) -> None:
    if not value or any(c.isspace() for c in value):
        raise ValueError(f"{kind} {value!r} must be non-empty and contain no whitespace")


def write_run(path: str | os.PathLike, run: Mapping[str, Mapping[str, float]], tag: str = "jaxmm"):
    """Writes a run; docs of each query are ranked by descending score (ties: docid)."""
    _check_id("tag", tag)
    lines = []
    for qid in sorted(run):
        _check_id("query id", qid)
        ranked = sorted(run[qid].items(), key=lambda kv: (-kv[1], kv[0]))
        for rank, (docid, score) in enumerate(ranked, start=1):
            _check_id("doc id", docid)
            lines.append(f"{qid} Q0 {docid} {rank} {float(score):.8g} {tag}\n")
    Path(path).write_text("".join(lines))


def read_run(path: str | os.PathLike) -> Run:
    run: Run = {}
    for lineno, fields in _rows(path, 6):
        qid, _, docid, _, score, _ = fields
        try:
            run.setdefault(qid, {})[docid] = float(score)
        except ValueError:
            raise ValueError(f"{path}:{lineno}: score {score!r} is not a number") from None
    return run


def write_qrels(path: str | os.PathLike, qrels: Mapping[str, Mapping[str, int]]) -> None:
    lines = []
    for qid in sorted(qrels):
        _check_id("query id", qid)
        for docid, rel in sorted(qrels[qid].items()):
            _check_id("doc id", docid)
            lines.append(f"{qid} 0 {docid} {int(rel)}\n")
    Path(path).write_text("".join(lines))


def read_qrels(path: str | os.PathLike) -> Qrels:
    qrels: Qrels = {}
    for lineno, fields in _rows(path, 4):
        qid, _, docid, rel = fields
        try:
            qrels.setdefault(qid, {})[docid] = int(rel)
        except ValueError:
            raise ValueError(f"{path}:{lineno}: relevance {rel!r} is not an integer") from None
    return qrels


def _rows(path: str | os.PathLike, n_fields: int):
    with open(path) as f:
        for lineno, line in enumerate(f, start=1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != n_fields:
                raise ValueError(
                    f"{path}:{lineno}: expected {n_fields} whitespace-separated fields, "
                    f"got {len(fields)}: {line.strip()!r}"
                )
            yield lineno, fields
