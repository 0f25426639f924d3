"""The persistent MaxSim scan (KernelConfig.schedule="persistent"): Pallas, Triton lowering.

Issue 13's redesign of the scan in `pallas_gpu.py` (schedule "blocked"), which on an H200
reached 50 % of HBM bandwidth on one query x 1M documents and whose modality-max cost 1.65x
the plain kernel (docs/gpu_results.md). Three changes, each aimed at one of those numbers:

1. **2-D document rows, contiguous tiles.** The corpus is one array [n_d * doc_len, dim]
   (a free reshape of the padded [n_d, doc_len, dim]); every load is a plain [tile, dim]
   block of consecutive rows, `pl.ds(row0, tile)`: whole short documents or a share of one
   long document (`padding.scan_plan`). The blocked kernel loads a 3-D [block_d, block_t,
   dim] box (block_d strided runs of block_t rows) and reshapes it for the dot.
2. **A persistent grid.** Grid (query blocks, P) with P = a few programs per SM
   (`padding.scan_programs`), not one program per 8 documents (125K programs at 1M docs).
   Program p walks document groups p, p + P, p + 2P, ... (a grid-stride loop: at any moment
   the P programs read neighbouring memory, and their work differs by at most one group),
   so each program's load pipeline runs across many documents instead of draining and
   refilling every 256 KB document block.
3. **Modality-uniform tiles fold in one pass.** The blocked kernel folds every score tile
   into M running maxima with M masked passes `where(mod == m, s, -inf).max()` over the
   [rows, tile] tile: M times the elementwise work of plain MaxSim, next to a dot whose
   FLOPs run on tensor cores. Here a tile whose documents each hold one modality (checked per
   tile on its [tile] int8 ids, which is cheap) takes one masked max, as plain MaxSim does,
   and routes the [rows, docs] result to its modality with M selects on the reduced tile
   (1 / tokens-per-doc of the work). A mixed tile takes the M-pass fold (`lax.cond`), so any
   layout is correct; documents whose modality segments start on tile boundaries (CLaMR's
   frames | OCR | ASR | description segments, padded to the tile) never pay the M passes.

Offsets: the Triton lowering computes load offsets in 64-bit when the whole operand exceeds
2**32 bytes and in 32-bit otherwise (jax/_src/pallas/triton/lowering.py,
`_compute_offsets_from_indices`); row indices are int32 here (n_d * doc_len < 2**31).
`benchmarks/maxsim.py` times 1M documents as one 32 GiB array against the same documents as
8 shards under 4 GiB, to show on a GPU what the 64-bit offsets cost.

So far run in interpret mode on CPU against the reference and lowered for CUDA with
`jax.export` (tests/kernels_pallas/maxsim/test_persistent.py); never compiled on a GPU.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

from kernels_pallas import triton
from kernels_pallas.maxsim.pallas_gpu import NEG_INF, NO_ARG, fold_chunk

_NO_MODALITY = 127  # above every int8 modality id


def tile_modality(mod):
    """mod [G, bt] int ids (0 = padding) -> (the modality of each document's tokens in the
    tile [G] (0: all padding), whether every document's non-padding ids are all equal)."""
    hi = mod.max(axis=-1)
    lo = jnp.where(mod > 0, mod, _NO_MODALITY).min(axis=-1)
    return hi, jnp.min(lo - hi) >= 0


def _fold_tile(s, mod, pos, maxes, args, num_modalities, track_argmax):
    """Folds a [rows, G, bt] score tile into the running per-modality maxima [rows, G].

    One modality (plain MaxSim) is one masked max. With several, a tile in which every
    document's tokens share one modality id takes one masked max plus M selects on the
    reduced tile; any other tile takes the M-pass fold of the blocked kernel.
    """
    if num_modalities == 1:
        return fold_chunk(s, mod, pos, maxes, args, 1, track_argmax)
    hi, uniform = tile_modality(mod)

    def one_pass(carry):
        maxes, args = carry
        valid = (mod > 0)[None]
        sm = jnp.where(valid, s, NEG_INF)
        tile_max = sm.max(axis=-1)  # [rows, G]
        if track_argmax:
            hit = valid & (sm == tile_max[..., None])
            tile_arg = jnp.where(hit, pos[None], NO_ARG).min(axis=-1)
        new_maxes, new_args = [], []
        for m in range(num_modalities):
            better = (hi == m + 1)[None] & (tile_max > maxes[m])
            new_maxes.append(jnp.where(better, tile_max, maxes[m]))
            if track_argmax:
                new_args.append(jnp.where(better, tile_arg, args[m]))
        return tuple(new_maxes), tuple(new_args)

    def m_passes(carry):
        return fold_chunk(s, mod, pos, *carry, num_modalities, track_argmax)

    return jax.lax.cond(uniform, one_pass, m_passes, (maxes, args))


def _scan_group(q, d_ref, mod_ref, group, *, rows, tile, docs_per_tile, group_rows,
                num_modalities, track_argmax):  # fmt: skip
    """Running per-modality max (and argmax) [rows, G] of one document group: G =
    docs_per_tile whole documents in one tile, or one document in group_rows // tile tiles."""
    g_docs, bt = docs_per_tile, tile // docs_per_tile
    dim = q.shape[-1]

    def body(c, carry):
        maxes, args = carry
        row0 = pl.multiple_of(group * group_rows + c * tile, tile)
        d = d_ref[pl.ds(row0, tile), :]  # a contiguous [tile, dim] block
        mod = mod_ref[pl.ds(row0, tile)].astype(jnp.int32).reshape(g_docs, bt)
        s = jax.lax.dot_general(
            q, d.reshape(tile, dim), (((1,), (1,)), ((), ())), preferred_element_type=jnp.float32
        ).reshape(rows, g_docs, bt)
        pos = c * tile + jax.lax.broadcasted_iota(jnp.int32, (g_docs, bt), 1)
        return _fold_tile(s, mod, pos, maxes, args, num_modalities, track_argmax)

    init = (
        tuple(jnp.full((rows, g_docs), NEG_INF, jnp.float32) for _ in range(num_modalities)),
        tuple(
            jnp.full((rows, g_docs), NO_ARG, jnp.int32)
            for _ in range(num_modalities if track_argmax else 0)
        ),
    )
    n_tiles = group_rows // tile
    if n_tiles == 1:
        return body(0, init)
    return jax.lax.fori_loop(0, n_tiles, body, init)


def _weighted(tok_max, qw, block_q, q_len):
    """[rows, G] per-query-token maxima -> [block_q, G] scores (empty -> 0)."""
    tok_max = jnp.where(jnp.isneginf(tok_max), 0.0, tok_max).reshape(block_q, q_len, -1)
    return jnp.sum(tok_max * qw[:, :, None], axis=1)


def _my_groups(n_groups, num_programs):
    """(this program's first group, how many groups it walks) in the grid-stride loop."""
    p = pl.program_id(1)
    return p, (n_groups - p + num_programs - 1) // num_programs


def _scores_kernel(
    q_ref, qw_ref, d_ref, mod_ref, out_ref, *maybe_arg_ref, num_modalities, tile,
    docs_per_tile, group_rows, n_groups, num_programs, track_argmax,
):  # fmt: skip
    arg_ref = maybe_arg_ref[0] if track_argmax else None
    block_q, q_len, dim = q_ref.shape
    rows = block_q * q_len
    q = q_ref[...].reshape(rows, dim)
    qw = qw_ref[...].astype(jnp.float32)
    q0 = pl.program_id(0) * block_q
    first, count = _my_groups(n_groups, num_programs)
    scan = functools.partial(
        _scan_group, q, d_ref, mod_ref, rows=rows, tile=tile, docs_per_tile=docs_per_tile,
        group_rows=group_rows, num_modalities=num_modalities, track_argmax=track_argmax,
    )  # fmt: skip

    def group_body(i, carry):
        g = first + i * num_programs
        maxes, args = scan(g)
        docs = pl.ds(g * docs_per_tile, docs_per_tile)
        for m in range(num_modalities):
            out_ref[m, pl.ds(q0, block_q), docs] = _weighted(maxes[m], qw, block_q, q_len)
            if track_argmax:
                empty = jnp.isneginf(maxes[m]) | (args[m] == NO_ARG)
                arg = jnp.where(empty, -1, args[m]).reshape(block_q, q_len, docs_per_tile)
                arg_ref[m, pl.ds(q0, block_q), :, docs] = arg
        return carry

    jax.lax.fori_loop(0, count, group_body, jnp.int32(0))


def maxsim_persistent_pallas(
    queries: jax.Array,
    q_weights: jax.Array,
    tokens: jax.Array,
    side: jax.Array,
    num_modalities: int,
    *,
    doc_len: int,
    tile: int,
    num_programs: int,
    track_argmax: bool = False,
    block_q: int = 1,
    num_warps: int = 4,
    num_stages: int = 3,
    interpret: bool = False,
):
    """Raw persistent scan on aligned operands (`padding.pad_docs_2d`): tokens
    [n_d * doc_len, dim], int8 side [n_d * doc_len] (0 = padding, 1..M). Returns scores
    [M, n_q, n_d] (and argmax [M, n_q, q_len, n_d] int32 when `track_argmax`)."""
    n_q, q_len, dim = queries.shape
    n_d = tokens.shape[0] // doc_len
    docs_per_tile = max(1, tile // doc_len)
    n_groups = n_d // docs_per_tile
    if tokens.shape[0] >= 2**31:
        raise ValueError(f"{tokens.shape[0]} token rows: the kernel's row index is int32")
    m = num_modalities
    whole = pl.no_block_spec  # written at dynamic document offsets inside
    out_shape = [jax.ShapeDtypeStruct((m, n_q, n_d), jnp.float32)]
    if track_argmax:
        out_shape.append(jax.ShapeDtypeStruct((m, n_q, q_len, n_d), jnp.int32))
    kernel = functools.partial(
        _scores_kernel, num_modalities=m, tile=tile, docs_per_tile=docs_per_tile,
        group_rows=max(tile, doc_len), n_groups=n_groups, num_programs=num_programs,
        track_argmax=track_argmax,
    )  # fmt: skip
    out = triton.pallas_call(
        kernel,
        num_warps=num_warps,
        num_stages=num_stages,
        grid=(n_q // block_q, num_programs),
        in_specs=[
            pl.BlockSpec((block_q, q_len, dim), lambda i, j: (i, 0, 0)),
            pl.BlockSpec((block_q, q_len), lambda i, j: (i, 0)),
            whole,
            whole,
        ],
        out_specs=[whole] * len(out_shape),
        out_shape=out_shape,
        interpret=interpret,
        name=f"maxsim_persistent_m{m}{'_argmax' if track_argmax else ''}",
    )(queries, q_weights, tokens, side)
    return tuple(out) if track_argmax else out[0]


def _topk_kernel(q_ref, qw_ref, d_ref, mod_ref, valid_ref, top_s_ref, top_i_ref, *,
                 num_modalities, tile, docs_per_tile, group_rows, n_groups, num_programs,
                 topk_width):  # fmt: skip
    """Fused search on the persistent scan: a running top-`topk_width` per query over the
    groups this program walks (replace-the-minimum insertion, as the blocked top-k kernel)."""
    block_q, q_len, dim = q_ref.shape
    rows = block_q * q_len
    q = q_ref[...].reshape(rows, dim)
    qw = qw_ref[...].astype(jnp.float32)
    first, count = _my_groups(n_groups, num_programs)
    lane_d = jax.lax.broadcasted_iota(jnp.int32, (block_q, docs_per_tile), 1)
    lane_k = jax.lax.broadcasted_iota(jnp.int32, (block_q, topk_width), 1)

    def group_body(i, top):
        g = first + i * num_programs
        maxes, _ = _scan_group(
            q, d_ref, mod_ref, g, rows=rows, tile=tile, docs_per_tile=docs_per_tile,
            group_rows=group_rows, num_modalities=num_modalities, track_argmax=False,
        )  # fmt: skip
        scores = None
        for tok_max in maxes:  # CLaMR's modality-max over the per-modality scores
            sm = _weighted(tok_max, qw, block_q, q_len)
            scores = sm if scores is None else jnp.maximum(scores, sm)
        d0 = g * docs_per_tile
        doc_ok = valid_ref[pl.ds(d0, docs_per_tile)].astype(jnp.int32)
        scores = jnp.where(doc_ok[None, :] != 0, scores, NEG_INF)

        def insert(j, top):
            top_s, top_i = top
            cand = jnp.where(lane_d == j, scores, NEG_INF).max(axis=1)  # [block_q]
            cur_min = top_s.min(axis=1)
            slot = jnp.where(top_s == cur_min[:, None], lane_k, topk_width).min(axis=1)
            hit = (lane_k == slot[:, None]) & (cand > cur_min)[:, None]
            return jnp.where(hit, cand[:, None], top_s), jnp.where(hit, d0 + j, top_i)

        if docs_per_tile <= 8:  # unrolled for a few documents per tile, a loop for many
            for j in range(docs_per_tile):
                top = insert(j, top)
            return top
        return jax.lax.fori_loop(0, docs_per_tile, insert, top)

    init_top = (
        jnp.full((block_q, topk_width), NEG_INF, jnp.float32),
        jnp.full((block_q, topk_width), -1, jnp.int32),
    )
    top_s, top_i = jax.lax.fori_loop(0, count, group_body, init_top)
    top_s_ref[...] = top_s
    top_i_ref[...] = top_i


def maxsim_persistent_topk_pallas(
    queries: jax.Array,
    q_weights: jax.Array,
    tokens: jax.Array,
    side: jax.Array,
    doc_valid: jax.Array,
    num_modalities: int,
    *,
    doc_len: int,
    tile: int,
    num_programs: int,
    topk_width: int,
    block_q: int = 1,
    num_warps: int = 4,
    num_stages: int = 3,
    interpret: bool = False,
):
    """Raw fused search on the persistent scan (operands as `maxsim_persistent_pallas`, plus
    int8 doc_valid [n_d]). Returns unsorted candidates (scores, doc index)
    [n_q, num_programs * topk_width]; index -1 = empty slot."""
    n_q, q_len, dim = queries.shape
    n_d = tokens.shape[0] // doc_len
    docs_per_tile = max(1, tile // doc_len)
    if tokens.shape[0] >= 2**31:
        raise ValueError(f"{tokens.shape[0]} token rows: the kernel's row index is int32")
    kernel = functools.partial(
        _topk_kernel, num_modalities=num_modalities, tile=tile, docs_per_tile=docs_per_tile,
        group_rows=max(tile, doc_len), n_groups=n_d // docs_per_tile,
        num_programs=num_programs, topk_width=topk_width,
    )  # fmt: skip
    whole = pl.no_block_spec
    out_block = pl.BlockSpec((block_q, topk_width), lambda i, j: (i, j))
    width = num_programs * topk_width
    return triton.pallas_call(
        kernel,
        num_warps=num_warps,
        num_stages=num_stages,
        grid=(n_q // block_q, num_programs),
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
        name=f"maxsim_persistent_topk_m{num_modalities}",
    )(queries, q_weights, tokens, side, doc_valid)
