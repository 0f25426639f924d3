"""Ranking metrics with trec_eval semantics: nDCG@k, Recall@k, MRR@k, MAP.

Conventions (chosen to match trec_eval / pytrec_eval, which the tests compare against):
- a run is ranked by descending score, ties broken by descending doc id (trec_eval's order);
- a doc is relevant when its qrels relevance is > 0; nDCG uses the relevance value as the gain
  (linear gain, log2(rank + 1) discount) and the ideal ranking of all judged docs;
- MRR@k is the reciprocal rank of the first relevant doc within the top k (0 if none);
- MAP is uncut average precision over the whole run.
Aggregates (`evaluate`) average over the queries with at least one relevant doc in the qrels;
a query missing from the run scores 0 (like `trec_eval -c`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping

Run = Mapping[str, Mapping[str, float]]
Qrels = Mapping[str, Mapping[str, int]]

_METRIC = re.compile(r"^(ndcg|recall|mrr)@(\d+)$|^map$")


def rank(scores: Mapping[str, float]) -> list[str]:
    """Doc ids by descending score, ties by descending doc id (trec_eval)."""
    return [d for d, _ in sorted(scores.items(), key=lambda kv: (kv[1], kv[0]), reverse=True)]


def ndcg_at_k(ranking: list[str], judged: Mapping[str, int], k: int) -> float:
    dcg = sum(
        judged.get(d, 0) / math.log2(r + 2)
        for r, d in enumerate(ranking[:k])
        if judged.get(d, 0) > 0
    )
    ideal = sorted((g for g in judged.values() if g > 0), reverse=True)[:k]
    idcg = sum(g / math.log2(r + 2) for r, g in enumerate(ideal))
    return dcg / idcg if idcg > 0 else 0.0


def recall_at_k(ranking: list[str], judged: Mapping[str, int], k: int) -> float:
    relevant = {d for d, g in judged.items() if g > 0}
    if not relevant:
        return 0.0
    return len(relevant.intersection(ranking[:k])) / len(relevant)


def mrr_at_k(ranking: list[str], judged: Mapping[str, int], k: int) -> float:
    for r, d in enumerate(ranking[:k]):
        if judged.get(d, 0) > 0:
            return 1.0 / (r + 1)
    return 0.0


def average_precision(ranking: list[str], judged: Mapping[str, int]) -> float:
    n_relevant = sum(g > 0 for g in judged.values())
    if n_relevant == 0:
        return 0.0
    hits, total = 0, 0.0
    for r, d in enumerate(ranking):
        if judged.get(d, 0) > 0:
            hits += 1
            total += hits / (r + 1)
    return total / n_relevant


def parse_metric(name: str) -> tuple[str, int | None]:
    match = _METRIC.match(name)
    if not match:
        raise ValueError(f"unknown metric {name!r}; use ndcg@k, recall@k, mrr@k or map")
    return (match.group(1), int(match.group(2))) if match.group(1) else ("map", None)


def per_query(run: Run, qrels: Qrels, metrics: Iterable[str]) -> dict[str, dict[str, float]]:
    """{metric: {qid: value}} for every query in the qrels that has a relevant doc."""
    parsed = {m: parse_metric(m) for m in metrics}
    out: dict[str, dict[str, float]] = {m: {} for m in parsed}
    for qid, judged in qrels.items():
        if not any(g > 0 for g in judged.values()):
            continue
        ranking = rank(run.get(qid, {}))
        for name, (kind, k) in parsed.items():
            if kind == "ndcg":
                value = ndcg_at_k(ranking, judged, k)
            elif kind == "recall":
                value = recall_at_k(ranking, judged, k)
            elif kind == "mrr":
                value = mrr_at_k(ranking, judged, k)
            else:
                value = average_precision(ranking, judged)
            out[name][qid] = value
    return out


def evaluate(
    run: Run, qrels: Qrels, metrics: Iterable[str] = ("ndcg@10", "recall@100", "mrr@10", "map")
) -> dict[str, float]:
    """Mean of each metric over the judged queries (missing run -> 0)."""
    table = per_query(run, qrels, metrics)
    return {m: (sum(v.values()) / len(v) if v else 0.0) for m, v in table.items()}
