"""Tile rasteriser for Gaussian splatting: Pallas GPU kernel + pure-jnp reference twin."""

from kernels_pallas.splat.api import IMPLS, rasterize, resolve_impl

__all__ = ["IMPLS", "rasterize", "resolve_impl"]
