"""CLaMR evaluation: encode a split's videos into the multi-vector index, search, score.

Metrics (trec_eval conventions, `jaxmm.eval.retrieval_metrics`): nDCG@10, R@1/5/10 overall
and per query type (`ndcg@10/ocr`, ...), and modality-selection accuracy: for each query, the
gold video's argmax token of every query token (`maxsim_modality(..., return_argmax=True)`:
per modality, then the best of them) votes with its modality id; the majority modality must
equal the query type (`modality_acc`). `modality_pick_acc` is the simpler argmax_m s_m(q, d).
"""

from __future__ import annotations

import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxmm.data.multivent import MODALITIES
from jaxmm.eval.retrieval_metrics import evaluate as trec_evaluate
from jaxmm.models.clamr_inputs import NUM_MODALITIES
from jaxmm.retrieval import MultiVectorIndex, write_run
from kernels_pallas.maxsim import maxsim_modality

METRICS = ("ndcg@10", "recall@1", "recall@5", "recall@10")


def _batched(fn, arrays: dict[str, np.ndarray], keys: tuple[str, ...], batch: int):
    """Runs `fn(*arrays[keys])` over fixed-size batches (the last one padded, so it compiles
    once) and concatenates the outputs."""
    n = len(arrays[keys[0]])
    outs: list[Any] = []
    for start in range(0, n, batch):
        chunk = [arrays[k][start : start + batch] for k in keys]
        pad = batch - len(chunk[0])
        chunk = [np.concatenate([c, np.repeat(c[:1], pad, 0)]) if pad else c for c in chunk]
        res = jax.device_get(fn(*chunk))
        outs.append(jax.tree.map(lambda x, p=pad: x[: len(x) - p] if p else x, res))
    return jax.tree.map(lambda *xs: np.concatenate(xs), *outs)


def encode_split(task, params, split_name: str):
    """(doc ids, doc emb [n_d, L, dim], doc modality [n_d, L], query ids, query arrays,
    query emb [n_q, Lq, dim], query mask) for one split."""
    split = task.split(split_name)
    encode_q, encode_d = task.encoders
    batch = task.config.data.eval_batch
    vids = list(split.videos)
    docs = task.video_arrays(split, vids)
    d_emb, d_mod = _batched(
        lambda *a: encode_d(params, *a), docs, ("d_ids", "d_mask", "d_mod", "frames"), batch
    )
    qids = list(split.queries)
    queries = task.query_arrays(split, qids)
    q_emb, q_keep = _batched(lambda *a: encode_q(params, *a), queries, ("q_ids", "q_mask"), batch)
    return split, vids, d_emb, d_mod, qids, queries, q_emb, q_keep


def build_index(doc_ids, d_emb, d_mod, *, modality_max: bool, only: int | None = None):
    """Packed index of the kept tokens; `only` keeps one modality (single-modality rows)."""
    keep = d_mod > 0 if only is None else d_mod == only
    per_doc = [d_emb[i][keep[i]] for i in range(len(doc_ids))]
    per_mod = [d_mod[i][keep[i]] for i in range(len(doc_ids))] if modality_max else None
    return MultiVectorIndex.build(
        per_doc, doc_ids, per_mod, num_modalities=NUM_MODALITIES if modality_max else None
    )


def modality_accuracy(q_emb, q_keep, gold_emb, gold_mod, gold_types):
    """(token-majority accuracy, argmax_m accuracy) of the gold videos, see module doc."""
    m = NUM_MODALITIES

    def one(q, qm, d, dm):
        per_mod, pos = maxsim_modality(q[None], qm[None], d[None], dm[None], m, return_argmax=True)
        pos = pos[0, 0]  # [M, Lq]
        sims = jnp.einsum("mqd,qd->mq", d[jnp.maximum(pos, 0)], q)  # sim of each argmax token
        sims = jnp.where(pos >= 0, sims, -jnp.inf)
        best = jnp.argmax(sims, axis=0) + 1  # modality id per query token
        votes = jnp.zeros(m + 1).at[jnp.where(qm, best, 0)].add(qm.astype(jnp.float32))
        return jnp.argmax(votes[1:]) + 1, jnp.argmax(per_mod[0, 0]) + 1

    majority, pick = jax.jit(jax.vmap(one))(q_emb, q_keep, gold_emb, gold_mod)
    gold_types = np.asarray(gold_types)
    return float(np.mean(np.asarray(majority) == gold_types)), float(
        np.mean(np.asarray(pick) == gold_types)
    )


def search_and_score(
    split, qids: list[str], q_emb, q_keep, index: MultiVectorIndex, *, run_out: str | None = None
) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """Top-100 search of the encoded queries; (metrics overall and per query type, run)."""
    k = min(100, index.num_docs)
    mesh = jax.sharding.get_mesh()  # inside the trainer: its mesh (search shards over it)
    scores, ranked = index.search(q_emb, k, q_keep, mesh=None if mesh.empty else mesh)
    run = {q: dict(zip(ranked[i], scores[i].tolist(), strict=True)) for i, q in enumerate(qids)}
    if run_out:
        os.makedirs(os.path.dirname(run_out) or ".", exist_ok=True)
        write_run(run_out, run, tag="jaxmm-clamr")
    metrics = trec_evaluate(run, split.qrels, METRICS)
    for name in MODALITIES:
        typed = {q: split.qrels[q] for q in qids if split.queries[q].query_type == name}
        if typed:
            for key, value in trec_evaluate(run, typed, ("ndcg@10", "recall@1")).items():
                metrics[f"{key}/{name}"] = value
    return metrics, run


def evaluate(
    task,
    params,
    split_name: str = "test",
    *,
    scoring: str | None = None,
    only_modality: int | None = None,
    run_out: str | None = None,
    index_dir: str | None = None,
    encoded=None,
) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """Index the split's videos, search its queries; returns (metrics, run). `scoring`
    defaults to the task's; `only_modality` (1..4) scores one modality's tokens only;
    `encoded` reuses an `encode_split` result (several rows from one model)."""
    split, vids, d_emb, d_mod, qids, queries, q_emb, q_keep = encoded or encode_split(
        task, params, split_name
    )
    scoring = scoring or task.config.loss.scoring
    pooled = d_emb.shape[1] == 1
    modality_max = scoring == "modality_max" and not pooled
    index = build_index(vids, d_emb, d_mod, modality_max=modality_max, only=only_modality)
    if index_dir:
        index.save(index_dir)
    metrics, run = search_and_score(split, qids, q_emb, q_keep, index, run_out=run_out)
    if not pooled:
        row = {v: i for i, v in enumerate(vids)}
        gold = np.array([row[split.gold(q)[0]] for q in qids])
        mod = (
            d_mod[gold]
            if only_modality is None
            else np.where(d_mod[gold] == only_modality, d_mod[gold], 0)
        )
        acc, pick = modality_accuracy(q_emb, q_keep, d_emb[gold], mod, queries["gold_modality"])
        metrics |= {"modality_acc": acc, "modality_pick_acc": pick}
    return metrics, run
