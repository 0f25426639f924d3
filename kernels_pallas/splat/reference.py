"""Pure-jnp tile rasteriser: the reference twin of `pallas_gpu.py` (differentiable by autodiff).

Same signature and outputs as the Pallas kernel. All tiles are processed at once: each tile
gathers the first `max_per_tile` entries of its sorted [start, end) range (static shape), and a
`lax.scan` walks them front to back in chunks of `chunk` Gaussians. Inside a chunk the
transmittance is an exclusive cumulative product, computed as exp(cumsum(log(1 − α))) exactly as
in the kernel, so both stop at the same Gaussian (the one that would take T below 1e-4).

Outputs are *accumulations without background*: rgb = Σ cᵢ αᵢ Tᵢ, depth = Σ dᵢ αᵢ Tᵢ and the
final transmittance T; the caller adds T·background and normalises depth. Tile lists longer
than `max_per_tile` are truncated to their first (nearest) `max_per_tile` entries, exactly as
in the Pallas kernel (`common.cap_ranges`); the renderer reports how many intersections that
dropped (`common.tile_overflow`, `stats.tile_overflow`) for both.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from kernels_pallas.splat import common


def rasterize(
    means2d: jax.Array,  # [N, 2]
    conics: jax.Array,  # [N, 3]
    colors: jax.Array,  # [N, 3]
    opacities: jax.Array,  # [N]
    depths: jax.Array,  # [N]
    gauss_ids: jax.Array,  # [M] int32 sorted by (tile, depth); N marks an empty slot
    tile_ranges: jax.Array,  # [T, 2] int32
    *,
    width: int,
    height: int,
    tile_size: int = 16,
    chunk: int = 32,
    max_per_tile: int | None = None,
    interpret: bool = False,  # accepted for signature parity; unused
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Returns (rgb [H, W, 3], depth [H, W], transmittance [H, W])."""
    del interpret
    n = means2d.shape[0]
    capacity = gauss_ids.shape[0]
    tiles_x = -(-width // tile_size)
    tiles_y = -(-height // tile_size)
    num_tiles = tiles_x * tiles_y
    assert tile_ranges.shape == (num_tiles, 2), (tile_ranges.shape, num_tiles)
    k_max = capacity if max_per_tile is None else min(max_per_tile, capacity)
    num_chunks = max(1, -(-k_max // chunk))

    feats = common.pack_features(means2d, conics, colors, opacities, depths)  # [F, N+1]
    # Cap the ranges, not only the scan length: the scan covers whole chunks (up to
    # `chunk - 1` entries past `max_per_tile`).
    tile_ranges = common.cap_ranges(tile_ranges, max_per_tile)
    starts, ends = tile_ranges[:, 0], tile_ranges[:, 1]
    px, py = jax.vmap(lambda t: common.tile_pixel_coords(t, tiles_x, tile_size))(
        jnp.arange(num_tiles, dtype=jnp.int32)
    )  # [T, P] each
    num_pix = tile_size * tile_size

    def step(carry, c):
        trans, rgb, dep, done = carry  # [T, P], [T, P, 3], [T, P], [T, P] bool
        idx = starts[:, None] + c * chunk + jnp.arange(chunk, dtype=jnp.int32)[None]  # [T, B]
        in_range = idx < ends[:, None]
        ids = jnp.where(in_range, gauss_ids[jnp.minimum(idx, capacity - 1)], n)
        fc = jnp.moveaxis(feats[:, ids], 0, 1)  # [T, F, B]
        alpha, _, _, _, _ = jax.vmap(common.chunk_alpha)(fc, in_range, px, py)  # [T, B, P]
        log_om = jnp.log1p(-alpha)
        t_after = trans[:, None] * jnp.exp(jnp.cumsum(log_om, axis=1))
        contrib = (alpha > 0) & (t_after >= common.T_MIN) & ~done[:, None]
        log_om = jnp.where(contrib, log_om, 0.0)
        cum = jnp.cumsum(log_om, axis=1)
        weights = jnp.where(contrib, alpha * trans[:, None] * jnp.exp(cum - log_om), 0.0)
        rgb = rgb + jnp.einsum("tbp,tcb->tpc", weights, fc[:, 6:9])
        dep = dep + jnp.einsum("tbp,tb->tp", weights, fc[:, 9])
        done = done | jnp.any((alpha > 0) & ~contrib, axis=1)
        trans = trans * jnp.exp(cum[:, -1])
        return (trans, rgb, dep, done), None

    init = (
        jnp.ones((num_tiles, num_pix), jnp.float32),
        jnp.zeros((num_tiles, num_pix, 3), jnp.float32),
        jnp.zeros((num_tiles, num_pix), jnp.float32),
        jnp.zeros((num_tiles, num_pix), bool),
    )
    (trans, rgb, dep, _), _ = jax.lax.scan(step, init, jnp.arange(num_chunks))
    to_img = lambda x: common.tiles_to_image(x, tiles_x, tiles_y, tile_size, width, height)
    return to_img(rgb), to_img(dep), to_img(trans)
