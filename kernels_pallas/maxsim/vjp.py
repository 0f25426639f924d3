"""MaxSim gradients for the padded kernel, so it can be used in training.

A custom_vjp whose forward pass also records the argmax document token of every (query, doc,
modality, query token); the backward pass routes the cotangent only through those tokens
(gather for dQ, scatter-add for dD). This is exactly the derivative of max away from ties.
The backward is plain XLA.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from kernels_pallas.maxsim import pallas_gpu, pallas_persistent
from kernels_pallas.maxsim.padding import (
    KernelConfig,
    pad_docs,
    pad_docs_2d,
    pad_queries,
    scan_programs,
)


def scan_call(q, w, docs, d_modality, num_modalities, track_argmax, cfg):
    """The scan kernel of `cfg.schedule` on padded queries; pads the documents itself.
    Returns the kernel's [M, n_q_p, n_d_p] scores (+ [M, n_q_p, q_len_p, n_d_p] argmax)."""
    kw = dict(
        block_q=cfg.block_q, num_warps=cfg.num_warps, num_stages=cfg.num_stages,
        interpret=cfg.interpret, track_argmax=track_argmax,
    )  # fmt: skip
    if cfg.schedule == "persistent":
        tokens, side, doc_len, tile = pad_docs_2d(docs, d_modality, cfg)
        n_groups = tokens.shape[0] // max(tile, doc_len)
        programs = scan_programs(q.shape[0] // cfg.block_q, n_groups, cfg.num_programs)
        return pallas_persistent.maxsim_persistent_pallas(
            q, w, tokens, side, num_modalities,
            doc_len=doc_len, tile=tile, num_programs=programs, **kw,
        )  # fmt: skip
    d, mod, block_t = pad_docs(docs, d_modality, cfg)
    return pallas_gpu.maxsim_padded_pallas(
        q, w, d, mod, num_modalities, block_d=cfg.block_d, block_t=block_t, **kw
    )


def aligned_call(queries, q_weights, docs, d_modality, num_modalities, track_argmax, cfg):
    """Pads to the kernel contract, runs it, unpads. Returns [n_q, n_d, M] (+ argmax
    [n_q, n_d, M, q_len] int32, -1 where the query token has weight 0)."""
    n_q, q_len, _ = queries.shape
    n_d = docs.shape[0]
    q, w = pad_queries(queries, q_weights, cfg.block_q)
    out = scan_call(q, w, docs, d_modality, num_modalities, track_argmax, cfg)
    if not track_argmax:
        return jnp.transpose(out, (1, 2, 0))[:n_q, :n_d]
    scores, arg = out
    scores = jnp.transpose(scores, (1, 2, 0))[:n_q, :n_d]
    arg = jnp.transpose(arg, (1, 3, 0, 2))[:n_q, :n_d, :, :q_len]
    # Padding query tokens (weight 0) have no argmax, as in the reference.
    arg = jnp.where(q_weights[:, None, None, :] > 0, arg, -1)
    return scores, arg


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5))
def modality_scores(queries, q_weights, docs, d_modality, num_modalities, cfg: KernelConfig):
    """Differentiable per-modality scores [n_q, n_d, M] from the padded kernel."""
    return aligned_call(queries, q_weights, docs, d_modality, num_modalities, False, cfg)


def _modality_scores_fwd(queries, q_weights, docs, d_modality, num_modalities, cfg):
    scores, arg = aligned_call(queries, q_weights, docs, d_modality, num_modalities, True, cfg)
    return scores, (queries, q_weights, docs, d_modality, arg)


def _argmax_vjp(res, g):
    """Cotangents for queries and docs through the argmax tokens only."""
    queries, q_weights, docs, d_modality, arg = res
    n_d, d_len, dim = docs.shape
    coeff = g[..., None] * q_weights[:, None, None, :] * (arg >= 0)  # [Q, N, M, I]
    flat = jnp.arange(n_d)[None, :, None, None] * d_len + jnp.maximum(arg, 0)
    docs_flat = docs.reshape(n_d * d_len, dim).astype(jnp.float32)
    picked = docs_flat[flat]  # [Q, N, M, I, dim]
    d_queries = jnp.einsum("qnmi,qnmid->qid", coeff, picked).astype(queries.dtype)
    contrib = coeff[..., None] * queries.astype(jnp.float32)[:, None, None, :, :]
    d_docs = (
        jnp.zeros((n_d * d_len, dim), jnp.float32)
        .at[flat.reshape(-1)]
        .add(contrib.reshape(-1, dim))
    )
    d_docs = d_docs.reshape(docs.shape).astype(docs.dtype)
    return d_queries, None, d_docs, None


def _modality_scores_bwd(num_modalities, cfg, res, g):
    return _argmax_vjp(res, g)


modality_scores.defvjp(_modality_scores_fwd, _modality_scores_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5))
def modality_scores_and_argmax(queries, q_weights, docs, d_modality, num_modalities, cfg):
    """(scores [n_q, n_d, M], argmax [n_q, n_d, M, q_len]); differentiable in the scores."""
    return aligned_call(queries, q_weights, docs, d_modality, num_modalities, True, cfg)


def _with_argmax_fwd(queries, q_weights, docs, d_modality, num_modalities, cfg):
    scores, arg = aligned_call(queries, q_weights, docs, d_modality, num_modalities, True, cfg)
    return (scores, arg), (queries, q_weights, docs, d_modality, arg)


def _with_argmax_bwd(num_modalities, cfg, res, g):
    return _argmax_vjp(res, g[0])


modality_scores_and_argmax.defvjp(_with_argmax_fwd, _with_argmax_bwd)
