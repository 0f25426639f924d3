"""Public splat ops: the implementation table and the tiled rasteriser's dispatch.

Implementations (resolved by `kernels_pallas.impl`, one interpret rule for every op):
`reference` (pure-jnp twin, `reference.py`), `pallas` (`pallas_gpu.py`; compiled on GPU,
interpreted elsewhere unless `interpret=` says otherwise) and `dense` (`dense.py`: no binning,
every Gaussian against every pixel or the nearest few per small tile). `auto` is Pallas on GPU
and the reference elsewhere. `rasterize` runs the tiled implementations; `dense` takes
unbinned Gaussians, so the renderer (`jaxmm.gaussians.render`) calls `composite_dense` for it.
`max_per_tile` means the same for both tiled implementations (the first that many entries of
each tile's sorted range); `tile_overflow` counts what it drops. `rasterize_views` renders a
batch of views (one Pallas grid over all their tiles). `work_item_size` picks the Pallas
schedule (None: one program per tile; an int: tiles split into work items of that many
entries, merged exactly); it changes no result, and the reference ignores it.
"""

from __future__ import annotations

import functools

import jax

from kernels_pallas import impl as impl_lib
from kernels_pallas.splat import pallas_gpu, reference
from kernels_pallas.splat.common import check_work_item_size, tile_overflow
from kernels_pallas.splat.dense import composite as composite_dense

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

IMPLS = ("auto", "reference", "pallas", "dense")  # what `render(impl=...)` accepts
TILED_IMPLS = ("reference", "pallas")  # what `rasterize` runs (binned input)


def resolve_impl(impl: str = "auto", interpret: bool | None = None) -> impl_lib.Resolved:
    """(impl, interpret) a splat render runs on this backend; auto: Pallas on GPU, reference
    elsewhere. Raises a ValueError naming the bad impl."""
    return impl_lib.resolve(impl, op="splat", supported=IMPLS[1:], interpret=interpret)


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
    impl: str = "auto",
    interpret: bool | None = None,
):
    """(rgb [H, W, 3], depth [H, W], transmittance [H, W]) accumulated without background,
    from the binned intersections (`gauss_ids` sorted by tile then depth, `tile_ranges`)."""
    args = (means2d, conics, colors, opacities, depths, gauss_ids, tile_ranges)
    impl, interpret = impl_lib.resolve(
        impl, op="splat.rasterize", supported=TILED_IMPLS, interpret=interpret
    )
    check_work_item_size(work_item_size, chunk)  # same error for both impls
    kw = dict(width=width, height=height, tile_size=tile_size, chunk=chunk)
    kw.update(max_per_tile=max_per_tile)
    if impl == "reference":
        return reference.rasterize(*args, **kw)
    return pallas_gpu.rasterize(*args, work_item_size=work_item_size, interpret=interpret, **kw)


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
    impl: str = "auto",
    interpret: bool | None = None,
):
    """`rasterize` for V views at once: every argument gains a leading view axis (means2d
    [V, N, 2], gauss_ids [V, M], tile_ranges [V, T, 2]) and so do the outputs. Pallas: one
    `pallas_call` per pass whose grid covers every (view, tile) (or work item); reference:
    vmapped over the views."""
    impl, interpret = impl_lib.resolve(
        impl, op="splat.rasterize", supported=TILED_IMPLS, interpret=interpret
    )
    check_work_item_size(work_item_size, chunk)  # same error for both impls
    kw = dict(width=width, height=height, tile_size=tile_size, chunk=chunk)
    kw.update(max_per_tile=max_per_tile)
    args = (means2d, conics, colors, opacities, depths, gauss_ids, tile_ranges)
    if impl == "pallas":
        return pallas_gpu.rasterize_views(
            *args, work_item_size=work_item_size, interpret=interpret, **kw
        )
    return jax.vmap(functools.partial(reference.rasterize, **kw))(*args)
