"""Shared pieces of both rasterisers: constants, feature packing and tile <-> image layout.

Both rasterisers see the intersections in sorted order as a feature-major table
`feats [NUM_FEATS, M]` (one column per intersection, gathered in XLA: Pallas has no gather).
Row order is fixed by `FEATS`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

ALPHA_MIN = 1.0 / 255.0
ALPHA_MAX = 0.99
T_MIN = 1e-4  # stop once transmittance would fall below this (that Gaussian is not added)
FEATS = ("mean_x", "mean_y", "conic_a", "conic_b", "conic_c", "opacity", "r", "g", "b", "depth")
NUM_FEATS = len(FEATS)


def pack_features(means2d, conics, colors, opacities, depths) -> jax.Array:
    """[NUM_FEATS, N + 1]; the extra last column is a transparent Gaussian for empty slots."""
    feats = jnp.concatenate(
        [means2d.T, conics.T, opacities[None], colors.T, depths[None]], axis=0
    ).astype(jnp.float32)
    return jnp.pad(feats, ((0, 0), (0, 1)))


def unpack_features(feats: jax.Array):
    """Inverse of `pack_features` without the padding column: the five per-Gaussian arrays."""
    return feats[0:2].T, feats[2:5].T, feats[6:9].T, feats[5], feats[9]


def cap_ranges(tile_ranges: jax.Array, max_per_tile: int | None) -> jax.Array:
    """Per-tile [start, end) cut to the first `max_per_tile` entries (None: unchanged): the
    `max_per_tile` contract of both rasterisers (the reference scans that many, the kernel
    walks the capped range)."""
    if max_per_tile is None:
        return tile_ranges
    starts, ends = tile_ranges[:, 0], tile_ranges[:, 1]
    return jnp.stack([starts, jnp.minimum(ends, starts + max_per_tile)], -1)


def tile_overflow(tile_ranges: jax.Array, max_per_tile: int | None) -> jax.Array:
    """[] int32: intersections the `max_per_tile` cap drops (0 when None), the same for both
    rasterisers."""
    if max_per_tile is None:
        return jnp.int32(0)
    counts = tile_ranges[:, 1] - tile_ranges[:, 0]
    return jnp.sum(jnp.maximum(counts - max_per_tile, 0)).astype(jnp.int32)


def check_work_item_size(work_item_size: int | None, chunk: int) -> int | None:
    """None (one program per tile) or a positive multiple of `chunk`; a ValueError otherwise."""
    if work_item_size is None:
        return None
    if int(work_item_size) <= 0 or int(work_item_size) % chunk:
        raise ValueError(
            f"work_item_size must be None or a positive multiple of chunk={chunk}, got "
            f"{work_item_size}"
        )
    return int(work_item_size)


def tile_pixel_coords(tile: jax.Array, tiles_x: int, tile_size: int):
    """Pixel-centre coordinates (x, y), each [tile_size²], of the pixels of `tile`."""
    p = jax.lax.iota(jnp.int32, tile_size * tile_size)
    tx = tile % tiles_x
    ty = tile // tiles_x
    px = (tx * tile_size + p % tile_size).astype(jnp.float32) + 0.5
    py = (ty * tile_size + p // tile_size).astype(jnp.float32) + 0.5
    return px, py


def tiles_to_image(
    x: jax.Array, tiles_x: int, tiles_y: int, tile_size: int, width: int, height: int
) -> jax.Array:
    """[T, P, ...] per-tile pixels -> [H, W, ...] cropped image."""
    rest = x.shape[2:]
    x = x.reshape((tiles_y, tiles_x, tile_size, tile_size) + rest)
    x = jnp.moveaxis(x, 2, 1)  # [ty, ts_y, tx, ts_x, ...]
    x = x.reshape((tiles_y * tile_size, tiles_x * tile_size) + rest)
    return x[:height, :width]


def image_to_tiles(x: jax.Array, tiles_x: int, tiles_y: int, tile_size: int) -> jax.Array:
    """[H, W, ...] -> [T, P, ...] (zero padding to whole tiles); inverse of `tiles_to_image`."""
    h, w = x.shape[:2]
    rest = x.shape[2:]
    pad = ((0, tiles_y * tile_size - h), (0, tiles_x * tile_size - w)) + ((0, 0),) * len(rest)
    x = jnp.pad(x, pad)
    x = x.reshape((tiles_y, tile_size, tiles_x, tile_size) + rest)
    x = jnp.moveaxis(x, 1, 2)
    return x.reshape((tiles_y * tiles_x, tile_size * tile_size) + rest)


def chunk_alpha(feats_chunk, in_range, px, py):
    """Alpha [B, P] of a chunk of B Gaussians at P pixels (0 where skipped) and the pieces
    needed by the backward: (alpha, gauss = e^power, dx, dy, clamped)."""
    mx, my, ca, cb, cc, op = (feats_chunk[i] for i in range(6))
    dx = px[None, :] - mx[:, None]
    dy = py[None, :] - my[:, None]
    power = -0.5 * (ca[:, None] * dx * dx + cc[:, None] * dy * dy) - cb[:, None] * dx * dy
    gauss = jnp.exp(jnp.minimum(power, 0.0))
    raw = op[:, None] * gauss
    alpha = jnp.minimum(raw, ALPHA_MAX)
    keep = in_range[:, None] & (power <= 0.0) & (alpha >= ALPHA_MIN)
    alpha = jnp.where(keep, alpha, 0.0)
    return alpha, gauss, dx, dy, raw > ALPHA_MAX
