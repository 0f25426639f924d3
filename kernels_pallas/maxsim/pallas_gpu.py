"""Pallas MaxSim kernels (GPU, Triton lowering).

Written against JAX 0.10.2 for the Pallas *Triton* lowering (A100 / H100; `num_warps`,
`num_stages`); every call goes through `kernels_pallas.triton.pallas_call`, which always passes
Triton compiler params (without them jax 0.10.2 lowers to Mosaic GPU) and fails loudly when
that API is missing. So far these kernels have only run in
`interpret=True` mode on CPU (the tests check them against `reference.py`), and their
Pallas -> Triton-IR lowering for CUDA is checked on CPU with `jax.export`
(tests/kernels_pallas/maxsim/test_maxsim_triton_lowering.py). They have not yet been compiled to
PTX or run on a GPU; that run and its benchmark are still owed (benchmarks/maxsim.py).

Design (the spec's memory-bound argument): one program owns `block_q` queries x `block_d`
documents. It keeps the queries resident ([block_q * q_len, dim]) and streams the document
tile through in chunks of `block_t` tokens: one fp32-accumulating dot
[rows, dim] x [dim, block_d * block_t], a masked max over each document's chunk tokens folded
into a running max per (query token, doc, modality), and at the end a weighted sum over query
tokens. Documents are read from HBM exactly once per query block, the [Q, D, q_len, d_len]
tensor never exists, and the modality-max variant only adds M masked max-reductions per chunk
(no extra memory traffic), which is why it should cost little more than plain MaxSim.

Three kernels share that inner loop: `maxsim_padded_pallas` (padded docs; plain, modality-max
and argmax variants), `maxsim_packed_pallas` (variable-length docs addressed by offsets, a
data-dependent loop per document) and `maxsim_topk_pallas` (fused search: a running top-k per
query kept on chip while a program streams its split of the corpus).

These are the "blocked" scan schedule (`KernelConfig.schedule`, the default); the
"persistent" one (2-D document tiles, a persistent grid, a one-pass fold for modality-uniform
tiles) is in `pallas_persistent.py` and reuses `fold_chunk` for mixed tiles.

Modality ids / masks travel as int8 (a quarter of the bytes of int32 next to the documents).
Kernel contract (padding.py pads to it): all block dims are powers of two,
block_q * q_len >= 16 (tl.dot needs M >= 16), d_len is a multiple of block_t, n_q and n_d are
multiples of block_q and block_d.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

from kernels_pallas import triton

NEG_INF = float("-inf")
NO_ARG = 2**30  # larger than any token index; "no argmax yet"


def fold_chunk(s, mod, pos, maxes, args, num_modalities, track_argmax):
    """Folds one chunk of token scores into the running per-modality max (and argmax).

    s: [rows, bd, bt] fp32, mod: [bd, bt] int32 (0 = pad), pos: [bd, bt] token positions.
    maxes/args: tuples of M arrays [rows, bd].
    """
    new_maxes, new_args = [], []
    for m in range(num_modalities):
        valid = (mod == m + 1)[None]
        sm = jnp.where(valid, s, NEG_INF)
        chunk_max = sm.max(axis=-1)
        if track_argmax:
            # argmax without an argmax primitive: first position attaining the chunk max.
            hit = valid & (sm == chunk_max[..., None])
            chunk_arg = jnp.where(hit, pos[None], NO_ARG).min(axis=-1)
            better = chunk_max > maxes[m]
            new_args.append(jnp.where(better, chunk_arg, args[m]))
        new_maxes.append(jnp.maximum(maxes[m], chunk_max))
    return tuple(new_maxes), tuple(new_args)


def _finish(maxes, args, qw, out_ref, arg_ref, block_q, q_len):
    """Weighted sum over query tokens; writes scores [M, bq, bd] and argmax [M, bq, q_len, bd]."""
    for m, tok_max in enumerate(maxes):
        empty = jnp.isneginf(tok_max)
        tok_max = jnp.where(empty, 0.0, tok_max).reshape(block_q, q_len, -1)
        out_ref[m] = jnp.sum(tok_max * qw[:, :, None], axis=1)
        if arg_ref is not None:
            arg = jnp.where(empty | (args[m] == NO_ARG), -1, args[m])
            arg_ref[m] = arg.reshape(block_q, q_len, -1)


def _padded_kernel(
    q_ref, qw_ref, d_ref, mod_ref, out_ref, *maybe_arg_ref, num_modalities, block_t, track_argmax
):
    arg_ref = maybe_arg_ref[0] if track_argmax else None
    block_q, q_len, dim = q_ref.shape
    block_d, d_len, _ = d_ref.shape
    rows = block_q * q_len
    q = q_ref[...].reshape(rows, dim)
    qw = qw_ref[...].astype(jnp.float32)

    def body(t, carry):
        maxes, args = carry
        start = pl.multiple_of(t * block_t, block_t)
        d = d_ref[:, pl.ds(start, block_t), :].reshape(block_d * block_t, dim)
        mod = mod_ref[:, pl.ds(start, block_t)].astype(jnp.int32)
        s = jax.lax.dot_general(
            q, d, (((1,), (1,)), ((), ())), preferred_element_type=jnp.float32
        ).reshape(rows, block_d, block_t)
        pos = start + jax.lax.broadcasted_iota(jnp.int32, (block_d, block_t), 1)
        return fold_chunk(s, mod, pos, maxes, args, num_modalities, track_argmax)

    init_max = tuple(jnp.full((rows, block_d), NEG_INF, jnp.float32) for _ in range(num_modalities))
    init_arg = tuple(
        jnp.full((rows, block_d), NO_ARG, jnp.int32)
        for _ in range(num_modalities if track_argmax else 0)
    )
    maxes, args = jax.lax.fori_loop(0, d_len // block_t, body, (init_max, init_arg))
    _finish(maxes, args, qw, out_ref, arg_ref, block_q, q_len)


def maxsim_padded_pallas(
    queries: jax.Array,
    q_weights: jax.Array,
    docs: jax.Array,
    d_modality: jax.Array,
    num_modalities: int,
    *,
    track_argmax: bool = False,
    block_q: int = 1,
    block_d: int = 16,
    block_t: int = 32,
    num_warps: int = 4,
    num_stages: int = 2,
    interpret: bool = False,
):
    """Raw kernel call on aligned shapes. Returns scores [M, n_q, n_d] (and argmax
    [M, n_q, q_len, n_d] int32 when `track_argmax`)."""
    n_q, q_len, dim = queries.shape
    n_d, d_len, _ = docs.shape
    grid = (n_q // block_q, n_d // block_d)
    m = num_modalities
    out_shape = [jax.ShapeDtypeStruct((m, n_q, n_d), jnp.float32)]
    out_specs = [pl.BlockSpec((m, block_q, block_d), lambda i, j: (0, i, j))]
    if track_argmax:
        out_shape.append(jax.ShapeDtypeStruct((m, n_q, q_len, n_d), jnp.int32))
        out_specs.append(pl.BlockSpec((m, block_q, q_len, block_d), lambda i, j: (0, i, 0, j)))
    kernel = functools.partial(
        _padded_kernel, num_modalities=m, block_t=block_t, track_argmax=track_argmax
    )
    out = triton.pallas_call(
        kernel,
        num_warps=num_warps,
        num_stages=num_stages,
        grid=grid,
        in_specs=[
            pl.BlockSpec((block_q, q_len, dim), lambda i, j: (i, 0, 0)),
            pl.BlockSpec((block_q, q_len), lambda i, j: (i, 0)),
            pl.BlockSpec((block_d, d_len, dim), lambda i, j: (j, 0, 0)),
            pl.BlockSpec((block_d, d_len), lambda i, j: (j, 0)),
        ],
        out_specs=out_specs,
        out_shape=out_shape,
        interpret=interpret,
        name=f"maxsim_padded_m{m}{'_argmax' if track_argmax else ''}",
    )(queries, q_weights, docs, d_modality)
    return tuple(out) if track_argmax else out[0]


def _packed_kernel(
    offsets_ref, q_ref, qw_ref, tok_ref, mod_ref, out_ref, *, num_modalities, block_d, block_t
):
    """One program: block_q queries x block_d packed docs; each doc is a dynamic token range."""
    block_q, q_len, dim = q_ref.shape
    rows = block_q * q_len
    total = tok_ref.shape[0]
    q = q_ref[...].reshape(rows, dim)
    qw = qw_ref[...].astype(jnp.float32)
    doc0 = pl.program_id(1) * block_d
    col = jax.lax.broadcasted_iota(jnp.int32, (rows, block_d), 1)

    def doc_body(b, acc):
        lo = offsets_ref[doc0 + b]
        hi = offsets_ref[doc0 + b + 1]

        def chunk_body(c, maxes):
            # Clamp the window into the array; tokens outside [lo, hi) are masked, and a
            # token seen twice is harmless because max is idempotent.
            start = jnp.minimum(lo + c * block_t, total - block_t)
            d = tok_ref[pl.ds(start, block_t), :]
            mod = mod_ref[pl.ds(start, block_t)].astype(jnp.int32)
            pos = start + jax.lax.broadcasted_iota(jnp.int32, (block_t,), 0)
            mod = jnp.where((pos >= lo) & (pos < hi), mod, 0)
            s = jax.lax.dot_general(
                q, d, (((1,), (1,)), ((), ())), preferred_element_type=jnp.float32
            )
            maxes, _ = fold_chunk(
                s[:, None, :], mod[None, :], pos[None, :], maxes, (), num_modalities, False
            )
            return maxes

        init = tuple(jnp.full((rows, 1), NEG_INF, jnp.float32) for _ in range(num_modalities))
        n_chunks = (hi - lo + block_t - 1) // block_t
        maxes = jax.lax.fori_loop(0, n_chunks, chunk_body, init)
        return tuple(jnp.where(col == b, mx, a) for mx, a in zip(maxes, acc, strict=True))

    acc = tuple(jnp.full((rows, block_d), NEG_INF, jnp.float32) for _ in range(num_modalities))
    acc = jax.lax.fori_loop(0, block_d, doc_body, acc)
    _finish(acc, (), qw, out_ref, None, block_q, q_len)


def maxsim_packed_pallas(
    queries: jax.Array,
    q_weights: jax.Array,
    doc_tokens: jax.Array,
    doc_offsets: jax.Array,
    doc_modality: jax.Array,
    num_modalities: int,
    *,
    block_q: int = 1,
    block_d: int = 8,
    block_t: int = 32,
    num_warps: int = 4,
    num_stages: int = 2,
    interpret: bool = False,
):
    """Raw packed kernel on aligned shapes (n_d = len(offsets) - 1 a multiple of block_d,
    total tokens >= block_t). Returns scores [M, n_q, n_d]."""
    n_q, q_len, dim = queries.shape
    n_d = doc_offsets.shape[0] - 1
    m = num_modalities
    kernel = functools.partial(_packed_kernel, num_modalities=m, block_d=block_d, block_t=block_t)
    whole = pl.no_block_spec  # whole-array refs: docs are sliced by dynamic offsets inside
    return triton.pallas_call(
        kernel,
        num_warps=num_warps,
        num_stages=num_stages,
        grid=(n_q // block_q, n_d // block_d),
        in_specs=[
            whole,
            pl.BlockSpec((block_q, q_len, dim), lambda i, j: (i, 0, 0)),
            pl.BlockSpec((block_q, q_len), lambda i, j: (i, 0)),
            whole,
            whole,
        ],
        out_specs=pl.BlockSpec((m, block_q, block_d), lambda i, j: (0, i, j)),
        out_shape=jax.ShapeDtypeStruct((m, n_q, n_d), jnp.float32),
        interpret=interpret,
        name=f"maxsim_packed_m{m}",
    )(doc_offsets, queries, q_weights, doc_tokens, doc_modality)


def _topk_kernel(
    q_ref, qw_ref, d_ref, mod_ref, valid_ref, top_s_ref, top_i_ref,
    *, num_modalities, block_d, block_t, docs_per_split, topk_width,
):  # fmt: skip
    """Fused search: one program scans `docs_per_split` documents in blocks of `block_d` and
    keeps a running top-`topk_width` per query in registers (replace-the-minimum insertion),
    so no score ever leaves the chip. The candidate lists of all splits are merged outside.
    """
    block_q, q_len, dim = q_ref.shape
    n_d, d_len, _ = d_ref.shape
    rows = block_q * q_len
    q = q_ref[...].reshape(rows, dim)
    qw = qw_ref[...].astype(jnp.float32)
    lo = pl.program_id(1) * docs_per_split
    n_blocks = jnp.maximum(jnp.minimum(docs_per_split, n_d - lo), 0) // block_d
    lane_d = jax.lax.broadcasted_iota(jnp.int32, (block_q, block_d), 1)
    lane_k = jax.lax.broadcasted_iota(jnp.int32, (block_q, topk_width), 1)

    def block_body(b, top):
        d0 = lo + b * block_d

        def chunk_body(t, maxes):
            start = pl.multiple_of(t * block_t, block_t)
            d = d_ref[pl.ds(d0, block_d), pl.ds(start, block_t), :]
            mod = mod_ref[pl.ds(d0, block_d), pl.ds(start, block_t)].astype(jnp.int32)
            s = jax.lax.dot_general(
                q, d.reshape(block_d * block_t, dim), (((1,), (1,)), ((), ())),
                preferred_element_type=jnp.float32,
            ).reshape(rows, block_d, block_t)  # fmt: skip
            pos = start + jax.lax.broadcasted_iota(jnp.int32, (block_d, block_t), 1)
            return fold_chunk(s, mod, pos, maxes, (), num_modalities, False)[0]

        init = tuple(jnp.full((rows, block_d), NEG_INF, jnp.float32) for _ in range(num_modalities))
        maxes = jax.lax.fori_loop(0, d_len // block_t, chunk_body, init)
        scores = None
        for tok_max in maxes:  # modality-max over per-modality MaxSim scores
            tok_max = jnp.where(jnp.isneginf(tok_max), 0.0, tok_max).reshape(block_q, q_len, -1)
            sm = jnp.sum(tok_max * qw[:, :, None], axis=1)  # [block_q, block_d]
            scores = sm if scores is None else jnp.maximum(scores, sm)
        valid = valid_ref[pl.ds(d0, block_d)].astype(jnp.int32)
        scores = jnp.where(valid[None, :] > 0, scores, NEG_INF)
        top_s, top_i = top
        for j in range(block_d):  # insert each document of the block
            cand = jnp.where(lane_d == j, scores, NEG_INF).max(axis=1)  # [block_q]
            cur_min = top_s.min(axis=1)
            slot = jnp.where(top_s == cur_min[:, None], lane_k, topk_width).min(axis=1)
            hit = (lane_k == slot[:, None]) & (cand > cur_min)[:, None]
            top_s = jnp.where(hit, cand[:, None], top_s)
            top_i = jnp.where(hit, d0 + j, top_i)
        return top_s, top_i

    init_top = (
        jnp.full((block_q, topk_width), NEG_INF, jnp.float32),
        jnp.full((block_q, topk_width), -1, jnp.int32),
    )
    top_s, top_i = jax.lax.fori_loop(0, n_blocks, block_body, init_top)
    top_s_ref[...] = top_s
    top_i_ref[...] = top_i


def maxsim_topk_pallas(
    queries: jax.Array,
    q_weights: jax.Array,
    docs: jax.Array,
    d_modality: jax.Array,
    doc_valid: jax.Array,
    num_modalities: int,
    *,
    topk_width: int,
    num_splits: int,
    block_q: int = 1,
    block_d: int = 8,
    block_t: int = 16,
    num_warps: int = 4,
    num_stages: int = 3,
    interpret: bool = False,
):
    """Raw fused-search call (aligned shapes; n_d a multiple of block_d). Returns unsorted
    candidates (scores, doc index) [n_q, num_splits * topk_width]; index -1 = empty slot."""
    n_q, q_len, dim = queries.shape
    n_d = docs.shape[0]
    n_blocks = n_d // block_d
    docs_per_split = -(-n_blocks // num_splits) * block_d
    num_splits = -(-n_d // docs_per_split)
    kernel = functools.partial(
        _topk_kernel,
        num_modalities=num_modalities,
        block_d=block_d,
        block_t=block_t,
        docs_per_split=docs_per_split,
        topk_width=topk_width,
    )
    whole = pl.no_block_spec  # docs are addressed by dynamic block offsets inside
    out_block = pl.BlockSpec((block_q, topk_width), lambda i, j: (i, j))
    width = num_splits * topk_width
    return triton.pallas_call(
        kernel,
        num_warps=num_warps,
        num_stages=num_stages,
        grid=(n_q // block_q, num_splits),
        in_specs=[
            pl.BlockSpec((block_q, q_len, dim), lambda i, j: (i, 0, 0)),
            pl.BlockSpec((block_q, q_len), lambda i, j: (i, 0)),
            whole,
            whole,
            whole,
        ],
        out_specs=[out_block, out_block],
        out_shape=[
            jax.ShapeDtypeStruct((n_q, width), jnp.float32),
            jax.ShapeDtypeStruct((n_q, width), jnp.int32),
        ],
        interpret=interpret,
        name=f"maxsim_topk_m{num_modalities}",
    )(queries, q_weights, docs, d_modality, doc_valid)
