"""Public MaxSim ops: validation, padding to the kernel contract, dispatch and gradients.

Dispatch: on GPU the Pallas kernels run; on CPU the pure-jnp reference runs, unless
`interpret=True` asks for the Pallas kernel in interpret mode (how the tests check it).
`impl="reference"` / `impl="pallas"` force a path (`impl="pallas"` without a GPU is only
useful to lower for CUDA via `jax.export`, as the lowering test does).

Gradients (so the kernel can be used in training): a custom_vjp whose forward pass also
records the argmax document token of every (query, doc, modality, query token); the
backward pass routes the cotangent only through those tokens (gather for dQ, scatter-add
for dD). This is exactly the derivative of max away from ties. The backward is plain XLA.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Literal

import jax
import jax.numpy as jnp

from kernels_pallas.maxsim import pallas_gpu, reference

Impl = Literal["auto", "pallas", "reference"]


@dataclasses.dataclass(frozen=True)
class KernelConfig:
    """Static kernel choices (hashable: used as a custom_vjp non-diff argument)."""

    block_q: int = 1
    block_d: int = 8
    block_t: int = 16
    num_warps: int = 4
    num_stages: int = 3
    interpret: bool = False


def _next_pow2(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


def _pad_axis(x: jax.Array, axis: int, size: int, value=0) -> jax.Array:
    if x.shape[axis] == size:
        return x
    pad = [(0, 0)] * x.ndim
    pad[axis] = (0, size - x.shape[axis])
    return jnp.pad(x, pad, constant_values=value)


def _round_up(n: int, m: int) -> int:
    return -(-n // m) * m


def _use_pallas(impl: Impl, interpret: bool) -> bool:
    if impl == "reference":
        return False
    if impl == "pallas" or interpret:
        # No backend check here: impl="pallas" on a CPU host is how the kernels are lowered
        # for CUDA with jax.export (tests/.../test_maxsim_triton_lowering.py); running it on CPU
        # without interpret=True fails inside pallas_call.
        return True
    if impl != "auto":
        raise ValueError(f"impl must be 'auto', 'pallas' or 'reference', got {impl!r}")
    return jax.default_backend() == "gpu"


def _check_inputs(queries, q_mask, docs, doc_side_name, doc_side) -> None:
    if queries.ndim != 3:
        raise ValueError(f"queries must be [n_q, q_len, dim], got shape {queries.shape}")
    if q_mask.shape != queries.shape[:2]:
        raise ValueError(f"q_mask shape {q_mask.shape} != queries[:2] {queries.shape[:2]}")
    if docs.ndim != 3:
        raise ValueError(f"docs must be [n_d, d_len, dim], got shape {docs.shape}")
    if docs.shape[-1] != queries.shape[-1]:
        raise ValueError(
            f"dim mismatch: queries dim {queries.shape[-1]} vs docs dim {docs.shape[-1]}"
        )
    if doc_side.shape != docs.shape[:2]:
        raise ValueError(f"{doc_side_name} shape {doc_side.shape} != docs[:2] {docs.shape[:2]}")


def default_config(n_q: int, q_len: int, interpret: bool = False, **overrides) -> KernelConfig:
    """Block sizes: each program keeps ~128 query-token rows resident.

    One query (memory-bound scan): 1 query x 8 docs per program, 16-token chunks, i.e. a
    [32, 128] fp32 score tile per step, leaving registers for deep load pipelining. Several
    queries: block_q = 128 // q_len queries per program, so each document tile fetched serves
    more FLOPs; the query-block axis is grid axis 0 (CUDA's fastest-varying), so the programs
    sharing a document tile run back to back and re-read it from L2, not HBM.
    These are starting points; `benchmarks/maxsim.py --sweep` times alternatives on a GPU.
    """
    base = KernelConfig(interpret=interpret)
    block_q = max(1, min(8, 128 // max(_next_pow2(q_len), 16)))
    if n_q >= 2 and block_q > 1:
        base = dataclasses.replace(base, block_q=min(block_q, _next_pow2(n_q)), num_warps=8)
    return dataclasses.replace(base, **overrides)


# --------------------------------------------------------------------------- padded kernel


def _aligned_call(queries, q_weights, docs, d_modality, num_modalities, track_argmax, cfg):
    """Pads to the kernel contract, runs it, unpads. Returns [n_q, n_d, M] (+ argmax)."""
    n_q, q_len, dim = queries.shape
    n_d, d_len, _ = docs.shape
    q_len_p = max(_next_pow2(q_len), 16 // cfg.block_q)  # tl.dot needs >= 16 rows
    dim_p = max(_next_pow2(dim), 16)
    block_t = min(cfg.block_t, _next_pow2(d_len))
    n_q_p, n_d_p = _round_up(n_q, cfg.block_q), _round_up(n_d, cfg.block_d)
    d_len_p = _round_up(d_len, block_t)
    q = _pad_axis(_pad_axis(_pad_axis(queries, 1, q_len_p), 2, dim_p), 0, n_q_p)
    w = _pad_axis(_pad_axis(q_weights, 1, q_len_p), 0, n_q_p)
    d = _pad_axis(_pad_axis(_pad_axis(docs, 1, d_len_p), 2, dim_p), 0, n_d_p)
    mod = _pad_axis(_pad_axis(d_modality.astype(jnp.int8), 1, d_len_p), 0, n_d_p)
    out = pallas_gpu.maxsim_padded_pallas(
        q, w, d, mod, num_modalities,
        track_argmax=track_argmax,
        block_q=cfg.block_q, block_d=cfg.block_d, block_t=block_t,
        num_warps=cfg.num_warps, num_stages=cfg.num_stages, interpret=cfg.interpret,
    )  # fmt: skip
    if not track_argmax:
        return jnp.transpose(out, (1, 2, 0))[:n_q, :n_d]
    scores, arg = out
    scores = jnp.transpose(scores, (1, 2, 0))[:n_q, :n_d]
    arg = jnp.transpose(arg, (1, 3, 0, 2))[:n_q, :n_d, :, :q_len]
    # Padding query tokens (weight 0) have no argmax, as in the reference.
    arg = jnp.where(q_weights[:, None, None, :] > 0, arg, -1)
    return scores, arg


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5))
def _modality_scores(queries, q_weights, docs, d_modality, num_modalities, cfg):
    return _aligned_call(queries, q_weights, docs, d_modality, num_modalities, False, cfg)


def _modality_scores_fwd(queries, q_weights, docs, d_modality, num_modalities, cfg):
    scores, arg = _aligned_call(queries, q_weights, docs, d_modality, num_modalities, True, cfg)
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


_modality_scores.defvjp(_modality_scores_fwd, _modality_scores_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5))
def _modality_scores_and_argmax(queries, q_weights, docs, d_modality, num_modalities, cfg):
    return _aligned_call(queries, q_weights, docs, d_modality, num_modalities, True, cfg)


def _with_argmax_fwd(queries, q_weights, docs, d_modality, num_modalities, cfg):
    scores, arg = _aligned_call(queries, q_weights, docs, d_modality, num_modalities, True, cfg)
    return (scores, arg), (queries, q_weights, docs, d_modality, arg)


def _with_argmax_bwd(num_modalities, cfg, res, g):
    return _argmax_vjp(res, g[0])


_modality_scores_and_argmax.defvjp(_with_argmax_fwd, _with_argmax_bwd)


# --------------------------------------------------------------------------- public ops


def maxsim(
    queries: jax.Array,
    q_mask: jax.Array,
    docs: jax.Array,
    d_mask: jax.Array,
    normalize: bool = False,
    *,
    impl: Impl = "auto",
    interpret: bool = False,
    **block_overrides,
) -> jax.Array:
    """MaxSim scores [n_q, n_d] (fp32). queries [n_q, q_len, dim] + q_mask [n_q, q_len];
    docs [n_d, d_len, dim] + d_mask [n_d, d_len]; fp32 or bf16 inputs, fp32 accumulation."""
    _check_inputs(queries, q_mask, docs, "d_mask", d_mask)
    if not _use_pallas(impl, interpret):
        return reference.maxsim(queries, q_mask, docs, d_mask, normalize)
    cfg = default_config(*queries.shape[:2], interpret, **block_overrides)
    w = reference.query_weights(q_mask, normalize)
    return _modality_scores(queries, w, docs, d_mask.astype(jnp.int8), 1, cfg)[..., 0]


def maxsim_modality(
    queries: jax.Array,
    q_mask: jax.Array,
    docs: jax.Array,
    d_modality: jax.Array,
    num_modalities: int,
    normalize: bool = False,
    return_argmax: bool = False,
    *,
    impl: Impl = "auto",
    interpret: bool = False,
    **block_overrides,
):
    """CLaMR modality-max: per-modality scores [n_q, n_d, M] (score = `.max(-1)`).

    d_modality [n_d, d_len] int: 0 = padding, 1..M = modality. With `return_argmax`, also
    int32 [n_q, n_d, M, q_len] argmax doc-token positions (-1 = none), e.g. for CLaMR's
    modality-selection accuracy.
    """
    _check_inputs(queries, q_mask, docs, "d_modality", d_modality)
    if not jnp.issubdtype(d_modality.dtype, jnp.integer):
        raise ValueError(f"d_modality must be an integer array, got {d_modality.dtype}")
    if not 1 <= num_modalities <= 127:
        raise ValueError(f"num_modalities must be in [1, 127] (int8 ids), got {num_modalities}")
    if not _use_pallas(impl, interpret):
        return reference.maxsim_modality(
            queries, q_mask, docs, d_modality, num_modalities, normalize, return_argmax
        )
    cfg = default_config(*queries.shape[:2], interpret, **block_overrides)
    w = reference.query_weights(q_mask, normalize)
    fn = _modality_scores_and_argmax if return_argmax else _modality_scores
    return fn(queries, w, docs, d_modality.astype(jnp.int8), num_modalities, cfg)


def maxsim_packed(
    queries: jax.Array,
    q_mask: jax.Array,
    doc_tokens: jax.Array,
    doc_offsets: jax.Array,
    normalize: bool = False,
    doc_modality: jax.Array | None = None,
    num_modalities: int | None = None,
    *,
    impl: Impl = "auto",
    interpret: bool = False,
    block_q: int = 1,
    block_d: int = 8,
    block_t: int = 32,
) -> jax.Array:
    """MaxSim over variable-length packed documents (inference only, no gradient).

    doc_tokens [T, dim]; doc d owns rows doc_offsets[d]:doc_offsets[d+1] (offsets [n_d+1],
    non-decreasing, offsets[-1] <= T). Returns [n_q, n_d], or [n_q, n_d, M] with
    `doc_modality` [T] (0 = ignore, 1..M).
    """
    if doc_tokens.ndim != 2 or doc_tokens.shape[-1] != queries.shape[-1]:
        raise ValueError(
            f"doc_tokens must be [T, {queries.shape[-1]}], got shape {doc_tokens.shape}"
        )
    if doc_offsets.ndim != 1 or doc_offsets.shape[0] < 1:
        raise ValueError(f"doc_offsets must be [n_d + 1], got shape {doc_offsets.shape}")
    if (doc_modality is None) != (num_modalities is None):
        raise ValueError("doc_modality and num_modalities must be given together")
    if not _use_pallas(impl, interpret):
        return reference.maxsim_packed(
            queries, q_mask, doc_tokens, doc_offsets, normalize, doc_modality, num_modalities
        )
    n_q, q_len, dim = queries.shape
    n_d = doc_offsets.shape[0] - 1
    m = 1 if num_modalities is None else num_modalities
    mod = jnp.ones(doc_tokens.shape[:1], jnp.int8) if doc_modality is None else doc_modality
    q_len_p = max(_next_pow2(q_len), 16 // block_q)  # tl.dot needs >= 16 rows
    dim_p = max(_next_pow2(dim), 16)
    n_q_p, n_d_p = _round_up(n_q, block_q), _round_up(n_d, block_d)
    total_p = max(doc_tokens.shape[0], block_t)
    q = _pad_axis(_pad_axis(_pad_axis(queries, 1, q_len_p), 2, dim_p), 0, n_q_p)
    w = _pad_axis(_pad_axis(reference.query_weights(q_mask, normalize), 1, q_len_p), 0, n_q_p)
    tokens = _pad_axis(_pad_axis(doc_tokens, 1, dim_p), 0, total_p)
    mod = _pad_axis(mod.astype(jnp.int8), 0, total_p)
    offsets = doc_offsets.astype(jnp.int32)
    offsets = jnp.concatenate([offsets, jnp.full((n_d_p - n_d,), offsets[-1], jnp.int32)])
    out = pallas_gpu.maxsim_packed_pallas(
        q, w, tokens, offsets, mod, m,
        block_q=block_q, block_d=block_d, block_t=block_t, interpret=interpret,
    )  # fmt: skip
    out = jnp.transpose(out, (1, 2, 0))[:n_q, :n_d]
    return out[..., 0] if num_modalities is None else out


MAX_FUSED_K = 128  # the fused kernel keeps next_pow2(k) candidates per query in registers


def maxsim_topk(
    queries: jax.Array,
    q_mask: jax.Array,
    docs: jax.Array,
    d_mask: jax.Array,
    k: int,
    normalize: bool = False,
    *,
    d_modality: jax.Array | None = None,
    num_modalities: int | None = None,
    doc_valid: jax.Array | None = None,
    chunk_docs: int = 8192,
    num_splits: int | None = None,
    impl: Impl = "auto",
    interpret: bool = False,
    **block_overrides,
):
    """Search: top-k documents per query without materialising all scores.

    Pallas path (k <= MAX_FUSED_K): one fused kernel; the documents are cut into `num_splits`
    contiguous ranges, each program streams its range block by block and keeps a running
    top-k per query on chip; the split candidates are merged with `lax.top_k`.
    Reference path (CPU) and large k: a `lax.scan` over chunks of `chunk_docs` documents,
    merging each chunk's scores into a running top-k, so only [n_q, chunk_docs] scores exist.
    With `d_modality`, the score is CLaMR's modality-max. `doc_valid` [n_d] bool masks
    documents out (score -inf). Returns (scores, doc_index) [n_q, k], best first.
    """
    _check_inputs(queries, q_mask, docs, "d_mask", d_mask)
    n_q = queries.shape[0]
    n_d = docs.shape[0]
    if not 1 <= k <= n_d:
        raise ValueError(f"k must be in [1, n_d={n_d}], got {k}")
    if (d_modality is None) != (num_modalities is None):
        raise ValueError("d_modality and num_modalities must be given together")
    valid = jnp.ones((n_d,), bool) if doc_valid is None else doc_valid.astype(bool)
    if _use_pallas(impl, interpret) and k <= MAX_FUSED_K:
        cfg = default_config(*queries.shape[:2], interpret, **block_overrides)
        side = d_mask if d_modality is None else d_modality
        m = 1 if num_modalities is None else num_modalities
        return _fused_topk(queries, q_mask, docs, side, valid, m, k, normalize, num_splits, cfg)
    chunk = min(chunk_docs, n_d)
    n_chunks = -(-n_d // chunk)
    n_d_p = n_chunks * chunk
    valid = _pad_axis(valid, 0, n_d_p, False).reshape(n_chunks, chunk)
    docs_c = _pad_axis(docs, 0, n_d_p).reshape(n_chunks, chunk, *docs.shape[1:])
    side = d_mask if d_modality is None else d_modality
    side_c = _pad_axis(side, 0, n_d_p).reshape(n_chunks, chunk, -1)

    def score(d, s):
        if d_modality is None:
            return maxsim(
                queries, q_mask, d, s, normalize, impl=impl, interpret=interpret, **block_overrides
            )
        return maxsim_modality(
            queries, q_mask, d, s, num_modalities, normalize,
            impl=impl, interpret=interpret, **block_overrides,
        ).max(-1)  # fmt: skip

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


def _fused_topk(queries, q_mask, docs, side, valid, num_modalities, k, normalize, splits, cfg):
    """Pads to the fused kernel's contract (no copy when the corpus is already aligned, as
    MultiVectorIndex makes it), runs it and merges the per-split candidates."""
    n_q, q_len, dim = queries.shape
    n_d, d_len, _ = docs.shape
    q_len_p = max(_next_pow2(q_len), 16 // cfg.block_q)
    dim_p = max(_next_pow2(dim), 16)
    block_t = min(cfg.block_t, _next_pow2(d_len))
    n_q_p, n_d_p = _round_up(n_q, cfg.block_q), _round_up(n_d, cfg.block_d)
    d_len_p = _round_up(d_len, block_t)
    q = _pad_axis(_pad_axis(_pad_axis(queries, 1, q_len_p), 2, dim_p), 0, n_q_p)
    w = reference.query_weights(q_mask, normalize)
    w = _pad_axis(_pad_axis(w, 1, q_len_p), 0, n_q_p)
    d = _pad_axis(_pad_axis(_pad_axis(docs, 1, d_len_p), 2, dim_p), 0, n_d_p)
    mod = _pad_axis(_pad_axis(side.astype(jnp.int8), 1, d_len_p), 0, n_d_p)
    v = _pad_axis(valid.astype(jnp.int8), 0, n_d_p)
    if splits is None:  # ~1024 programs in flight over the whole grid
        splits = max(1, min(n_d_p // cfg.block_d, 1024 // (n_q_p // cfg.block_q)))
    cand_s, cand_i = pallas_gpu.maxsim_topk_pallas(
        q, w, d, mod, v, num_modalities,
        topk_width=max(_next_pow2(k), 2), num_splits=splits,
        block_q=cfg.block_q, block_d=cfg.block_d, block_t=block_t,
        num_warps=cfg.num_warps, num_stages=cfg.num_stages, interpret=cfg.interpret,
    )  # fmt: skip
    top_s, pos = jax.lax.top_k(cand_s[:n_q], k)
    return top_s, jnp.take_along_axis(cand_i[:n_q], pos, axis=1)
