"""Gaussian splatting compositors: the tiled Pallas rasteriser with its pure-jnp reference
twin, and the dense small-image compositor. See `api.py` for the implementation table."""

from kernels_pallas.splat.api import (
    IMPLS,
    TILED_IMPLS,
    check_work_item_size,
    composite_dense,
    rasterize,
    rasterize_views,
    resolve_impl,
    tile_overflow,
)

__all__ = [
    "IMPLS",
    "TILED_IMPLS",
    "check_work_item_size",
    "composite_dense",
    "rasterize",
    "rasterize_views",
    "resolve_impl",
    "tile_overflow",
]
