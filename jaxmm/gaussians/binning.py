"""Tile binning with static shapes: (Gaussian, tile) intersections sorted by (tile, depth).

Each valid Gaussian touches the 16×16 tiles overlapped by its square extent. Intersections are
enumerated into a buffer of static `capacity` (scatter + cummax maps slot k to its Gaussian, no
search), keyed by (tile id, camera depth) and ordered by one sort of a packed 64-bit key
`tile << 32 | order_bits(depth)` (`order_bits`: the float's bits made order-preserving, so full
float depth precision is kept) with the Gaussian id as the payload: `lax.sort(num_keys=1)`,
which XLA's GPU backend turns into a CUB radix sort of (u64 key, i32 value) pairs, where the
multi-operand (tile, depth) sort it replaces (`_sort_reference`) stays a comparison sort. The
sort is stable, so equal (tile, depth) keys keep slot order, i.e. ascending Gaussian id. 64-bit
integers exist only inside `_sort_packed` (a local `jax.enable_x64`); inputs and outputs stay
32-bit whatever the global x64 flag. Per-tile [start, end) ranges come from `searchsorted`.
Intersections past `capacity` are dropped and *counted* (`overflow`), never silently.
"""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp


@flax.struct.dataclass
class Binned:
    gauss_ids: jax.Array  # [capacity] int32, sorted by (tile, depth); N marks empty slots
    tile_ranges: jax.Array  # [num_tiles, 2] int32 [start, end) into gauss_ids
    num_intersections: jax.Array  # [] int32, requested (may exceed capacity)
    overflow: jax.Array  # [] int32, intersections dropped for lack of capacity
    max_per_tile: jax.Array  # [] int32, largest tile list kept


def tile_grid(width: int, height: int, tile_size: int = 16) -> tuple[int, int]:
    return -(-width // tile_size), -(-height // tile_size)


def bin_gaussians(
    means2d: jax.Array,
    radii: jax.Array,
    depths: jax.Array,
    valid: jax.Array,
    *,
    width: int,
    height: int,
    capacity: int,
    tile_size: int = 16,
) -> Binned:
    """Sorted intersections and per-tile ranges (no gradient: inputs are stop_gradient-ed)."""
    tiles_x, tiles_y = tile_grid(width, height, tile_size)
    tile_keys, depth_keys, ids, total = intersections(
        means2d,
        radii,
        depths,
        valid,
        width=width,
        height=height,
        capacity=capacity,
        tile_size=tile_size,
    )
    sorted_tiles, sorted_ids = _sort_packed(tile_keys, depth_keys, ids)
    return _bin_sorted(
        sorted_tiles, sorted_ids, total, num_tiles=tiles_x * tiles_y, capacity=capacity
    )


def intersections(
    means2d: jax.Array,
    radii: jax.Array,
    depths: jax.Array,
    valid: jax.Array,
    *,
    width: int,
    height: int,
    capacity: int,
    tile_size: int = 16,
):
    """Unsorted intersection buffer: (tile_keys [capacity] int32, depth_keys [capacity] f32,
    ids [capacity] int32, total [] int32). Slot k holds the k-th (Gaussian, tile) pair in
    Gaussian-id order; unused slots have tile num_tiles, depth +inf and id N."""
    n = means2d.shape[0]
    tiles_x, tiles_y = tile_grid(width, height, tile_size)
    num_tiles = tiles_x * tiles_y
    means2d = jax.lax.stop_gradient(means2d)
    radii = jax.lax.stop_gradient(radii)
    depths = jax.lax.stop_gradient(depths)

    u, v = means2d[:, 0], means2d[:, 1]
    x0 = jnp.clip(jnp.floor((u - radii) / tile_size), 0, tiles_x).astype(jnp.int32)
    x1 = jnp.clip(jnp.floor((u + radii) / tile_size) + 1, 0, tiles_x).astype(jnp.int32)
    y0 = jnp.clip(jnp.floor((v - radii) / tile_size), 0, tiles_y).astype(jnp.int32)
    y1 = jnp.clip(jnp.floor((v + radii) / tile_size) + 1, 0, tiles_y).astype(jnp.int32)
    span_x = jnp.maximum(x1 - x0, 0)
    counts = jnp.where(valid, span_x * jnp.maximum(y1 - y0, 0), 0)
    offsets_incl = jnp.cumsum(counts)
    offsets_excl = offsets_incl - counts
    total = offsets_incl[-1] if n > 0 else jnp.int32(0)

    # Slot k -> Gaussian: mark each Gaussian's first slot with its id, then a running max.
    gids = jnp.arange(n, dtype=jnp.int32)
    first_slot = jnp.where(counts > 0, offsets_excl, capacity)
    marker = jnp.zeros((capacity,), jnp.int32).at[first_slot].max(gids, mode="drop")
    slot_gauss = jax.lax.cummax(marker)
    slots = jnp.arange(capacity, dtype=jnp.int32)
    used = slots < total
    local = slots - offsets_excl[slot_gauss]
    width_g = jnp.maximum(span_x[slot_gauss], 1)
    tile_y = y0[slot_gauss] + local // width_g
    tile_x = x0[slot_gauss] + local % width_g
    tile_keys = jnp.where(used, tile_y * tiles_x + tile_x, num_tiles)
    depth_keys = jnp.where(used, depths[slot_gauss], jnp.inf)
    ids = jnp.where(used, slot_gauss, n)
    return tile_keys, depth_keys, ids, total


def order_bits(x: jax.Array) -> jax.Array:
    """float32 -> uint32 with the same order (IEEE total order: -inf < ... < -0 < +0 < ... <
    +inf): positive floats get the sign bit set, negative ones all bits flipped."""
    bits = jax.lax.bitcast_convert_type(x.astype(jnp.float32), jnp.uint32)
    negative = (bits >> 31) == 1
    return jnp.where(negative, ~bits, bits | jnp.uint32(0x80000000))


def _sort_packed(tile_keys, depth_keys, ids):
    """(sorted tile ids, sorted Gaussian ids), both int32: one stable sort of the packed key
    `tile << 32 | order_bits(depth)` (tile ids are >= 0) with `ids` as the payload."""
    lo = order_bits(depth_keys)
    with jax.enable_x64(True):
        key = (tile_keys.astype(jnp.uint64) << jnp.uint64(32)) | lo.astype(jnp.uint64)
        key, sorted_ids = jax.lax.sort((key, ids), num_keys=1, is_stable=True)
        sorted_tiles = (key >> jnp.uint64(32)).astype(jnp.int32)
    return sorted_tiles, sorted_ids.astype(jnp.int32)


def _sort_reference(tile_keys, depth_keys, ids):
    """The sort `_sort_packed` replaced (kept for tests and `benchmarks/splat.py`): one
    multi-operand comparison sort on (tile, depth). Not stable: ties in (tile, depth) come
    out in an XLA-defined order."""
    sorted_tiles, _, sorted_ids = jax.lax.sort((tile_keys, depth_keys, ids), num_keys=2)
    return sorted_tiles, sorted_ids


def _bin_sorted(sorted_tiles, sorted_ids, total, *, num_tiles, capacity) -> Binned:
    bounds = jnp.searchsorted(sorted_tiles, jnp.arange(num_tiles + 1, dtype=jnp.int32))
    bounds = bounds.astype(jnp.int32)
    tile_ranges = jnp.stack([bounds[:-1], bounds[1:]], -1)
    return Binned(
        gauss_ids=sorted_ids.astype(jnp.int32),
        tile_ranges=tile_ranges,
        num_intersections=total.astype(jnp.int32),
        overflow=jnp.maximum(total - capacity, 0).astype(jnp.int32),
        max_per_tile=jnp.max(tile_ranges[:, 1] - tile_ranges[:, 0]).astype(jnp.int32),
    )
