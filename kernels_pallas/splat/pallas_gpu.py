"""Pallas GPU tile rasteriser, forward and backward, wired with `jax.custom_vjp`.

Written against JAX 0.10.2 for the Pallas **Triton lowering** (`jax.experimental.pallas` +
`pallas.triton`), which runs on A100 and H100 (Mosaic GPU would be Hopper-only); both calls go
through `kernels_pallas.triton.pallas_call`, which pins the Triton backend.
Status: the per-tile kernels have run compiled on one H200 (jax 0.11.2; docs/gpu_results.md).
The batched (view, tile) grid and the work-item schedule (`work_item_size`, with its pass-1
kernel) have only run in interpret mode on CPU, where they match `reference.py` in values and
gradients (tests/kernels_pallas/splat/test_views_and_work_items.py), and lower through the
Pallas Triton lowering to Triton IR for CUDA (`jax.export` with platforms=["cuda"],
test_triton_lowering.py); they have not been compiled to PTX, run or timed on a GPU yet
(`python benchmarks/splat.py --schedule-only` is that check).

Design (one program per 16×16 tile, or per work item of a tile; the 256 pixels vectorised
inside the program):
- Views: `rasterize_views` takes V views (leading axis on every input). XLA concatenates the
  views' sorted intersection lists (view v's at offset v·M, its Gaussians' feature columns at
  v·(N + 1)) and gathers the features into one feature-major table `feats [10, V·M + chunk]`
  (Pallas has no gather; the `chunk` zero columns let the last chunk read past the end). Each
  pass is one `pallas_call` whose 1-D grid covers every (view, tile) — or every work item —
  of the batch; a program reads its row (global tile v·T + t, start, end) of `items [K, 3]`.
  `rasterize` is the V = 1 case.
- Forward per program: walk [start, end) in chunks of `chunk` Gaussians loaded with `pl.ds`,
  computing α for a [chunk, 256] block at once; transmittance inside a chunk is
  exp(cumsum(log(1−α))) (Triton supports a forward cumsum), and the loop is a `while_loop`
  that exits as soon as every pixel is saturated (T < 1e-4). Saves per pixel: accumulated
  rgb and depth, T after the program's range and the last contributor (one past its position
  in the sorted list).
- Work items (`work_item_size=S`, a multiple of `chunk`; None: one program per tile): XLA
  splits every tile's range into items of ≤ S entries (`work_list`, static length
  `max_work_items`). Pass 1 (`_trans_kernel`) gives each item's Π(1 − α) over its entries
  with α > 0; a segmented exclusive product over each tile's items is the T an item starts
  from. The transmittance before termination is that running product, so an item arriving
  with T < 1e-4 was cut off by an earlier one and adds nothing, and the item in which T
  crosses 1e-4 stops there by the usual rule: pass 2 (the forward kernel started from the
  item's T) reproduces the per-tile result exactly, up to float rounding of the product
  (tests: test_views_and_work_items.py). A tile's colour is the sum of its items' colours;
  its final T the T after its last item that arrived at or above 1e-4.
- Backward (its own kernel: autodiff through `pallas_call` is not supported) recomputes each
  chunk front to back up to the program's last contributor. The suffix colour Σ_{j>i} c_j w_j
  is the colour from the program's first entry on minus the running prefix (the tile's final
  colour for a per-tile program; for an item, a suffix sum over the tile's items computed in
  XLA), so T never has to be recovered by division (the only divisions are by 1−α ≥ 0.01).
  This is the same math as the 3DGS back-to-front pass, in the order Triton can vectorise
  (it has no reverse cumsum). Each intersection's gradient row (10 numbers) is written to its
  own column of an output buffer (masked stores, no atomics in the kernel);
  `jax.ops.segment_sum` by (view, Gaussian) sums them in XLA. That scatter-add may use
  atomics on GPU, so the per-Gaussian float summation order, hence the gradient's last bits,
  is not guaranteed reproducible from run to run there (on CPU it is). A sorted segmented
  scan would be deterministic but measured ~85x (M=20k) to ~235x (M=400k) slower than
  segment_sum on CPU, so it was not adopted.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plgpu

from kernels_pallas import triton
from kernels_pallas.splat import common

F = common.NUM_FEATS


def _load_chunk(feats_ref, base, chunk):
    return [feats_ref[f, pl.ds(base, chunk)] for f in range(F)]


def _item(items_ref, tiles_per_view, tiles_x, tile_size):
    """(start, end, px, py) of this program's work item: row `program_id` of `items [K, 3]` =
    (global tile v·T + t, start, end) into the concatenated sorted intersection list."""
    item = pl.program_id(0)
    tile = items_ref[item, 0] % tiles_per_view
    px, py = common.tile_pixel_coords(tile, tiles_x, tile_size)
    return items_ref[item, 1], items_ref[item, 2], px, py


def _fwd_kernel(items_ref, feats_ref, *refs, tiles_per_view, tiles_x, tile_size, chunk, has_t_in):
    if has_t_in:
        t_in_ref, *refs = refs
    r_ref, g_ref, b_ref, d_ref, t_ref, last_ref = refs
    start, end, px, py = _item(items_ref, tiles_per_view, tiles_x, tile_size)
    num_pix = tile_size * tile_size
    num_chunks = (end - start + chunk - 1) // chunk
    lane = jax.lax.iota(jnp.int32, chunk)
    zeros = jnp.zeros((num_pix,), jnp.float32)
    # A work item starts from its incoming transmittance (1 for a tile's first item); one that
    # arrives below T_MIN was cut off by an earlier item and adds nothing.
    trans0 = t_in_ref[...] if has_t_in else zeros + 1.0
    done0 = jnp.where(trans0 < common.T_MIN, 1.0, 0.0)

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

    init = (
        jnp.int32(0),
        trans0,
        zeros,
        zeros,
        zeros,
        zeros,
        jnp.zeros((num_pix,), jnp.int32) + start,
        done0,
    )
    _, trans, acc_r, acc_g, acc_b, acc_d, last, _ = jax.lax.while_loop(cond, body, init)
    r_ref[...] = acc_r
    g_ref[...] = acc_g
    b_ref[...] = acc_b
    d_ref[...] = acc_d
    t_ref[...] = trans
    last_ref[...] = last


def _trans_kernel(items_ref, feats_ref, p_ref, *, tiles_per_view, tiles_x, tile_size, chunk):
    """Pass 1 of the work-item schedule: Π(1 − α) over the item's entries with α > 0, no
    early termination (exits once every pixel's product is below T_MIN: the items after it
    then arrive below T_MIN whatever the exact value)."""
    start, end, px, py = _item(items_ref, tiles_per_view, tiles_x, tile_size)
    num_chunks = (end - start + chunk - 1) // chunk
    lane = jax.lax.iota(jnp.int32, chunk)

    def cond(carry):
        i, trans = carry
        return (i < num_chunks) & (jnp.max(trans) >= common.T_MIN)

    def body(carry):
        i, trans = carry
        base = start + i * chunk
        fc = _load_chunk(feats_ref, base, chunk)
        alpha, _, _, _, _ = common.chunk_alpha(fc, base + lane < end, px, py)
        return i + 1, trans * jnp.exp(jnp.sum(jnp.log1p(-alpha), axis=0))

    init = (jnp.int32(0), jnp.ones((tile_size * tile_size,), jnp.float32))
    _, trans = jax.lax.while_loop(cond, body, init)
    p_ref[...] = trans


def _bwd_kernel(items_ref, feats_ref, *refs, tiles_per_view, tiles_x, tile_size, chunk, has_t_in):
    if has_t_in:
        t_in_ref, *refs = refs
    (gr_ref, gg_ref, gb_ref, gd_ref, gt_ref, r_ref, g_ref, b_ref, d_ref, t_ref, last_ref,
     _zeros_ref, out_ref) = refs  # fmt: skip
    start, end, px, py = _item(items_ref, tiles_per_view, tiles_x, tile_size)
    num_pix = tile_size * tile_size
    last = last_ref[...]
    stop = jnp.max(last)
    num_chunks = (stop - start + chunk - 1) // chunk
    lane = jax.lax.iota(jnp.int32, chunk)
    grad_c = (gr_ref[...], gg_ref[...], gb_ref[...], gd_ref[...])  # dL/d(r, g, b, depth)
    # Colour (and depth) composited from this item's first entry to the tile's end: the
    # tile's final colour for a per-tile program, the suffix sum over items otherwise.
    final_c = (r_ref[...], g_ref[...], b_ref[...], d_ref[...])
    grad_t = gt_ref[...]
    t_final = t_ref[...]  # the tile's final transmittance

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
    trans0 = t_in_ref[...] if has_t_in else zeros + 1.0
    jax.lax.fori_loop(0, num_chunks, body, (trans0, zeros, zeros, zeros, zeros))


def _item_spec(num_pix):
    return pl.BlockSpec((None, num_pix), lambda k: (k, 0))


def _any_spec():
    # The whole array, indexed inside the kernel (in Triton: a pointer into global memory).
    return pl.no_block_spec


def _call(kernel, name, items, feats, blocked, out_shape, out_specs, static, **kwargs):
    num_pix = static["tile_size"] ** 2
    return triton.pallas_call(
        functools.partial(kernel, **{k: static[k] for k in KERNEL_STATIC}, **kwargs),
        num_warps=static["num_warps"],
        num_stages=1,
        grid=(items.shape[0],),
        in_specs=[_any_spec(), _any_spec()] + [_item_spec(num_pix)] * len(blocked),
        out_specs=out_specs,
        out_shape=out_shape,
        interpret=static["interpret"],
        name=name,
    )(items, feats, *blocked)


KERNEL_STATIC = ("tiles_per_view", "tiles_x", "tile_size", "chunk")


def _forward(feats, items, t_in, static):
    """Per item [K, P]: (r, g, b, depth, T after the item, last contributor + 1)."""
    num_items, num_pix = items.shape[0], static["tile_size"] ** 2
    f32 = jax.ShapeDtypeStruct((num_items, num_pix), jnp.float32)
    i32 = jax.ShapeDtypeStruct((num_items, num_pix), jnp.int32)
    blocked = [] if t_in is None else [t_in]
    return _call(
        _fwd_kernel, "splat_rasterize_fwd", items, feats, blocked, [f32] * 5 + [i32],
        [_item_spec(num_pix)] * 6, static, has_t_in=t_in is not None,
    )  # fmt: skip


def _item_transmittance(feats, items, static):
    """Pass 1 of the work-item schedule: [K, P] Π(1 − α) over each item (no termination)."""
    num_items, num_pix = items.shape[0], static["tile_size"] ** 2
    f32 = jax.ShapeDtypeStruct((num_items, num_pix), jnp.float32)
    return _call(
        _trans_kernel, "splat_rasterize_item_trans", items, feats, [], f32,
        _item_spec(num_pix), static,
    )  # fmt: skip


def _backward(feats, items, t_in, per_item, static):
    """Gradient rows [F, M + chunk], one column per intersection. `per_item`: 11 [K, P]
    arrays (cotangents r, g, b, depth, T; colour from the item on r, g, b, depth; the tile's
    final T; last contributor + 1)."""
    zeros = jnp.zeros_like(feats)
    blocked = ([] if t_in is None else [t_in]) + list(per_item)
    num_pix = static["tile_size"] ** 2
    kernel = functools.partial(
        _bwd_kernel, **{k: static[k] for k in KERNEL_STATIC}, has_t_in=t_in is not None
    )
    return triton.pallas_call(
        kernel,
        num_warps=static["num_warps"],
        num_stages=1,
        grid=(items.shape[0],),
        in_specs=[_any_spec(), _any_spec()] + [_item_spec(num_pix)] * len(blocked) + [_any_spec()],
        out_specs=_any_spec(),
        out_shape=jax.ShapeDtypeStruct(feats.shape, jnp.float32),
        # Unwritten columns (past an item's last contributor) stay 0.
        input_output_aliases={2 + len(blocked): 0},
        interpret=static["interpret"],
        name="splat_rasterize_bwd",
    )(items, feats, *blocked, zeros)


def _segmented_cumsum(x, first):
    """Inclusive cumulative sum of x [K, ...] along axis 0, restarting where `first` [K]."""
    flag = first.reshape((-1,) + (1,) * (x.ndim - 1))

    def combine(a, b):
        (xa, fa), (xb, fb) = a, b
        return jnp.where(fb, xb, xa + xb), fa | fb

    return jax.lax.associative_scan(combine, (x, jnp.broadcast_to(flag, x.shape)))[0]


def _segmented_cumprod(x, first):
    flag = first.reshape((-1,) + (1,) * (x.ndim - 1))

    def combine(a, b):
        (xa, fa), (xb, fb) = a, b
        return jnp.where(fb, xb, xa * xb), fa | fb

    return jax.lax.associative_scan(combine, (x, jnp.broadcast_to(flag, x.shape)))[0]


class WorkList(NamedTuple):
    items: jax.Array  # [K, 3] int32 (global tile v·T + t, start, end); padding: (0, 0, 0)
    tile: jax.Array  # [K] int32 global tile of each item; num_tiles for padding items
    first: jax.Array  # [K] bool: the item is its tile's first
    last: jax.Array  # [K] bool: the item is its tile's last
    count: jax.Array  # [] int32 items in use


def max_work_items(num_tiles: int, num_slots: int, work_item_size: int) -> int:
    """Static length of the work list: every tile has ≥ 1 item and
    Σ_t max(1, ⌈len_t / S⌉) ≤ num_tiles + ⌊Σ_t len_t / S⌋ ≤ num_tiles + ⌊slots / S⌋."""
    return num_tiles + num_slots // work_item_size


def work_list(tile_ranges: jax.Array, num_slots: int, work_item_size: int) -> WorkList:
    """Splits each tile's [start, end) of `tile_ranges [num_tiles, 2]` (all views' tiles, in
    order) into items of at most `work_item_size` entries (≥ 1 item per tile, empty tiles
    included), in XLA, with a static length (`max_work_items`)."""
    num_tiles = tile_ranges.shape[0]
    size = work_item_size
    starts, ends = tile_ranges[:, 0], tile_ranges[:, 1]
    n_items = jnp.maximum(1, (ends - starts + size - 1) // size)
    incl = jnp.cumsum(n_items)
    excl = incl - n_items
    k = jnp.arange(max_work_items(num_tiles, num_slots, size), dtype=jnp.int32)
    tile = jnp.searchsorted(incl, k, side="right").astype(jnp.int32)  # num_tiles: padding
    used = tile < num_tiles
    t = jnp.minimum(tile, num_tiles - 1)
    j = k - excl[t]
    start = jnp.where(used, starts[t] + j * size, 0)
    end = jnp.where(used, jnp.minimum(start + size, ends[t]), 0)
    items = jnp.stack([jnp.where(used, t, 0), start, end], -1).astype(jnp.int32)
    return WorkList(
        items=items,
        tile=tile,
        first=used & (j == 0),
        last=used & (j == n_items[t] - 1),
        count=incl[-1].astype(jnp.int32),
    )


def _item_forward(feats, ranges, static):
    """The work-item schedule, forward. Returns the per-tile outputs [num_tiles, P] (r, g, b,
    depth, T) and what the backward needs."""
    num_tiles = ranges.shape[0]
    wl = work_list(ranges, feats.shape[1] - static["chunk"], static["work_item_size"])
    # Pass 1: each item's Π(1 − α); an exclusive product over the tile's earlier items is the
    # transmittance the item starts from (the global rule: an item arriving below T_MIN was
    # cut off before it; the first item that crosses T_MIN stops inside itself in pass 2).
    # A tile's last item feeds no later item: pass 1 skips it (an empty range, product 1), so
    # tiles that fit in one item cost pass 1 nothing.
    skip_last = jnp.where(wl.last, wl.items[:, 1], wl.items[:, 2])
    prod = _item_transmittance(feats, wl.items.at[:, 2].set(skip_last), static)
    incl = _segmented_cumprod(prod, wl.first)
    t_in = jnp.where(wl.first[:, None], 1.0, jnp.concatenate([jnp.ones_like(incl[:1]), incl[:-1]]))
    # Pass 2: every item composites from its incoming T.
    r, g, b, d, t_out, last = _forward(feats, wl.items, t_in, static)
    seg = functools.partial(
        jax.ops.segment_sum, segment_ids=wl.tile, num_segments=num_tiles + 1,
        indices_are_sorted=True,
    )  # fmt: skip
    # The tile's final T is the T after its last item that arrived at or above T_MIN.
    active = t_in >= common.T_MIN
    next_active = jnp.concatenate([active[1:], jnp.zeros_like(active[:1])])
    final = active & ~(next_active & ~wl.last[:, None])
    t_final = seg(jnp.where(final, t_out, 0.0))[:num_tiles]
    colours = [seg(x)[:num_tiles] for x in (r, g, b, d)]
    return (*colours, t_final), (wl, t_in, (r, g, b, d), last)


def _item_backward_inputs(cts, t_final, wl, partials, last):
    """Per-item [K, P] inputs of the backward kernel: the tile's cotangents, the colour from
    the item to the tile's end (a suffix sum over the tile's items), the tile's final T."""
    tile = jnp.minimum(wl.tile, t_final.shape[0] - 1)
    suffix = [
        jnp.flip(_segmented_cumsum(jnp.flip(p, 0), jnp.flip(wl.last, 0)), 0) for p in partials
    ]
    return [ct[tile] for ct in cts] + suffix + [t_final[tile], last]


@functools.cache
def _make_rasterize(width, height, tile_size, chunk, interpret, num_warps, work_item_size):
    tiles_x = -(-width // tile_size)
    tiles_y = -(-height // tile_size)
    tiles_per_view = tiles_x * tiles_y
    static = dict(
        tiles_per_view=tiles_per_view,
        tiles_x=tiles_x,
        tile_size=tile_size,
        chunk=chunk,
        interpret=interpret,
        num_warps=num_warps,
        work_item_size=work_item_size,
    )

    def flatten(means2d, conics, colors, opacities, depths, gauss_ids, tile_ranges):
        """All views' sorted features in one table [F, V·M + chunk] and all views' tiles as
        one list of ranges [V·T, 2] into it (view v's entries at offset v·M)."""
        v, n = means2d.shape[:2]
        m = gauss_ids.shape[1]
        feats_n = jax.vmap(common.pack_features)(means2d, conics, colors, opacities, depths)
        feats_n = jnp.moveaxis(feats_n, 0, 1).reshape(F, v * (n + 1))  # view v at v·(N + 1)
        flat_ids = (gauss_ids + (n + 1) * jnp.arange(v, dtype=jnp.int32)[:, None]).reshape(-1)
        feats = jnp.pad(feats_n[:, flat_ids], ((0, 0), (0, chunk)))
        offsets = m * jnp.arange(v, dtype=jnp.int32)[:, None, None]
        return feats, flat_ids, (tile_ranges + offsets).reshape(-1, 2)

    def tile_items(ranges):
        num_tiles = ranges.shape[0]
        return jnp.concatenate([jnp.arange(num_tiles, dtype=jnp.int32)[:, None], ranges], 1)

    def fwd_tiles(*args):
        feats, flat_ids, ranges = flatten(*args)
        if work_item_size is None:  # one program per tile
            outs = _forward(feats, tile_items(ranges), None, static)
            return outs[:5], (feats, flat_ids, ranges, outs)
        outs, extra = _item_forward(feats, ranges, static)
        return outs, (feats, flat_ids, ranges, (outs, extra))

    @jax.custom_vjp
    def rasterize_tiles(*args):
        return fwd_tiles(*args)[0]

    def vjp_fwd(*args):
        outs, res = fwd_tiles(*args)
        n_marker = jnp.zeros(args[0].shape[:2] + (0,))  # static (V, N) for the backward
        return outs, (res, n_marker)

    def vjp_bwd(res, cts):
        (feats, flat_ids, ranges, saved), n_marker = res
        v, n = n_marker.shape[:2]
        if work_item_size is None:
            rows = _backward(feats, tile_items(ranges), None, (*cts, *saved), static)
        else:
            outs, (wl, t_in, partials, last) = saved
            per_item = _item_backward_inputs(cts, outs[4], wl, partials, last)
            rows = _backward(feats, wl.items, t_in, per_item, static)
        rows = rows[:, : flat_ids.shape[0]]
        per_gauss = jax.ops.segment_sum(rows.T, flat_ids, num_segments=v * (n + 1))
        per_gauss = per_gauss.reshape(v, n + 1, F)[:, :n]
        unpack = lambda x: common.unpack_features(x.T)
        means2d, conics, colors, opacities, depths = jax.vmap(unpack)(per_gauss)
        return means2d, conics, colors, opacities, depths, None, None

    rasterize_tiles.defvjp(vjp_fwd, vjp_bwd)

    def rasterize(*args):
        v = args[0].shape[0]
        r, g, b, d, t = rasterize_tiles(*args)
        to_img = jax.vmap(
            lambda x: common.tiles_to_image(x, tiles_x, tiles_y, tile_size, width, height)
        )
        views = lambda x: x.reshape((v, tiles_per_view) + x.shape[1:])
        return (
            to_img(views(jnp.stack([r, g, b], -1))),
            to_img(views(d)),
            to_img(views(t)),
        )

    return rasterize


def rasterize_views(
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
    work_item_size: int | None = None,
    interpret: bool = False,
    num_warps: int = 8,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """V views in one `pallas_call` per pass: every argument has a leading view axis
    (means2d [V, N, 2], ..., gauss_ids [V, M], tile_ranges [V, T, 2]); returns (rgb
    [V, H, W, 3], depth [V, H, W], transmittance [V, H, W]), each view as `rasterize` would.
    `work_item_size` None: one program per (view, tile); an int (a multiple of `chunk`): one
    program per work item of at most that many entries of a tile, merged exactly."""
    work_item_size = common.check_work_item_size(work_item_size, chunk)
    tile_ranges = jax.vmap(lambda r: common.cap_ranges(r, max_per_tile))(
        tile_ranges.astype(jnp.int32)
    )
    fn = _make_rasterize(
        width, height, tile_size, chunk, bool(interpret), num_warps, work_item_size
    )
    return fn(means2d, conics, colors, opacities, depths, gauss_ids.astype(jnp.int32), tile_ranges)


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
    work_item_size: int | None = None,
    interpret: bool = False,
    num_warps: int = 8,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Returns (rgb [H, W, 3], depth [H, W], transmittance [H, W]); see `reference.rasterize`.
    Like the reference, each tile composites only the first `max_per_tile` entries of its
    sorted range (None: all); the kernels walk the capped ranges, forward and backward.
    One view of `rasterize_views`."""
    outs = rasterize_views(
        *(x[None] for x in (means2d, conics, colors, opacities, depths, gauss_ids, tile_ranges)),
        width=width,
        height=height,
        tile_size=tile_size,
        chunk=chunk,
        max_per_tile=max_per_tile,
        work_item_size=work_item_size,
        interpret=interpret,
        num_warps=num_warps,
    )
    return tuple(x[0] for x in outs)
