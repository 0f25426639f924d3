"""Render API: slice (4D) -> project -> bin -> rasterise -> background / depth / stats.

Everything except the rasteriser is plain jnp and differentiates by autodiff; the rasteriser
(`kernels_pallas.splat`) is a custom-VJP Pallas kernel on GPU and a pure-jnp twin elsewhere.
`impl="dense"` replaces bin + rasterise by the splat folder's small-image compositor
(`kernels_pallas/splat/dense.py`: every Gaussian × every pixel, or the nearest `max_per_tile`
per small tile): the fast choice for tiny images on CPU, and an independent check of the tiled
path. `impl` is resolved once, by `kernels_pallas.splat.resolve_impl` (the shared kernel
contract of `kernels_pallas.impl`).
Shapes are static: the intersection buffer has `capacity` slots and the count of dropped
intersections is returned in `stats.overflow` (never silent). Bad input raises before any
device work; non-finite Gaussians are dropped (counted in `stats.nonfinite`), and a camera
that sees nothing returns the background.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Sequence

import flax.struct
import jax
import jax.numpy as jnp
from jax.ad_checkpoint import checkpoint_name

from jaxmm.gaussians.binning import bin_gaussians, tile_grid
from jaxmm.gaussians.camera import Camera
from jaxmm.gaussians.params import (
    Gaussians3D,
    Gaussians4D,
    Slice3D,
    covariances_3d,
    sanitize,
    slice_at,
)
from jaxmm.gaussians.projection import project
from kernels_pallas import splat


@flax.struct.dataclass
class RenderStats:
    intersections: jax.Array  # [] int32 requested (Gaussian, tile) pairs
    overflow: jax.Array  # [] int32 dropped for lack of `capacity`
    tile_overflow: jax.Array  # [] int32 dropped by the `max_per_tile` cap (every impl)
    visible: jax.Array  # [] int32 Gaussians that reached the rasteriser
    nonfinite: jax.Array  # [] int32 Gaussians with NaN/inf parameters (dropped)
    busiest_tile: jax.Array  # [] int32 row-major index of the tile with the most entries
    busiest_count: jax.Array  # [] int32 its entry count (compare with `max_per_tile`)


class TileOverflowError(RuntimeError):
    """`render(..., on_overflow="error")` dropped entries for a per-tile cap or the capacity."""


@flax.struct.dataclass
class RenderOutput:
    rgb: jax.Array  # [H, W, 3]
    alpha: jax.Array  # [H, W] 1 - final transmittance
    depth: jax.Array  # [H, W] expected depth Σ wᵢ dᵢ / Σ wᵢ (0 where alpha < 1e-4)
    stats: RenderStats


IMPLS = splat.IMPLS  # auto | reference | pallas | dense

# The binning outputs the rasteriser needs (sorted Gaussian ids, tile ranges: integers, no
# gradient) carry this `checkpoint_name`; `render_batch(checkpoint=True)` saves exactly them, so
# its backward rematerialises the float activations (projection, rasteriser residuals) but not
# the intersection enumeration and sort.
BINNING_NAME = "splat_binning"
BINNING_SAVE_POLICY = jax.checkpoint_policies.save_only_these_names(BINNING_NAME)


def default_capacity(num_gaussians: int) -> int:
    """Static intersection buffer size: 8 tiles per Gaussian on average (min 1024)."""
    return max(1024, 8 * num_gaussians)


def _check_camera(camera) -> None:
    if not isinstance(camera, Camera):
        raise TypeError(f"camera must be a jaxmm.gaussians.Camera, got {type(camera).__name__}")


def _background(background) -> jax.Array:
    bg = jnp.asarray(background, jnp.float32)
    if bg.shape != (3,):
        raise ValueError(f"background must have shape (3,), got {bg.shape}")
    return bg


STATIC_OPTIONS = (
    "capacity", "max_per_tile", "near", "tile_size", "chunk", "impl", "interpret",
    "work_item_size",
)  # fmt: skip


@functools.partial(jax.jit, static_argnames=STATIC_OPTIONS)
def _render_slice(
    g: Slice3D,
    camera: Camera,
    background: jax.Array,
    nonfinite: jax.Array,
    *,
    capacity: int,
    max_per_tile: int | None,
    near: float,
    tile_size: int,
    chunk: int,
    impl: str,
    interpret: bool,
    work_item_size: int | None,
) -> RenderOutput:
    """`impl` is already resolved (reference | pallas | dense)."""
    width, height = camera.width, camera.height
    g, finite = sanitize(g)
    nonfinite = (nonfinite + jnp.sum(~finite)).astype(jnp.int32)
    proj = project(g, camera, near=near)
    visible = jnp.sum(proj.valid).astype(jnp.int32)
    if impl == "dense":
        rgb_acc, depth_acc, trans, hits, dropped, counts = splat.composite_dense(
            proj.means2d,
            proj.conics,
            proj.colors,
            proj.opacities,
            proj.depths,
            proj.radii,
            proj.valid,
            width=width,
            height=height,
            tile_size=tile_size,
            max_per_tile=max_per_tile,
        )
        stats = RenderStats(
            intersections=hits,
            overflow=jnp.int32(0),
            tile_overflow=dropped,
            visible=visible,
            nonfinite=nonfinite,
            busiest_tile=jnp.argmax(counts).astype(jnp.int32),
            busiest_count=jnp.max(counts).astype(jnp.int32),
        )
        return _finish(rgb_acc, depth_acc, trans, background, stats)
    binned = bin_gaussians(
        proj.means2d,
        proj.radii,
        proj.depths,
        proj.valid,
        width=width,
        height=height,
        capacity=capacity,
        tile_size=tile_size,
    )
    # Named so `render_batch(checkpoint=True)` saves the sort's integer outputs instead of
    # re-running binning in the backward (`BINNING_SAVE_POLICY`).
    gauss_ids = checkpoint_name(binned.gauss_ids, BINNING_NAME)
    tile_ranges = checkpoint_name(binned.tile_ranges, BINNING_NAME)
    rgb_acc, depth_acc, trans = splat.rasterize(
        proj.means2d,
        proj.conics,
        proj.colors,
        proj.opacities,
        proj.depths,
        gauss_ids,
        tile_ranges,
        width=width,
        height=height,
        tile_size=tile_size,
        chunk=chunk,
        max_per_tile=max_per_tile,
        work_item_size=work_item_size,
        impl=impl,
        interpret=interpret,
    )
    stats = _binned_stats(binned, visible, nonfinite, max_per_tile)
    return _finish(rgb_acc, depth_acc, trans, background, stats)


def _binned_stats(binned, visible, nonfinite, max_per_tile) -> RenderStats:
    lengths = binned.tile_ranges[:, 1] - binned.tile_ranges[:, 0]
    return RenderStats(
        intersections=binned.num_intersections,
        overflow=binned.overflow,
        tile_overflow=splat.tile_overflow(binned.tile_ranges, max_per_tile),
        visible=visible,
        nonfinite=nonfinite,
        busiest_tile=jnp.argmax(lengths).astype(jnp.int32),
        busiest_count=jnp.max(lengths).astype(jnp.int32),
    )


@functools.partial(jax.jit, static_argnames=STATIC_OPTIONS)
def _render_views(
    g: Slice3D,
    cameras: Camera,
    background: jax.Array,
    nonfinite: jax.Array,
    *,
    capacity: int,
    max_per_tile: int | None,
    near: float,
    tile_size: int,
    chunk: int,
    impl: str,
    interpret: bool,
    work_item_size: int | None,
) -> RenderOutput:
    """V views of V slices (leading axis on `g` and `cameras`) with a tiled rasteriser
    (`impl` resolved: reference | pallas): projection and binning vmapped per view, then one
    `splat.rasterize_views` call for all of them (Pallas: one grid over every (view, tile))."""
    width, height = cameras.width, cameras.height

    def prepare(g, camera):
        g, finite = sanitize(g)
        proj = project(g, camera, near=near)
        binned = bin_gaussians(
            proj.means2d, proj.radii, proj.depths, proj.valid,
            width=width, height=height, capacity=capacity, tile_size=tile_size,
        )  # fmt: skip
        visible = jnp.sum(proj.valid).astype(jnp.int32)
        nf = (nonfinite + jnp.sum(~finite)).astype(jnp.int32)
        return proj, binned, _binned_stats(binned, visible, nf, max_per_tile)

    proj, binned, stats = jax.vmap(prepare)(g, cameras)
    rgb_acc, depth_acc, trans = splat.rasterize_views(
        proj.means2d,
        proj.conics,
        proj.colors,
        proj.opacities,
        proj.depths,
        checkpoint_name(binned.gauss_ids, BINNING_NAME),  # see `_render_slice`
        checkpoint_name(binned.tile_ranges, BINNING_NAME),
        width=width,
        height=height,
        tile_size=tile_size,
        chunk=chunk,
        max_per_tile=max_per_tile,
        work_item_size=work_item_size,
        impl=impl,
        interpret=interpret,
    )
    finish = lambda r, d, t, s: _finish(r, d, t, background, s)
    return jax.vmap(finish)(rgb_acc, depth_acc, trans, stats)


def _finish(rgb_acc, depth_acc, trans, background, stats: RenderStats) -> RenderOutput:
    """Composites over the background; depth normalised by alpha (0 where nothing was hit)."""
    alpha = 1.0 - trans
    rgb = rgb_acc + trans[..., None] * background
    has_alpha = alpha > 1e-4
    depth = jnp.where(has_alpha, depth_acc / jnp.where(has_alpha, alpha, 1.0), 0.0)
    return RenderOutput(rgb=rgb, alpha=alpha, depth=depth, stats=stats)


def render_slice(
    g: Slice3D,
    camera: Camera,
    *,
    background: Sequence[float] | jax.Array = (1.0, 1.0, 1.0),
    capacity: int | None = None,
    max_per_tile: int | None = 4096,
    near: float = 0.01,
    tile_size: int = 16,
    chunk: int = 32,
    work_item_size: int | None = None,
    impl: str = "auto",
    nonfinite: jax.Array | int = 0,
    on_overflow: str = "count",
) -> RenderOutput:
    """Renders 3D Gaussians given as (means, covariances, opacities, SH DC).

    impl: "auto" (Pallas on GPU, reference elsewhere), "pallas", "reference" or "dense" (no
    binning: for small images; `max_per_tile=None` composites every Gaussian at every pixel,
    an int the nearest that many per `tile_size` tile, dropped pairs in `stats.tile_overflow`).
    On CPU, "auto" is the dense compositor where it applies (image divisible by `tile_size`
    and at most `DENSE_AUTO_MAX_PAIRS` (pixel, Gaussian) pairs; `auto_impl`), else the
    reference. `work_item_size`: the Pallas rasteriser's schedule (None: one program per
    tile; a multiple of `chunk`: long tiles split into work items of that many entries, merged
    exactly; same image); the other impls ignore it. `nonfinite` adds a count of Gaussians
    already dropped upstream to `stats.nonfinite`. `on_overflow`: "count" (dropped entries
    only counted in `stats`) or "error" (a `TileOverflowError` naming the busiest tile, its
    count and the cap, raised on the host when the computation finishes, also inside jit)."""
    _check_camera(camera)
    n = g.means.shape[0]
    if g.covs.shape != (n, 3, 3):
        raise ValueError(f"covariances must have shape ({n}, 3, 3), got {g.covs.shape}")
    opts = _options(
        camera, n, capacity=capacity, max_per_tile=max_per_tile, near=near,
        tile_size=tile_size, chunk=chunk, work_item_size=work_item_size, impl=impl,
        on_overflow=on_overflow,
    )  # fmt: skip
    out = _render_slice(
        g, camera, _background(background), jnp.asarray(nonfinite, jnp.int32), **opts
    )
    if on_overflow == "error":
        _check_overflow(out.stats, camera, n, opts)
    return out


def _options(
    camera, n, *, capacity, max_per_tile, near, tile_size, chunk, work_item_size, impl,
    on_overflow,
) -> dict:  # fmt: skip
    """The static options `_render_slice` / `_render_views` run with (validated, `impl`
    resolved, `capacity` and `max_per_tile` made concrete)."""
    if on_overflow not in ("count", "error"):
        raise ValueError(f"on_overflow must be 'count' or 'error', got {on_overflow!r}")
    capacity = default_capacity(n) if capacity is None else int(capacity)
    if capacity <= 0:
        raise ValueError(f"capacity must be > 0, got {capacity}")
    resolved = auto_impl(impl, camera, n, max_per_tile=max_per_tile, tile_size=tile_size)
    if resolved.impl == "dense":
        if max_per_tile is not None and (camera.width % tile_size or camera.height % tile_size):
            raise ValueError(
                f"impl='dense': image {camera.height}x{camera.width} is not divisible by "
                f"tile_size={tile_size}"
            )
        if max_per_tile is not None:
            max_per_tile = max(1, min(int(max_per_tile), n))
    else:
        if max_per_tile is not None:  # a tile lists each Gaussian at most once
            max_per_tile = max(1, min(int(max_per_tile), capacity, n))
        if tile_size != 16 and impl != "reference":
            raise ValueError(f"the Pallas rasteriser is built for 16x16 tiles, got {tile_size}")
    work_item_size = splat.check_work_item_size(work_item_size, chunk)
    if resolved.impl != "pallas":
        work_item_size = None  # only the Pallas schedule depends on it: one compiled program
    return dict(
        capacity=capacity,
        max_per_tile=max_per_tile,
        near=float(near),
        tile_size=tile_size,
        chunk=chunk,
        impl=resolved.impl,
        interpret=resolved.interpret,
        work_item_size=work_item_size,
    )


def _check_overflow(stats: RenderStats, camera: Camera, n: int, opts: dict) -> None:
    """`on_overflow="error"`: raise `TileOverflowError` on the host if anything was dropped
    (stats of one view, or of V views: then the busiest view's tile is named)."""
    cap = opts["max_per_tile"] if opts["max_per_tile"] is not None else n
    tiles_x = -(-camera.width // opts["tile_size"])
    s = stats
    if s.tile_overflow.ndim:  # V views: totals, and the busiest tile of the busiest view
        worst = jnp.argmax(s.busiest_count)
        args = (jnp.sum(s.tile_overflow), jnp.sum(s.overflow), s.busiest_tile[worst],
                s.busiest_count[worst])  # fmt: skip
    else:
        args = (s.tile_overflow, s.overflow, s.busiest_tile, s.busiest_count)
    check = functools.partial(_raise_overflow, cap=cap, capacity=opts["capacity"], tiles_x=tiles_x)
    if isinstance(s.tile_overflow, jax.core.Tracer):  # inside jit: check on the host later
        jax.debug.callback(check, *args)
    else:  # eager: a debug callback would only log, so check now
        check(*args)


# Above this many (pixel, Gaussian) pairs per view, "auto" on CPU keeps the tiled reference:
# the dense compositor's [tiles, tile², K] terms (~64 MB each at 2**24 f32) stop fitting cache
# and memory, while its speed advantage comes from having no binning or sort.
DENSE_AUTO_MAX_PAIRS = 2**24


def auto_impl(impl: str, camera: Camera, n: int, *, max_per_tile, tile_size: int):
    """The implementation `impl` runs for this view: "auto" on GPU is Pallas; elsewhere the
    dense compositor when the image tiles evenly and its pair buffer is small enough (it was
    ~20x faster than the reference at 128² on 2 CPU cores), else the reference."""
    resolved = splat.resolve_impl(impl)  # raises for an unknown impl
    if impl != "auto" or resolved.impl != "reference":
        return resolved
    per_pixel = n if max_per_tile is None else min(int(max_per_tile), n)
    pairs = camera.width * camera.height * per_pixel
    even = camera.width % tile_size == 0 and camera.height % tile_size == 0
    if pairs <= DENSE_AUTO_MAX_PAIRS and (even or max_per_tile is None):
        return resolved._replace(impl="dense")
    return resolved


def _raise_overflow(dropped, overflow, tile, count, *, cap: int, capacity: int, tiles_x: int):
    if int(dropped) or int(overflow):
        raise TileOverflowError(
            f"render dropped entries: tile {int(tile)} (x={int(tile) % tiles_x}, "
            f"y={int(tile) // tiles_x}) lists {int(count)} Gaussians but max_per_tile={cap} "
            f"({int(dropped)} tile entries dropped in all); {int(overflow)} intersections over "
            f"capacity={capacity}. Raise max_per_tile / capacity, or use smaller tiles "
            "(config.model.max_per_tile, .capacity, .tile_size)."
        )


def render(g: Gaussians3D, camera: Camera, **kwargs) -> RenderOutput:
    """Renders 3D Gaussians. kwargs: background, capacity, max_per_tile, near, chunk, impl."""
    if not isinstance(g, Gaussians3D):
        raise TypeError(f"render expects Gaussians3D, got {type(g).__name__} (4D: render_4d)")
    g.validate()
    g, finite = sanitize(g)
    return render_slice(covariances_3d(g), camera, nonfinite=jnp.sum(~finite), **kwargs)


def render_4d(g: Gaussians4D, camera: Camera, t, **kwargs) -> RenderOutput:
    """Slices 4D Gaussians at time t (opacity × p(t), conditional mean/cov), then renders."""
    if not isinstance(g, Gaussians4D):
        raise TypeError(f"render_4d expects Gaussians4D, got {type(g).__name__}")
    g.validate()
    if jnp.ndim(t) != 0:
        raise ValueError(f"render_4d: t must be a scalar, got shape {jnp.shape(t)}")
    g, finite = sanitize(g)
    return render_slice(slice_at(g, t), camera, nonfinite=jnp.sum(~finite), **kwargs)


def render_batch(
    g: Gaussians3D | Gaussians4D,
    cameras: Camera,
    times: jax.Array | None = None,
    *,
    checkpoint: bool = True,
    views_per_step: int = 1,
    **kwargs,
) -> RenderOutput:
    """Renders V views of the same Gaussians: `cameras` stacked [V] (see `stack_cameras`),
    `times` [V] for 4D Gaussians. Outputs gain a leading V axis; differentiable w.r.t. all
    Gaussian parameters. Views run `views_per_step` at a time (`lax.map` over groups, the
    last group smaller when it does not divide V), each group `jax.checkpoint`ed, so the
    backward keeps one group's rasteriser residuals instead of all V views' (the paper's
    per-view checkpointing; raise it to trade memory for parallelism). With a tiled
    rasteriser a group is one `splat.rasterize_views` call: projection and binning vmapped
    per view, then (Pallas) one grid over every (view, tile) of the group, forward and
    backward. The checkpoint saves each view's binning (sorted ids [capacity] and tile ranges
    [T, 2], int32: `BINNING_SAVE_POLICY`), so the backward recomputes projection and
    rasteriser activations but never re-sorts: one sort per view in the whole grad program.
    kwargs: those of `render_slice` (background, capacity, max_per_tile, near, tile_size,
    chunk, work_item_size, impl, on_overflow)."""
    _check_camera(cameras)
    if cameras.c2w.ndim != 3:
        raise ValueError(f"render_batch: cameras.c2w must be [V, 4, 4], got {cameras.c2w.shape}")
    num_views = cameras.c2w.shape[0]
    is_4d = isinstance(g, Gaussians4D)
    if is_4d:
        if times is None or jnp.shape(times) != (num_views,):
            raise ValueError(
                f"render_batch: 4D Gaussians need times of shape ({num_views},), got "
                f"{None if times is None else jnp.shape(times)}"
            )
        times = jnp.asarray(times, jnp.float32)
    elif times is not None:
        raise ValueError("render_batch: times given for 3D Gaussians")
    else:
        times = jnp.zeros((num_views,), jnp.float32)
    g.validate()
    if not 1 <= views_per_step:
        raise ValueError(f"render_batch: views_per_step must be >= 1, got {views_per_step}")
    step = min(views_per_step, num_views)

    g, finite = sanitize(g)
    nonfinite = jnp.sum(~finite)
    kwargs = dict(kwargs)
    background = _background(kwargs.pop("background", (1.0, 1.0, 1.0)))
    on_overflow = kwargs.pop("on_overflow", "count")
    unknown = set(kwargs) - set(_RENDER_OPTIONS)
    if unknown:
        raise TypeError(f"render_batch: unexpected keyword arguments {sorted(unknown)}")
    kw = {**_RENDER_OPTIONS, **kwargs}
    n = g.means.shape[0]
    opts = _options(cameras, n, **kw, on_overflow=on_overflow)

    if opts["impl"] == "dense":  # no binning: per view, as `render_slice`

        def one_view(camera, t):
            return _render_slice(_to_slice(g, t), camera, background, nonfinite, **opts)

        group = jax.vmap(one_view)
    else:

        def group(cams, ts):
            return _render_views(
                jax.vmap(lambda t: _to_slice(g, t))(ts), cams, background, nonfinite, **opts
            )

    if checkpoint:
        group = jax.checkpoint(group, policy=BINNING_SAVE_POLICY)
    num_groups, rest = divmod(num_views, step)
    main = num_groups * step
    grouped = jax.tree.map(
        lambda x: x[:main].reshape((num_groups, step) + x.shape[1:]), (cameras, times)
    )
    out = jax.lax.map(lambda x: group(*x), grouped)
    out = jax.tree.map(lambda x: x.reshape((main,) + x.shape[2:]), out)
    if rest:
        tail = group(*jax.tree.map(lambda x: x[main:], (cameras, times)))
        out = jax.tree.map(lambda a, b: jnp.concatenate([a, b]), out, tail)
    if on_overflow == "error":
        _check_overflow(out.stats, cameras, n, opts)
    return out


# `render_slice`'s options and their defaults (what `render_batch` forwards), read from its
# signature so the two cannot drift apart.
_RENDER_OPTIONS = {
    name: param.default
    for name, param in inspect.signature(render_slice).parameters.items()
    if name in ("capacity", "max_per_tile", "near", "tile_size", "chunk", "work_item_size", "impl")
}


def _to_slice(g, t) -> Slice3D:
    return slice_at(g, t) if isinstance(g, Gaussians4D) else covariances_3d(g)


def image_size(camera: Camera) -> tuple[int, int]:
    return camera.height, camera.width


def num_tiles(camera: Camera, tile_size: int = 16) -> int:
    tx, ty = tile_grid(camera.width, camera.height, tile_size)
    return tx * ty
