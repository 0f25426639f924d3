"""Pure-jnp twins of the MaxSim kernels: the definition the Pallas kernels are checked against.

These are the "einsum + max" formulation used by ColBERT / ColPali / CLaMR code. They
materialise the [n_q, n_d, q_len, d_len] token-score tensor, so they are only for tests,
CPU fallback and the benchmark baseline.

Semantics shared by every variant (and by the kernels):
  s(q, d) = sum_i w_i * max_j <q_i, d_j>   over valid doc tokens j,
  w_i = q_mask_i (or q_mask_i / #valid query tokens when `normalize=True`).
A query token facing a document (or modality) with no valid tokens contributes 0, and its
argmax token is -1. Scores are accumulated in fp32 whatever the input dtype.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

NEG_INF = float("-inf")


def query_weights(q_mask: jax.Array, normalize: bool) -> jax.Array:
    """Per-query-token weights [n_q, q_len] (fp32): the mask, optionally divided by its count."""
    w = q_mask.astype(jnp.float32)
    if normalize:
        w = w / jnp.maximum(w.sum(-1, keepdims=True), 1.0)
    return w


def token_scores(queries: jax.Array, docs: jax.Array) -> jax.Array:
    """<q_i, d_j>: [n_q, q_len, dim] x [n_d, d_len, dim] -> [n_q, n_d, q_len, d_len]."""
    return jnp.einsum("qid,njd->qnij", queries, docs, preferred_element_type=jnp.float32)


def maxsim(
    queries: jax.Array,
    q_mask: jax.Array,
    docs: jax.Array,
    d_mask: jax.Array,
    normalize: bool = False,
) -> jax.Array:
    """MaxSim scores [n_q, n_d] (fp32) for padded queries and documents."""
    s = token_scores(queries, docs)
    s = jnp.where(d_mask[None, :, None, :].astype(bool), s, NEG_INF)
    tok_max = s.max(-1)
    tok_max = jnp.where(jnp.isneginf(tok_max), 0.0, tok_max)
    return jnp.einsum("qni,qi->qn", tok_max, query_weights(q_mask, normalize))


def maxsim_modality(
    queries: jax.Array,
    q_mask: jax.Array,
    docs: jax.Array,
    d_modality: jax.Array,
    num_modalities: int,
    normalize: bool = False,
    return_argmax: bool = False,
):
    """Per-modality MaxSim [n_q, n_d, M]; `d_modality` [n_d, d_len] holds 0 (pad) or 1..M.

    With `return_argmax`, also the argmax doc token per (query, doc, modality, query token),
    int32 [n_q, n_d, M, q_len], -1 where the modality is empty or the query token is padding.
    The CLaMR score is `scores.max(-1)`.
    """
    s = token_scores(queries, docs)  # [Q, N, I, J]
    w = query_weights(q_mask, normalize)
    scores, args = [], []
    for m in range(1, num_modalities + 1):  # one modality at a time: peak memory of plain MaxSim
        sm = jnp.where((d_modality == m)[None, :, None, :], s, NEG_INF)
        tok_max = sm.max(-1)  # [Q, N, I]
        empty = jnp.isneginf(tok_max)
        scores.append(jnp.einsum("qni,qi->qn", jnp.where(empty, 0.0, tok_max), w))
        if return_argmax:
            arg = jnp.argmax(sm, axis=-1).astype(jnp.int32)
            args.append(jnp.where(empty | ~q_mask.astype(bool)[:, None, :], -1, arg))
    scores = jnp.stack(scores, axis=-1)
    if not return_argmax:
        return scores
    return scores, jnp.stack(args, axis=2)


def segment_ids_from_offsets(doc_offsets: jax.Array, total_tokens: int) -> jax.Array:
    """Doc index of every packed token, from offsets [n_d + 1]."""
    return jnp.searchsorted(doc_offsets, jnp.arange(total_tokens), side="right") - 1


def maxsim_packed(
    queries: jax.Array,
    q_mask: jax.Array,
    doc_tokens: jax.Array,
    doc_offsets: jax.Array,
    normalize: bool = False,
    doc_modality: jax.Array | None = None,
    num_modalities: int | None = None,
) -> jax.Array:
    """MaxSim over packed docs: tokens [T, dim], doc d owns rows offsets[d]:offsets[d+1].

    Returns [n_q, n_d], or [n_q, n_d, M] when `doc_modality` [T] (1..M, 0 = ignore) is given.
    """
    n_d = doc_offsets.shape[0] - 1
    total = doc_tokens.shape[0]
    seg = segment_ids_from_offsets(doc_offsets, total)
    s = jnp.einsum("qid,td->tqi", queries, doc_tokens, preferred_element_type=jnp.float32)
    w = query_weights(q_mask, normalize)
    if doc_modality is None:
        tok_max = jax.ops.segment_max(s, seg, num_segments=n_d)  # [N, Q, I]
        tok_max = jnp.where(jnp.isneginf(tok_max), 0.0, tok_max)
        return jnp.einsum("nqi,qi->qn", tok_max, w)
    outs = []
    for m in range(1, num_modalities + 1):
        sm = jnp.where((doc_modality == m)[:, None, None], s, NEG_INF)
        tok_max = jax.ops.segment_max(sm, seg, num_segments=n_d)
        tok_max = jnp.where(jnp.isneginf(tok_max), 0.0, tok_max)
        outs.append(jnp.einsum("nqi,qi->qn", tok_max, w))
    return jnp.stack(outs, axis=-1)


def maxsim_topk(
    queries: jax.Array,
    q_mask: jax.Array,
    docs: jax.Array,
    d_mask: jax.Array,
    k: int,
    normalize: bool = False,
    doc_valid: jax.Array | None = None,
):
    """Exhaustive top-k: full score matrix, then `lax.top_k` -> (scores, doc_index) [n_q, k]."""
    scores = maxsim(queries, q_mask, docs, d_mask, normalize)
    if doc_valid is not None:
        scores = jnp.where(doc_valid[None, :], scores, NEG_INF)
    return jax.lax.top_k(scores, k)
