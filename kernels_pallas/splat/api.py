"""Public rasterise op: dispatches by backend (GPU -> Pallas, otherwise the pure-jnp reference).

`impl="auto"` picks Pallas on GPU and the reference elsewhere; `impl="pallas"` off GPU runs the
kernel with `interpret=True` (slow, for tests); `impl="reference"` forces the twin.
"""

from __future__ import annotations

import jax

from kernels_pallas.splat import pallas_gpu, reference

IMPLS = ("auto", "pallas", "reference")


def resolve_impl(impl: str = "auto") -> tuple[str, bool]:
    """(implementation, interpret) for this backend."""
    if impl not in IMPLS:
        raise ValueError(f"rasterize impl={impl!r}; choose one of {IMPLS}")
    on_gpu = jax.default_backend() == "gpu"
    if impl == "auto":
        impl = "pallas" if on_gpu else "reference"
    return impl, (impl == "pallas" and not on_gpu)


def rasterize(
    means2d,
    conics,
    colors,
    opacities,
    depths,
    gauss_ids,
    tile_ranges,
    *,
    width: int,
    height: int,
    tile_size: int = 16,
    chunk: int = 32,
    max_per_tile: int | None = None,
    impl: str = "auto",
):
    """(rgb [H, W, 3], depth [H, W], transmittance [H, W]) accumulated without background."""
    impl, interpret = resolve_impl(impl)
    fn = pallas_gpu.rasterize if impl == "pallas" else reference.rasterize
    return fn(
        means2d,
        conics,
        colors,
        opacities,
        depths,
        gauss_ids,
        tile_ranges,
        width=width,
        height=height,
        tile_size=tile_size,
        chunk=chunk,
        max_per_tile=max_per_tile,
        interpret=interpret,
    )
