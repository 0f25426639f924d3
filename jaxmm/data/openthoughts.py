"""OpenThoughts curation (arXiv 2506.04178): the pure stages and the sharegpt output format.

Deterministic functions of records (no model calls): `mix` (keep the best sources per domain),
`select` (keep the top fraction per domain by a model-given filter score), `exact_dedup`
(exact question match, never for code), `to_sharegpt` (every teacher answer becomes one row,
no answer filtering) and `read_sharegpt` (the loader an SFT task uses). The model stages and
the driver are in `jaxmm.pipelines.openthoughts`.

Output row (one line of the final JSONL, `read_sharegpt` checks it):

    {"id": "q003-a1", "question_id": "q003", "domain": "code", "source": "gen-code-lists",
     "difficulty": 7,                      # the LLM rating, else the source's own, else null
     "conversations": [{"from": "human", "value": "<question>"},
                       {"from": "gpt", "value": "<think>\\n...\\n</think>\\n\\n<answer>"}]}
"""

from __future__ import annotations

import math
import os
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from jaxmm.io.jsonl import iter_jsonl

Record = dict[str, Any]
QUESTION_FIELDS = ("id", "domain", "source", "question")
NO_DEDUP_DOMAINS = ("code",)  # the paper deduplicates math/science questions, never code
_THINK = re.compile(r"<think>(.*?)</think>", re.DOTALL)


def validate_question(record: Mapping[str, Any]) -> None:
    """Raises ValueError naming the bad field of a question record."""
    for field in ("domain", "source", "question"):
        value = record.get(field)
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"field {field!r} must be a non-empty string, got {value!r}")
    difficulty = record.get("difficulty")
    if difficulty is not None and (
        not isinstance(difficulty, int) or isinstance(difficulty, bool) or not 1 <= difficulty <= 10
    ):
        raise ValueError(f"field 'difficulty' must be an integer 1-10 or null, got {difficulty!r}")


def mix(
    records: Sequence[Record], ranking: Mapping[str, Sequence[str]], sources_per_domain: int
) -> tuple[list[Record], dict[str, Any]]:
    """Keeps records whose source is among the first `sources_per_domain` of `ranking[domain]`
    (best first); a domain missing from `ranking` keeps all its sources. Input order kept."""
    if sources_per_domain < 1:
        raise ValueError(f"sources_per_domain must be >= 1, got {sources_per_domain}")
    keep = {d: set(srcs[:sources_per_domain]) for d, srcs in ranking.items()}
    kept = [r for r in records if r["domain"] not in keep or r["source"] in keep[r["domain"]]]
    metrics = {
        "in": len(records),
        "out": len(kept),
        "sources_kept": sorted({f"{r['domain']}/{r['source']}" for r in kept}),
        "sources_dropped": sorted(
            {f"{r['domain']}/{r['source']}" for r in records}
            - {f"{r['domain']}/{r['source']}" for r in kept}
        ),
        "out_by_domain": dict(sorted(Counter(r["domain"] for r in kept).items())),
    }
    return kept, metrics


def select(scored: Sequence[Record], keep_fraction: float) -> tuple[list[Record], dict[str, Any]]:
    """Per domain, keeps the ceil(keep_fraction * n) records with the highest `filter_score`
    (an unscored record, score None, ranks last; ties keep input order). Input order kept."""
    if not 0 < keep_fraction <= 1:
        raise ValueError(f"keep_fraction must be in (0, 1], got {keep_fraction}")
    by_domain: dict[str, list[int]] = {}
    for i, r in enumerate(scored):
        by_domain.setdefault(r["domain"], []).append(i)
    keep: set[int] = set()
    for idx in by_domain.values():
        ranked = sorted(
            idx,
            key=lambda i: (scored[i]["filter_score"] is None, -(scored[i]["filter_score"] or 0), i),
        )
        keep.update(ranked[: math.ceil(keep_fraction * len(idx))])
    kept = [r for i, r in enumerate(scored) if i in keep]
    metrics = {
        "in": len(scored),
        "out": len(kept),
        "keep_fraction": keep_fraction,
        "in_by_domain": {d: len(idx) for d, idx in sorted(by_domain.items())},
        "out_by_domain": dict(sorted(Counter(r["domain"] for r in kept).items())),
        "unscored": sum(r["filter_score"] is None for r in scored),
        "difficulty_histogram": difficulty_histogram(kept),
    }
    return kept, metrics


def _normalise(question: str) -> str:
    return " ".join(question.split())


def exact_dedup(
    records: Sequence[Record], no_dedup_domains: Sequence[str] = NO_DEDUP_DOMAINS
) -> tuple[list[Record], dict[str, Any]]:
    """Drops every later record whose question equals an earlier one of the same domain
    (exact text after collapsing whitespace); domains in `no_dedup_domains` are kept whole."""
    seen: set[tuple[str, str]] = set()
    kept: list[Record] = []
    removed: Counter[str] = Counter()
    duplicates_kept: Counter[str] = Counter()
    for r in records:
        key = (r["domain"], _normalise(r["question"]))
        if key in seen:
            if r["domain"] in no_dedup_domains:
                duplicates_kept[r["domain"]] += 1
            else:
                removed[r["domain"]] += 1
                continue
        seen.add(key)
        kept.append(r)
    metrics = {
        "in": len(records),
        "out": len(kept),
        "removed": sum(removed.values()),
        "removed_by_domain": dict(sorted(removed.items())),
        "duplicates_kept_by_domain": dict(sorted(duplicates_kept.items())),
    }
    return kept, metrics


def difficulty_histogram(records: Sequence[Record]) -> dict[str, int]:
    """{"1": count, ..., "10": count, "none": count} over the records' `difficulty`."""
    counts = Counter(r.get("difficulty") for r in records)
    hist = {str(d): counts.get(d, 0) for d in range(1, 11)}
    hist["none"] = counts.get(None, 0)
    return hist


def assistant_turn(response: str) -> tuple[str, bool]:
    """(the assistant value with a `<think>...</think>` trace, whether the model wrote the tags).

    A response with its own `<think>...</think>` is kept (stripped). Otherwise the whole
    response is the trace and its last non-empty line is repeated after it as the answer."""
    text = response.strip()
    match = _THINK.search(text)
    if match:
        answer = text[match.end() :].strip()
        return f"<think>\n{match.group(1).strip()}\n</think>\n\n{answer}", True
    lines = [line for line in text.splitlines() if line.strip()]
    answer = lines[-1].strip() if lines else ""
    return f"<think>\n{text}\n</think>\n\n{answer}", False


def to_sharegpt(answered: Sequence[Record]) -> tuple[list[Record], dict[str, Any]]:
    """One row per (question, answer), every answer kept (the paper filters no answers)."""
    rows: list[Record] = []
    tagged = 0
    for r in answered:
        for k, response in enumerate(r["answers"]):
            value, model_tags = assistant_turn(response)
            tagged += model_tags
            rows.append(
                {
                    "id": f"{r['id']}-a{k}",
                    "question_id": r["id"],
                    "domain": r["domain"],
                    "source": r["source"],
                    "difficulty": r.get("difficulty"),
                    "conversations": [
                        {"from": "human", "value": r["question"]},
                        {"from": "gpt", "value": value},
                    ],
                }
            )
    lengths = [len(row["conversations"][1]["value"]) for row in rows]
    metrics = {
        "in": len(answered),
        "out": len(rows),
        "answers_per_question": len(rows) / max(len(answered), 1),
        "mean_response_chars": sum(lengths) / max(len(lengths), 1),
        "responses_with_model_think_tags": tagged,
        "out_by_domain": dict(sorted(Counter(row["domain"] for row in rows).items())),
        "difficulty_histogram": difficulty_histogram(rows),
    }
    return rows, metrics


def validate_sharegpt(row: Mapping[str, Any]) -> None:
    """Raises ValueError naming the bad field of an output row."""
    for field in ("domain", "source"):
        if not isinstance(row.get(field), str):
            raise ValueError(f"field {field!r} must be a string")
    if "difficulty" not in row:
        raise ValueError("record lacks field 'difficulty' (null when unknown)")
    conv = row.get("conversations")
    if not isinstance(conv, list) or len(conv) < 2:
        raise ValueError("field 'conversations' must be a list of at least 2 turns")
    for i, turn in enumerate(conv):
        if not isinstance(turn, dict) or turn.get("from") not in ("system", "human", "gpt"):
            raise ValueError(f"conversations[{i}].from must be 'system', 'human' or 'gpt'")
        if not isinstance(turn.get("value"), str):
            raise ValueError(f"conversations[{i}].value must be a string")
    if conv[-1]["from"] != "gpt" or not _THINK.match(conv[-1]["value"]):
        raise ValueError("the last turn must be from 'gpt' and start with <think>...</think>")


def read_sharegpt(path: str | os.PathLike) -> list[Record]:
    """The rows of an OpenThoughts output file, each checked (errors name file:line, field)."""
    return [
        row
        for _, row in iter_jsonl(
            path,
            required_keys=("conversations",),
            validate=validate_sharegpt,
            what="sharegpt file",
        )
    ]
