"""Pallas GPU tile rasteriser, forward and backward, wired with `jax.custom_vjp`.

Written against JAX 0.10.2 for the Pallas **Triton lowering** (`jax.experimental.pallas` +
`pallas.triton`), which runs on A100 and H100 (Mosaic GPU would be Hopper-only); both calls go
through `kernels_pallas.triton.pallas_call`, which pins the Triton backend.
Honest status: so far this file has only been *run in interpret mode on CPU*
(`interpret=True`), where it matches `reference.py` in values and gradients (tests in
tests/kernels_pallas/splat/). Both kernels also lower through the Pallas Triton lowering to
Triton IR for CUDA (`jax.export` with platforms=["cuda"], test_triton_lowering.py), but they
have never been compiled to PTX, run or timed on a GPU; the command for that check is
`python benchmarks/splat.py` (and `pytest -m gpu`-free tests pass on GPU with impl="auto").

Design (one program per 16×16 tile, the 256 pixels vectorised inside the program):
- XLA gathers the intersections' features in sorted order into a feature-major table
  `feats [10, M + chunk]` (Pallas has no gather; the `chunk` zero columns let the last chunk
  read past the end). Each program reads its [start, end) range from `tile_ranges` and walks it
  in chunks of `chunk` Gaussians loaded with `pl.ds`, computing α for a [chunk, 256] block at
  once; transmittance inside a chunk is exp(cumsum(log(1−α))) (Triton supports a forward
  cumsum), and the loop is a `while_loop` that exits as soon as every pixel of the tile is
  saturated (T < 1e-4).
- Forward saves per pixel: accumulated rgb and depth, final T and the last contributor (one
  past its position in the sorted list).
- Backward (its own kernel: autodiff through `pallas_call` is not supported) recomputes each
  chunk front to back up to the tile's last contributor. The suffix colour Σ_{j>i} c_j w_j is
  the final colour minus the running prefix, so T never has to be recovered by division (the
  only divisions are by 1−α ≥ 0.01). This is the same math as the 3DGS back-to-front pass, in
  the order Triton can vectorise (it has no reverse cumsum). Each intersection's gradient
  row (10 numbers) is written to its own column of an output buffer (masked stores, no
  atomics in the kernel); `jax.ops.segment_sum` by Gaussian id sums them in XLA. That
  scatter-add may use atomics on GPU, so the per-Gaussian float summation order, hence the
  gradient's last bits, is not guaranteed reproducible from run to run there (on CPU it is).
  A sorted segmented scan would be deterministic but measured ~85x (M=20k) to ~235x
  (M=400k) slower than segment_sum on CPU, so it was not adopted.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plgpu

from kernels_pallas import triton
from kernels_pallas.splat import common

F = common.NUM_FEATS


def _load_chunk(feats_ref, base, chunk):
    return [feats_ref[f, pl.ds(base, chunk)] for f in range(F)]


def _fwd_kernel(
    ranges_ref, feats_ref, r_ref, g_ref, b_ref, d_ref, t_ref, last_ref, *, tiles_x, tile_size, chunk
):
    tile = pl.program_id(0)
    start = ranges_ref[tile, 0]
    end = ranges_ref[tile, 1]
    px, py = common.tile_pixel_coords(tile, tiles_x, tile_size)
    num_pix = tile_size * tile_size
    num_chunks = (end - start + chunk - 1) // chunk
    lane = jax.lax.iota(jnp.int32, chunk)

    def cond(carry):
        i, trans, *_, done = carry
        return (i < num_chunks) & (jnp.min(done) < 1.0)

    def body(carry):
        i, trans, acc_r, acc_g, acc_b, acc_d, last, done = carry
        base = start + i * chunk
        idx = base + lane
        fc = _load_chunk(feats_ref, base, chunk)
        alpha, _, _, _, _ = common.chunk_alpha(fc, idx < end, px, py)
        log_om = jnp.log1p(-alpha)
        t_after = trans[None, :] * jnp.exp(jnp.cumsum(log_om, axis=0))
        contrib = (alpha > 0.0) & (t_after >= common.T_MIN) & (done[None, :] < 1.0)
        log_om = jnp.where(contrib, log_om, 0.0)
        cum = jnp.cumsum(log_om, axis=0)
        w = jnp.where(contrib, alpha * trans[None, :] * jnp.exp(cum - log_om), 0.0)
        acc_r += jnp.sum(w * fc[6][:, None], axis=0)
        acc_g += jnp.sum(w * fc[7][:, None], axis=0)
        acc_b += jnp.sum(w * fc[8][:, None], axis=0)
        acc_d += jnp.sum(w * fc[9][:, None], axis=0)
        last = jnp.maximum(last, jnp.max(jnp.where(contrib, idx[:, None] + 1, 0), axis=0))
        stopped = jnp.max(jnp.where((alpha > 0.0) & ~contrib, 1.0, 0.0), axis=0)
        done = jnp.maximum(done, stopped)
        trans = trans * jnp.exp(jnp.sum(log_om, axis=0))
        return i + 1, trans, acc_r, acc_g, acc_b, acc_d, last, done

    zeros = jnp.zeros((num_pix,), jnp.float32)
    init = (
        jnp.int32(0),
        zeros + 1.0,
        zeros,
        zeros,
        zeros,
        zeros,
        jnp.zeros((num_pix,), jnp.int32) + start,
        zeros,
    )
    _, trans, acc_r, acc_g, acc_b, acc_d, last, _ = jax.lax.while_loop(cond, body, init)
    r_ref[...] = acc_r
    g_ref[...] = acc_g
    b_ref[...] = acc_b
    d_ref[...] = acc_d
    t_ref[...] = trans
    last_ref[...] = last


def _bwd_kernel(
    ranges_ref,
    feats_ref,
    gr_ref,
    gg_ref,
    gb_ref,
    gd_ref,
    gt_ref,
    r_ref,
    g_ref,
    b_ref,
    d_ref,
    t_ref,
    last_ref,
    _zeros_ref,
    out_ref,
    *,
    tiles_x,
    tile_size,
    chunk,
):
    tile = pl.program_id(0)
    start = ranges_ref[tile, 0]
    end = ranges_ref[tile, 1]
    px, py = common.tile_pixel_coords(tile, tiles_x, tile_size)
    num_pix = tile_size * tile_size
    last = last_ref[...]
    stop = jnp.max(last)
    num_chunks = (stop - start + chunk - 1) // chunk
    lane = jax.lax.iota(jnp.int32, chunk)
    grad_c = (gr_ref[...], gg_ref[...], gb_ref[...], gd_ref[...])  # dL/d(r, g, b, depth)
    final_c = (r_ref[...], g_ref[...], b_ref[...], d_ref[...])
    grad_t = gt_ref[...]
    t_final = t_ref[...]

    def body(i, carry):
        trans, pre_r, pre_g, pre_b, pre_d = carry
        base = start + i * chunk
        idx = base + lane
        in_range = idx < end
        fc = _load_chunk(feats_ref, base, chunk)
        alpha, gauss, dx, dy, clamped = common.chunk_alpha(fc, in_range, px, py)
        contrib = (alpha > 0.0) & (idx[:, None] < last[None, :])
        log_om = jnp.where(contrib, jnp.log1p(-alpha), 0.0)
        cum = jnp.cumsum(log_om, axis=0)
        t_before = trans[None, :] * jnp.exp(cum - log_om)
        w = jnp.where(contrib, alpha * t_before, 0.0)
        inv_om = 1.0 / (1.0 - alpha)
        d_alpha = -grad_t[None, :] * t_final[None, :] * inv_om
        pre = (pre_r, pre_g, pre_b, pre_d)
        new_pre = []
        grads_c = []
        for ch in range(4):
            val = fc[6 + ch][:, None]
            cw = w * val
            suffix = final_c[ch][None, :] - (pre[ch][None, :] + jnp.cumsum(cw, axis=0))
            d_alpha += grad_c[ch][None, :] * (val * t_before - suffix * inv_om)
            grads_c.append(jnp.sum(grad_c[ch][None, :] * w, axis=1))
            new_pre.append(pre[ch] + jnp.sum(cw, axis=0))
        d_alpha = jnp.where(contrib, d_alpha, 0.0)
        d_alpha_raw = jnp.where(clamped, 0.0, d_alpha)
        d_opac = jnp.sum(d_alpha_raw * gauss, axis=1)
        d_power = d_alpha_raw * alpha
        ca, cb, cc = fc[2][:, None], fc[3][:, None], fc[4][:, None]
        rows = (
            jnp.sum(d_power * (ca * dx + cb * dy), axis=1),  # mean_x
            jnp.sum(d_power * (cc * dy + cb * dx), axis=1),  # mean_y
            jnp.sum(d_power * (-0.5 * dx * dx), axis=1),  # conic_a
            jnp.sum(d_power * (-dx * dy), axis=1),  # conic_b
            jnp.sum(d_power * (-0.5 * dy * dy), axis=1),  # conic_c
            d_opac,
            *grads_c,  # r, g, b, depth
        )
        for f in range(F):
            plgpu.store(
                out_ref.at[pl.ds(f, 1), pl.ds(base, chunk)],
                rows[f][None, :],
                mask=in_range[None, :],
            )
        trans = trans * jnp.exp(jnp.sum(log_om, axis=0))
        return (trans, *new_pre)

    zeros = jnp.zeros((num_pix,), jnp.float32)
    jax.lax.fori_loop(0, num_chunks, body, (zeros + 1.0, zeros, zeros, zeros, zeros))


def _tile_spec(num_pix):
    return pl.BlockSpec((None, num_pix), lambda t: (t, 0))


def _any_spec():
    # The whole array, indexed inside the kernel (in Triton: a pointer into global memory).
    return pl.no_block_spec


def _forward(feats, tile_ranges, *, num_tiles, tiles_x, tile_size, chunk, interpret, num_warps):
    num_pix = tile_size * tile_size
    kernel = functools.partial(_fwd_kernel, tiles_x=tiles_x, tile_size=tile_size, chunk=chunk)
    f32 = jax.ShapeDtypeStruct((num_tiles, num_pix), jnp.float32)
    i32 = jax.ShapeDtypeStruct((num_tiles, num_pix), jnp.int32)
    return triton.pallas_call(
        kernel,
        num_warps=num_warps,
        num_stages=1,
        grid=(num_tiles,),
        in_specs=[_any_spec(), _any_spec()],
        out_specs=[_tile_spec(num_pix)] * 6,
        out_shape=[f32] * 5 + [i32],
        interpret=interpret,
        name="splat_rasterize_fwd",
    )(tile_ranges, feats)


def _backward(
    feats,
    tile_ranges,
    cotangents,
    residuals,
    *,
    num_tiles,
    tiles_x,
    tile_size,
    chunk,
    interpret,
    num_warps,
):
    num_pix = tile_size * tile_size
    kernel = functools.partial(_bwd_kernel, tiles_x=tiles_x, tile_size=tile_size, chunk=chunk)
    zeros = jnp.zeros_like(feats)
    return triton.pallas_call(
        kernel,
        num_warps=num_warps,
        num_stages=1,
        grid=(num_tiles,),
        in_specs=[_any_spec(), _any_spec()] + [_tile_spec(num_pix)] * 11 + [_any_spec()],
        out_specs=_any_spec(),
        out_shape=jax.ShapeDtypeStruct(feats.shape, jnp.float32),
        input_output_aliases={13: 0},  # unwritten columns (past a tile's last contributor) = 0
        interpret=interpret,
        name="splat_rasterize_bwd",
    )(tile_ranges, feats, *cotangents, *residuals, zeros)


@functools.cache
def _make_rasterize(width, height, tile_size, chunk, interpret, num_warps):
    tiles_x = -(-width // tile_size)
    tiles_y = -(-height // tile_size)
    num_tiles = tiles_x * tiles_y
    static = dict(
        num_tiles=num_tiles,
        tiles_x=tiles_x,
        tile_size=tile_size,
        chunk=chunk,
        interpret=interpret,
        num_warps=num_warps,
    )

    def gather(gauss_ids, feats_n):
        sorted_feats = feats_n[:, gauss_ids]  # [F, M]; id N is the transparent padding column
        return jnp.pad(sorted_feats, ((0, 0), (0, chunk)))

    def fwd_tiles(means2d, conics, colors, opacities, depths, gauss_ids, tile_ranges):
        feats_n = common.pack_features(means2d, conics, colors, opacities, depths)
        feats = gather(gauss_ids, feats_n)
        outs = _forward(feats, tile_ranges, **static)
        return outs, feats

    @jax.custom_vjp
    def rasterize_tiles(means2d, conics, colors, opacities, depths, gauss_ids, tile_ranges):
        (r, g, b, d, t, _), _ = fwd_tiles(
            means2d, conics, colors, opacities, depths, gauss_ids, tile_ranges
        )
        return r, g, b, d, t

    def vjp_fwd(means2d, conics, colors, opacities, depths, gauss_ids, tile_ranges):
        outs, feats = fwd_tiles(means2d, conics, colors, opacities, depths, gauss_ids, tile_ranges)
        return outs[:5], (feats, gauss_ids, tile_ranges, outs, jnp.zeros((means2d.shape[0], 0)))

    def vjp_bwd(res, cts):
        feats, gauss_ids, tile_ranges, outs, n_marker = res
        n = n_marker.shape[0]
        rows = _backward(feats, tile_ranges, cts, outs, **static)
        rows = rows[:, : gauss_ids.shape[0]]
        per_gauss = jax.ops.segment_sum(rows.T, gauss_ids, num_segments=n + 1)[:n].T
        means2d, conics, colors, opacities, depths = common.unpack_features(per_gauss)
        return means2d, conics, colors, opacities, depths, None, None

    rasterize_tiles.defvjp(vjp_fwd, vjp_bwd)

    def rasterize(means2d, conics, colors, opacities, depths, gauss_ids, tile_ranges):
        r, g, b, d, t = rasterize_tiles(
            means2d, conics, colors, opacities, depths, gauss_ids, tile_ranges
        )
        to_img = lambda x: common.tiles_to_image(x, tiles_x, tiles_y, tile_size, width, height)
        return to_img(jnp.stack([r, g, b], -1)), to_img(d), to_img(t)

    return rasterize


def rasterize(
    means2d: jax.Array,
    conics: jax.Array,
    colors: jax.Array,
    opacities: jax.Array,
    depths: jax.Array,
    gauss_ids: jax.Array,
    tile_ranges: jax.Array,
    *,
    width: int,
    height: int,
    tile_size: int = 16,
    chunk: int = 32,
    max_per_tile: int | None = None,
    interpret: bool = False,
    num_warps: int = 8,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Returns (rgb [H, W, 3], depth [H, W], transmittance [H, W]); see `reference.rasterize`.
    Like the reference, each tile composites only the first `max_per_tile` entries of its
    sorted range (None: all); the kernels walk the capped ranges, forward and backward."""
    tile_ranges = common.cap_ranges(tile_ranges.astype(jnp.int32), max_per_tile)
    fn = _make_rasterize(width, height, tile_size, chunk, bool(interpret), num_warps)
    return fn(
        means2d,
        conics,
        colors,
        opacities,
        depths,
        gauss_ids.astype(jnp.int32),
        tile_ranges,
    )
