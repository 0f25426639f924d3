"""Dense compositor: screen-space Gaussians -> image with no binning, sorting buffer or kernel.

The tiled path (binning + `rasterize`) scales to 256² and 10⁶ Gaussians. At small sizes (the
CPU demo: 32-64², a few thousand Gaussians) it is faster to composite every Gaussian against
every pixel, or, per small tile, the `max_per_tile` nearest Gaussians whose extent touches it
(picked with `lax.top_k` on depth, so they come out front to back). Both are plain jnp with a
written backward (`_composite`, checked against its autodiff twin) and follow the rasteriser's
rules exactly (`common.ALPHA_MIN`, `ALPHA_MAX`, `T_MIN`): power > 0 and alpha < 1/255 skipped,
alpha clamped at 0.99, compositing stops before T < 1e-4. It takes the same per-Gaussian
arrays as the rasteriser (plus the extents), so `render(..., impl="dense")` differs from the
tiled renderer only in how pixels find their Gaussians.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from kernels_pallas.splat.common import ALPHA_MAX, ALPHA_MIN, T_MIN


def _cumsum_last(x, block: int = 16):
    """Inclusive cumsum over the last axis as two small triangular matmuls.

    XLA's CPU cumsum over K = 256 costs about twice this (and its transpose as much again);
    the within-block and block-offset sums are exact f32 (HIGHEST precision on GPU)."""
    *lead, k = x.shape
    if k % block or k <= block:
        return jnp.cumsum(x, axis=-1)
    hi = jax.lax.Precision.HIGHEST
    within = jnp.einsum(
        "...j,ij->...i",
        x.reshape(*lead, k // block, block),
        jnp.tril(jnp.ones((block, block), x.dtype)),
        precision=hi,
    )
    n = k // block
    offsets = jnp.einsum(
        "...j,ij->...i", within[..., -1], jnp.tril(jnp.ones((n, n), x.dtype), -1), precision=hi
    )
    return (within + offsets[..., None]).reshape(x.shape)


def _terms(px_u, px_v, means2d, conics, opacities, ok):
    """Per (pixel, Gaussian) compositing terms [..., P, K] shared by the forward and backward."""
    dx = px_u[..., :, None] - means2d[..., None, :, 0]
    dy = px_v[..., :, None] - means2d[..., None, :, 1]
    a, b, c = (conics[..., None, :, i] for i in range(3))
    power = -0.5 * (a * dx * dx + c * dy * dy) - b * dx * dy
    gauss = jnp.exp(jnp.minimum(power, 0.0))
    raw = opacities[..., None, :] * gauss
    alpha = jnp.minimum(ALPHA_MAX, raw)
    valid = (power <= 0.0) & ok[..., None, :] & (alpha >= ALPHA_MIN)
    alpha = jnp.where(valid, alpha, 0.0)
    log_keep = jnp.log1p(-alpha)
    log_t_incl = _cumsum_last(log_keep)
    # T only falls, so "stop before T < 1e-4" keeps a prefix of the depth order.
    use = log_t_incl >= jnp.log(T_MIN)
    t_excl = jnp.exp(log_t_incl - log_keep)
    weights = jnp.where(use, alpha * t_excl, 0.0)  # α·T_exclusive
    final_t = jnp.exp(jnp.sum(jnp.where(use, log_keep, 0.0), axis=-1))
    return dict(
        dx=dx, dy=dy, a=a, b=b, c=c, power=power, gauss=gauss, raw=raw, alpha=alpha,
        valid=valid, use=use, t_excl=t_excl, weights=weights, final_t=final_t,
    )  # fmt: skip


def _outputs(t, colors, depths):
    rgb = jnp.einsum("...pk,...kc->...pc", t["weights"], colors)
    depth = jnp.einsum("...pk,...k->...p", t["weights"], depths)
    return rgb, t["final_t"], depth


def _composite_autodiff(px_u, px_v, means2d, conics, colors, opacities, depths, ok):
    """Front-to-back over depth-sorted Gaussians [..., K] for pixels [..., P].

    Returns (rgb [..., P, 3] before background, T [..., P], Σ w·depth [..., P]). Differentiated
    by JAX autodiff: the twin that `_composite`'s written backward is tested against."""
    return _outputs(_terms(px_u, px_v, means2d, conics, opacities, ok), colors, depths)


# The same forward with its backward written out (the 3DGS rasteriser's gradient, with a
# suffix sum for the transmittance terms). The backward recomputes the pair terms instead of
# storing them, so it holds only the inputs; benchmarks/splat.py prints its speed ratio to
# `_composite_autodiff`.
_composite = jax.custom_vjp(_composite_autodiff)


def _composite_fwd(px_u, px_v, means2d, conics, colors, opacities, depths, ok):
    t = _terms(px_u, px_v, means2d, conics, opacities, ok)
    return _outputs(t, colors, depths), (px_u, px_v, means2d, conics, colors, opacities, depths, ok)


def _composite_bwd(res, cotangents):
    px_u, px_v, means2d, conics, colors, opacities, depths, ok = res
    g_rgb, g_t, g_depth = cotangents
    t = _terms(px_u, px_v, means2d, conics, opacities, ok)
    w, use = t["weights"], t["use"]
    # dL/dw for every pair, then dL/dlog(1-α_k): every later used Gaussian's w·dL/dw (their
    # T_exclusive contains 1-α_k) plus the final transmittance's share.
    e = (
        jnp.einsum("...pc,...kc->...pk", g_rgb, colors)
        + g_depth[..., :, None] * depths[..., None, :]
    )
    ew = e * w
    later = jnp.sum(ew, axis=-1, keepdims=True) - _cumsum_last(ew)
    g_log_keep = later + jnp.where(use, (g_t * t["final_t"])[..., :, None], 0.0)
    g_alpha = jnp.where(use, e * t["t_excl"], 0.0) - g_log_keep / (1.0 - t["alpha"])
    g_raw = jnp.where(t["valid"] & (t["raw"] < ALPHA_MAX), g_alpha, 0.0)
    g_opacities = jnp.sum(g_raw * t["gauss"], axis=-2)
    g_power = jnp.where(t["power"] < 0.0, g_raw * opacities[..., None, :] * t["gauss"], 0.0)
    dx, dy, a, b, c = t["dx"], t["dy"], t["a"], t["b"], t["c"]
    g_means = jnp.stack(
        [
            jnp.sum(g_power * (a * dx + b * dy), axis=-2),
            jnp.sum(g_power * (c * dy + b * dx), axis=-2),
        ],
        axis=-1,
    )
    g_conics = jnp.stack(
        [
            jnp.sum(g_power * (-0.5 * dx * dx), axis=-2),
            jnp.sum(g_power * (-dx * dy), axis=-2),
            jnp.sum(g_power * (-0.5 * dy * dy), axis=-2),
        ],
        axis=-1,
    )
    g_colors = jnp.einsum("...pk,...pc->...kc", w, g_rgb)
    g_depths = jnp.einsum("...pk,...p->...k", w, g_depth)
    return None, None, g_means, g_conics, g_colors, g_opacities, g_depths, None


_composite.defvjp(_composite_fwd, _composite_bwd)


def _tile_hits(means2d, radii, valid, width: int, height: int, tile_size: int):
    """[T, N] bool: Gaussian extent overlaps tile; plus tile origins x0, y0 [T, 1]."""
    ty, tx = jnp.meshgrid(
        jnp.arange(-(-height // tile_size)), jnp.arange(-(-width // tile_size)), indexing="ij"
    )
    x0 = (tx.reshape(-1) * tile_size)[:, None].astype(jnp.float32)
    y0 = (ty.reshape(-1) * tile_size)[:, None].astype(jnp.float32)
    u, v, r = means2d[None, :, 0], means2d[None, :, 1], radii[None]
    hits = (
        valid[None]
        & (u + r > x0)
        & (u - r < x0 + tile_size)
        & (v + r > y0)
        & (v - r < y0 + tile_size)
    )
    return jax.lax.stop_gradient(hits), x0, y0


def composite(
    means2d: jax.Array,
    conics: jax.Array,
    colors: jax.Array,
    opacities: jax.Array,
    depths: jax.Array,
    radii: jax.Array,
    valid: jax.Array,
    *,
    width: int,
    height: int,
    tile_size: int = 8,
    max_per_tile: int | None = None,
):
    """Gaussians [N] (means2d [N, 2] pixels, conics [N, 3], colors [N, 3], opacities [N],
    depths [N], radii [N] pixel extents, valid [N] bool) -> (rgb_acc [H, W, 3],
    depth_acc [H, W], T [H, W], intersections [], dropped [], per-tile counts [T] int32).

    max_per_tile=None: every Gaussian at every pixel (exact). An int: each tile composites its
    `max_per_tile` nearest overlapping Gaussians; `dropped` counts the (tile, Gaussian) pairs
    that did not fit (0 means the image equals the exact one up to float rounding).
    """
    if max_per_tile is not None and (height % tile_size or width % tile_size):
        raise ValueError(f"dense render: image {height}x{width} is not divisible by {tile_size}")
    hits, x0, y0 = _tile_hits(means2d, radii, valid, width, height, tile_size)
    intersections = jnp.sum(hits).astype(jnp.int32)
    tile_counts = jnp.sum(hits, axis=-1).astype(jnp.int32)
    if max_per_tile is None:
        order = jnp.argsort(jnp.where(valid, depths, jnp.inf))
        px_u, px_v = jnp.meshgrid(
            jnp.arange(width, dtype=jnp.float32) + 0.5,
            jnp.arange(height, dtype=jnp.float32) + 0.5,
            indexing="xy",
        )
        rgb, trans, depth = _composite(
            px_u.reshape(-1),
            px_v.reshape(-1),
            means2d[order],
            conics[order],
            colors[order],
            opacities[order],
            depths[order],
            valid[order],
        )
        return (
            rgb.reshape(height, width, 3),
            depth.reshape(height, width),
            trans.reshape(height, width),
            intersections,
            jnp.int32(0),
            tile_counts,
        )

    k = min(int(max_per_tile), depths.shape[0])
    score = jnp.where(hits, -depths[None], -jnp.inf)
    neg_depth, idx = jax.lax.top_k(jax.lax.stop_gradient(score), k)  # [T, K], nearest first
    dropped = jnp.sum(jnp.maximum(jnp.sum(hits, axis=-1) - k, 0)).astype(jnp.int32)
    offs = jnp.arange(tile_size, dtype=jnp.float32) + 0.5
    off_v, off_u = jnp.meshgrid(offs, offs, indexing="ij")
    rgb, trans, depth = _composite(
        x0 + off_u.reshape(1, -1),  # [T, P]
        y0 + off_v.reshape(1, -1),
        means2d[idx],
        conics[idx],
        colors[idx],
        opacities[idx],
        depths[idx],
        jnp.isfinite(neg_depth),
    )
    n_ty, n_tx = height // tile_size, width // tile_size

    def untile(x):  # [T, tile², ...] -> [H, W, ...]
        x = x.reshape(n_ty, n_tx, tile_size, tile_size, *x.shape[2:])
        return jnp.swapaxes(x, 1, 2).reshape(height, width, *x.shape[4:])

    return untile(rgb), untile(depth), untile(trans), intersections, dropped, tile_counts
