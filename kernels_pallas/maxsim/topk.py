"""Top-k MaxSim search without materialising all scores: the fused kernel and the chunked scan.

Fused (Pallas, k <= MAX_FUSED_K): the documents are cut into `num_splits` contiguous ranges
(schedule "blocked") or walked grid-stride by `num_splits` programs ("persistent"); each
program keeps a running top-k per query on chip, and the candidates are merged by (score,
lower doc id). Scan (reference path, or large k): a `lax.scan` over chunks of `chunk_docs`
documents merging each chunk's scores into a running top-k, so only [n_q, chunk_docs] scores
exist at a time.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from kernels_pallas.maxsim import pallas_gpu, pallas_persistent, reference
from kernels_pallas.maxsim.padding import (
    KernelConfig,
    next_pow2,
    pad_axis,
    pad_docs,
    pad_docs_2d,
    pad_queries,
    scan_programs,
)

MAX_FUSED_K = 128  # the fused kernel keeps next_pow2(k) candidates per query in registers


def fused_topk(
    queries, q_mask, docs, side, valid, num_modalities, k, normalize, splits, cfg: KernelConfig
):
    """Pads to the fused kernel's contract (no copy when the corpus is already aligned, as
    MultiVectorIndex makes it), runs it and merges the per-split candidates."""
    n_q = queries.shape[0]
    w = reference.query_weights(q_mask, normalize)
    q, w = pad_queries(queries, w, cfg.block_q)
    if cfg.schedule == "persistent":  # `splits` = programs along the document axis
        tokens, mod, doc_len, tile = pad_docs_2d(docs, side, cfg)
        n_d_p = tokens.shape[0] // doc_len
        n_groups = tokens.shape[0] // max(tile, doc_len)
        programs = scan_programs(q.shape[0] // cfg.block_q, n_groups, splits or cfg.num_programs)
        cand_s, cand_i = pallas_persistent.maxsim_persistent_topk_pallas(
            q, w, tokens, mod, pad_axis(valid.astype(jnp.int8), 0, n_d_p), num_modalities,
            doc_len=doc_len, tile=tile, num_programs=programs,
            topk_width=max(next_pow2(k), 2), block_q=cfg.block_q,
            num_warps=cfg.num_warps, num_stages=cfg.num_stages, interpret=cfg.interpret,
        )  # fmt: skip
        return merge_candidates(cand_s[:n_q], cand_i[:n_q], k)
    d, mod, block_t = pad_docs(docs, side, cfg)
    n_q_p, n_d_p = q.shape[0], d.shape[0]
    v = pad_axis(valid.astype(jnp.int8), 0, n_d_p)
    if splits is None:  # ~1024 programs in flight over the whole grid
        splits = max(1, min(n_d_p // cfg.block_d, 1024 // (n_q_p // cfg.block_q)))
    cand_s, cand_i = pallas_gpu.maxsim_topk_pallas(
        q, w, d, mod, v, num_modalities,
        topk_width=max(next_pow2(k), 2), num_splits=splits,
        block_q=cfg.block_q, block_d=cfg.block_d, block_t=block_t,
        num_warps=cfg.num_warps, num_stages=cfg.num_stages, interpret=cfg.interpret,
    )  # fmt: skip
    return merge_candidates(cand_s[:n_q], cand_i[:n_q], k)


def merge_candidates(cand_s: jax.Array, cand_i: jax.Array, k: int):
    """The best k of the programs' candidates [n_q, C] (score, doc id), exact ties to the
    lower doc id, as `lax.top_k` over all scores gives: the candidates' order follows which
    program scanned a document (grid-stride in the persistent schedule), not its id."""
    neg_s, ids = jax.lax.sort((-cand_s, cand_i), dimension=1, num_keys=2)
    return -neg_s[:, :k], ids[:, :k]


def scan_topk(
    score: Callable[[jax.Array, jax.Array], jax.Array],
    docs: jax.Array,
    side: jax.Array,
    valid: jax.Array,
    n_q: int,
    k: int,
    chunk_docs: int,
):
    """Running top-k over chunks of `chunk_docs` docs; `score(docs_chunk, side_chunk)` gives
    [n_q, chunk] scores. Returns (scores, doc_index) [n_q, k], best first."""
    n_d = docs.shape[0]
    chunk = min(chunk_docs, n_d)
    n_chunks = -(-n_d // chunk)
    n_d_p = n_chunks * chunk
    valid = pad_axis(valid, 0, n_d_p, False).reshape(n_chunks, chunk)
    docs_c = pad_axis(docs, 0, n_d_p).reshape(n_chunks, chunk, *docs.shape[1:])
    side_c = pad_axis(side, 0, n_d_p).reshape(n_chunks, chunk, -1)

    def step(carry, xs):
        top_s, top_i = carry
        c, d, s, v = xs
        chunk_scores = jnp.where(v[None, :], score(d, s), reference.NEG_INF)
        chunk_ids = c * chunk + jnp.arange(chunk, dtype=jnp.int32)
        cand_s = jnp.concatenate([top_s, chunk_scores], axis=1)
        cand_i = jnp.concatenate([top_i, jnp.broadcast_to(chunk_ids, (n_q, chunk))], axis=1)
        new_s, pos = jax.lax.top_k(cand_s, k)
        return (new_s, jnp.take_along_axis(cand_i, pos, axis=1)), None

    init = (jnp.full((n_q, k), reference.NEG_INF, jnp.float32), jnp.full((n_q, k), -1, jnp.int32))
    xs = (jnp.arange(n_chunks, dtype=jnp.int32), docs_c, side_c, valid)
    (top_s, top_i), _ = jax.lax.scan(step, init, xs)
    return top_s, top_i
