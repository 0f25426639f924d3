"""Public MaxSim ops: validation and dispatch (reference | pallas, `kernels_pallas.impl`).

`impl="auto"` runs the Pallas kernels on GPU and the pure-jnp reference (`reference.py`)
elsewhere; `impl="pallas"` forces the kernel, compiled on GPU and interpreted elsewhere unless
`interpret=` says otherwise (`interpret=False` on a CPU host lowers it for CUDA with
`jax.export`); `impl="reference"` forces the twin. The kernels' shape contract and the block
sizes live in `padding.py`, their gradients in `vjp.py`, the top-k search in `topk.py`.
"""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp

from kernels_pallas import impl as impl_lib
from kernels_pallas.maxsim import pallas_gpu, reference, topk, vjp
from kernels_pallas.maxsim.padding import (
    KernelConfig,
    default_config,
    packed_token_block,
    pad_packed,
    pad_queries,
)
from kernels_pallas.maxsim.topk import MAX_FUSED_K

Impl = Literal["auto", "pallas", "reference"]
SUPPORTED = ("reference", "pallas")

__all__ = [
    "MAX_FUSED_K",
    "SUPPORTED",
    "KernelConfig",
    "default_config",
    "maxsim",
    "maxsim_modality",
    "maxsim_packed",
    "maxsim_topk",
]


def _resolve(op: str, impl: str, interpret: bool | None) -> impl_lib.Resolved:
    """auto: Pallas on GPU, the reference elsewhere; Pallas interprets off GPU by default."""
    return impl_lib.resolve(impl, op=op, supported=SUPPORTED, interpret=interpret)


def _operand_shape(queries: jax.Array, docs: jax.Array) -> dict[str, int]:
    """What `default_config` sizes the pipeline by: the embedding dim and the widest operand."""
    itemsize = max(jnp.dtype(queries.dtype).itemsize, jnp.dtype(docs.dtype).itemsize)
    return dict(dim=queries.shape[-1], itemsize=itemsize)


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


# --------------------------------------------------------------------------- public ops


def maxsim(
    queries: jax.Array,
    q_mask: jax.Array,
    docs: jax.Array,
    d_mask: jax.Array,
    normalize: bool = False,
    *,
    impl: Impl = "auto",
    interpret: bool | None = None,
    **block_overrides,
) -> jax.Array:
    """MaxSim scores [n_q, n_d] (fp32). queries [n_q, q_len, dim] + q_mask [n_q, q_len];
    docs [n_d, d_len, dim] + d_mask [n_d, d_len]; fp32 or bf16 inputs, fp32 accumulation.
    `block_overrides` (block_q, block_d, block_t, num_warps, num_stages; `schedule` "blocked"
    or "persistent" and its `num_programs`, `padding.KernelConfig`) tune the kernel."""
    _check_inputs(queries, q_mask, docs, "d_mask", d_mask)
    impl, interpret = _resolve("maxsim", impl, interpret)
    if impl == "reference":
        return reference.maxsim(queries, q_mask, docs, d_mask, normalize)
    cfg = default_config(
        *queries.shape[:2], interpret, **_operand_shape(queries, docs), **block_overrides
    )
    w = reference.query_weights(q_mask, normalize)
    return vjp.modality_scores(queries, w, docs, d_mask.astype(jnp.int8), 1, cfg)[..., 0]


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
    interpret: bool | None = None,
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
    impl, interpret = _resolve("maxsim_modality", impl, interpret)
    if impl == "reference":
        return reference.maxsim_modality(
            queries, q_mask, docs, d_modality, num_modalities, normalize, return_argmax
        )
    cfg = default_config(
        *queries.shape[:2], interpret, **_operand_shape(queries, docs), **block_overrides
    )
    w = reference.query_weights(q_mask, normalize)
    fn = vjp.modality_scores_and_argmax if return_argmax else vjp.modality_scores
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
    interpret: bool | None = None,
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
    impl, interpret = _resolve("maxsim_packed", impl, interpret)
    if impl == "reference":
        return reference.maxsim_packed(
            queries, q_mask, doc_tokens, doc_offsets, normalize, doc_modality, num_modalities
        )
    n_q = queries.shape[0]
    n_d = doc_offsets.shape[0] - 1
    m = 1 if num_modalities is None else num_modalities
    mod = jnp.ones(doc_tokens.shape[:1], jnp.int8) if doc_modality is None else doc_modality
    q, w = pad_queries(queries, reference.query_weights(q_mask, normalize), block_q)
    block_t = packed_token_block(block_t)  # the dot's N; tl.dot needs >= 16
    tokens, offsets, mod = pad_packed(
        doc_tokens, doc_offsets, mod, block_d=block_d, block_t=block_t
    )
    out = pallas_gpu.maxsim_packed_pallas(
        q, w, tokens, offsets, mod, m,
        block_q=block_q, block_d=block_d, block_t=block_t, interpret=interpret,
    )  # fmt: skip
    out = jnp.transpose(out, (1, 2, 0))[:n_q, :n_d]
    return out[..., 0] if num_modalities is None else out


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
    interpret: bool | None = None,
    **block_overrides,
):
    """Search: top-k documents per query without materialising all scores.

    Pallas path (k <= MAX_FUSED_K): one fused kernel; the documents are cut into `num_splits`
    contiguous ranges, each program streams its range block by block and keeps a running
    top-k per query on chip; the split candidates are merged by (score, lower doc id).
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
    impl, interpret = _resolve("maxsim_topk", impl, interpret)
    side = d_mask if d_modality is None else d_modality
    if impl == "pallas" and k <= MAX_FUSED_K:
        cfg = default_config(
            *queries.shape[:2], interpret, **_operand_shape(queries, docs), **block_overrides
        )
        m = 1 if num_modalities is None else num_modalities
        return topk.fused_topk(queries, q_mask, docs, side, valid, m, k, normalize, num_splits, cfg)
    kw = dict(impl=impl, interpret=interpret, **block_overrides)

    def score(d, s):
        if d_modality is None:
            return maxsim(queries, q_mask, d, s, normalize, **kw)
        return maxsim_modality(queries, q_mask, d, s, num_modalities, normalize, **kw).max(-1)

    return topk.scan_topk(score, docs, side, valid, n_q, k, chunk_docs)
