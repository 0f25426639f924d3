"""The Pallas rasteriser's batched grid and work-item schedule (issue 13) vs the reference.

- `rasterize_views`: V views in one `pallas_call` per pass (grid over every (view, tile));
  each view must equal the reference run on that view alone.
- `work_item_size`: tiles split into fixed-size work items (pass 1: each item's Π(1 − α);
  an exclusive product over the tile's items gives each item's incoming T; pass 2: every item
  composites from it; backward: per item, with suffix sums over items). The scene is built so
  that a tile's list spans several items and the 0.99 clamp, the 1/255 cut and the T < 1e-4
  termination all happen in items other than the first (checked in float64 below).

Tolerances (docs/testing.md): fp32 values atol/rtol 1e-5 (same formula, other reduction
order); gradients 1e-4 relative to the gradient's scale (hand-written backward vs autodiff).
"""

import functools

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmm import gaussians as G
from kernels_pallas.splat import common, pallas_gpu, reference
from tests.gaussians.scenes import random_scene

TS = 16
W, H = 32, 16  # 2 tiles per view
CHUNK = 8
ITEM = 16  # work-item size: 2 chunks; tiles of the scene below hold 48 entries = 3 items
N = 48


@functools.cache
def _views_scene(num_views=2):
    """Projected + binned inputs of `num_views` views of one random scene (stacked)."""
    g = random_scene(0, 40, opacity=(0.3, 0.97), scale=(0.1, 0.4))
    cams = G.orbit_cameras(num_views, 3.2, width=W, height=H)
    per_view = []
    for cam in cams:
        proj = G.project(G.covariances_3d(g), cam)
        b = G.bin_gaussians(
            proj.means2d, proj.radii, proj.depths, proj.valid, width=W, height=H, capacity=256
        )
        assert int(b.overflow) == 0
        args = (proj.means2d, proj.conics, proj.colors, proj.opacities, proj.depths)
        per_view.append((*args, b.gauss_ids, b.tile_ranges))
    return tuple(jnp.stack(x) for x in zip(*per_view, strict=True))


@functools.cache
def _deep_scene(num_views=2):
    """Every tile lists all N Gaussians (sorted by depth): means inside the image, sizes of a
    few pixels, opacities a third near 1 (raw alpha above the 0.99 clamp), a third faint
    (alpha crossing 1/255 inside the footprint), a third in between. Stacked over views (each
    view its own random draw)."""
    views = []
    for v in range(num_views):
        k = jax.random.split(jax.random.PRNGKey(10 + v), 6)
        means2d = jax.random.uniform(k[0], (N, 2)) * jnp.array([W, H])
        inv_var = jax.random.uniform(k[1], (N, 2), minval=1 / 120.0, maxval=1 / 20.0)
        conics = jnp.stack([inv_var[:, 0], jnp.zeros(N), inv_var[:, 1]], -1)
        kind = jnp.arange(N) % 3
        opac = jnp.where(
            kind == 0,
            jax.random.uniform(k[2], (N,), minval=0.995, maxval=1.0),
            jnp.where(
                kind == 1,
                jax.random.uniform(k[3], (N,), minval=0.004, maxval=0.02),
                jax.random.uniform(k[3], (N,), minval=0.2, maxval=0.6),
            ),
        )
        colors = jax.random.uniform(k[4], (N, 3))
        depths = jax.random.uniform(k[5], (N,), minval=1.0, maxval=5.0)
        order = jnp.argsort(depths).astype(jnp.int32)
        gauss_ids = jnp.concatenate([order, order])  # tile 0, tile 1
        tile_ranges = jnp.array([[0, N], [N, 2 * N]], jnp.int32)
        views.append((means2d, conics, colors, opac, depths, gauss_ids, tile_ranges))
    return tuple(jnp.stack(x) for x in zip(*views, strict=True))


def _reference_views(args):
    """The reference, one view at a time."""
    ref = functools.partial(reference.rasterize, width=W, height=H, chunk=CHUNK)
    outs = [ref(*(x[v] for x in args)) for v in range(args[0].shape[0])]
    return tuple(jnp.stack(x) for x in zip(*outs, strict=True))


def _pallas_views(args, work_item_size):
    return pallas_gpu.rasterize_views(
        *args, width=W, height=H, chunk=CHUNK, work_item_size=work_item_size, interpret=True
    )


def _compare(args, work_item_size, seed):
    """Values at 1e-5 and the VJP of all five float inputs at 1e-4 of their scale."""
    v = args[0].shape[0]
    k = jax.random.split(jax.random.PRNGKey(seed), 3)
    ct = (
        jax.random.normal(k[0], (v, H, W, 3)),
        jax.random.normal(k[1], (v, H, W)),
        jax.random.normal(k[2], (v, H, W)),
    )
    floats, ints = args[:5], args[5:]

    def run(fn):
        out, vjp = jax.vjp(lambda *a: fn((*a, *ints)), *floats)
        return out, vjp(ct)

    ref, ref_grads = run(_reference_views)
    pal, pal_grads = run(functools.partial(_pallas_views, work_item_size=work_item_size))
    for label, r, p in zip(("rgb", "depth", "transmittance"), ref, pal, strict=True):
        np.testing.assert_allclose(p, r, atol=1e-5, rtol=1e-5, err_msg=label)
    names = ("means2d", "conics", "colors", "opacities", "depths")
    for label, r, p in zip(names, ref_grads, pal_grads, strict=True):
        scale = float(jnp.abs(r).max())
        assert scale > 0, label
        np.testing.assert_allclose(p, r, atol=1e-4 * scale, rtol=1e-4, err_msg=f"d_{label}")
    return ref


@pytest.mark.parametrize("work_item_size", [None, ITEM])
def test_views_in_one_grid_match_reference_per_view(work_item_size):
    """Two views of a random scene (different cameras: different lists and tile loads)."""
    _compare(_views_scene(), work_item_size, seed=1)


def _float64_walk(args, v, tile):
    """Per pixel of `tile` of view `v`, in float64 and the tile's list order: the list
    position where T would fall below 1e-4 (-1: never), and the positions of clamped
    (raw alpha > 0.99) and cut (0 < alpha < 1/255) entries before that point."""
    means2d, conics, _, opac, _, gauss_ids, ranges = (np.asarray(x[v]) for x in args)
    start, end = ranges[tile]
    p = np.arange(TS * TS)
    px = (tile * TS + p % TS) + 0.5
    py = (p // TS) + 0.5
    trans = np.ones(TS * TS)
    stop = np.full(TS * TS, -1)
    clamped, cut = [], []
    for pos, i in enumerate(gauss_ids[start:end]):
        dx, dy = px - means2d[i, 0], py - means2d[i, 1]
        power = -0.5 * (conics[i, 0] * dx * dx + conics[i, 2] * dy * dy) - conics[i, 1] * dx * dy
        raw = np.where(power <= 0, opac[i] * np.exp(np.minimum(power, 0.0)), 0.0)
        live = stop < 0
        clamped += [pos] * int(np.sum(live & (raw > common.ALPHA_MAX)))
        cut += [pos] * int(np.sum(live & (raw > 0) & (raw < common.ALPHA_MIN)))
        alpha = np.where(raw >= common.ALPHA_MIN, np.minimum(raw, common.ALPHA_MAX), 0.0)
        t_next = trans * (1 - alpha)
        newly = live & (alpha > 0) & (t_next < common.T_MIN)
        stop = np.where(newly, pos, stop)
        trans = np.where(live & ~newly, t_next, trans)
    return stop, np.array(clamped), np.array(cut)


def test_deep_scene_crosses_item_boundaries():
    """The scene does what `_deep_scene` says, in the items past the first: tiles span 3
    items, some pixels terminate in the second or third item (others never), and clamped and
    cut entries occur there before termination."""
    args = _deep_scene()
    wl = pallas_gpu.work_list(args[6][0], N * 2, ITEM)
    assert int(wl.count) == 6  # 2 tiles x 48 entries / 16
    stops, clamped, cut = [], [], []
    for v in range(2):
        for tile in range(2):
            s, c, u = _float64_walk(args, v, tile)
            stops.append(s)
            clamped.append(c)
            cut.append(u)
    stops, clamped, cut = (np.concatenate(x) for x in (stops, clamped, cut))
    item = stops // ITEM
    assert np.sum((stops >= 0) & (item == 1)) > 5, np.bincount(item[stops >= 0])
    assert np.sum((stops >= 0) & (item == 2)) > 5, np.bincount(item[stops >= 0])
    assert np.sum(stops < 0) > 5  # some pixels never saturate
    assert np.sum(clamped >= ITEM) > 20 and np.sum(cut >= ITEM) > 20, (clamped, cut)


@pytest.mark.parametrize("work_item_size", [CHUNK, ITEM])
def test_work_items_match_reference_across_item_boundaries(work_item_size):
    """Values and gradients, with termination, clamp and cut inside later items. Both views
    share one grid (the work list runs over all views' tiles)."""
    ref = _compare(_deep_scene(), work_item_size, seed=2)
    trans = np.asarray(ref[2])
    assert np.sum(trans < 1e-3) > 50 and np.sum(trans > 1e-2) > 50  # saturated and not


def test_work_list_covers_every_tile_range_exactly():
    """Items of at most S entries, in tile order, tiling each [start, end) exactly; one item
    for an empty tile; padding items empty; the static length is a true bound."""
    ranges = jnp.array([[0, 0], [0, 5], [5, 37], [37, 37], [37, 69], [69, 70]], jnp.int32)
    size = 16
    wl = pallas_gpu.work_list(ranges, 70, size)
    items = np.asarray(wl.items)
    count = int(wl.count)
    # 1 + 1 + 2 + 1 + 2 + 1 items; static bound 6 + 70 // 16 = 10.
    assert count == 8 and items.shape == (10, 3)
    tiles = np.asarray(wl.tile)
    for t, (s, e) in enumerate(np.asarray(ranges)):
        mine = items[:count][tiles[:count] == t]
        assert len(mine) == max(1, -(-(e - s) // size)), t
        assert mine[0, 1] == s and mine[-1, 2] == e, t
        np.testing.assert_array_equal(mine[1:, 1], mine[:-1, 2])  # contiguous
        assert np.all(mine[:, 2] - mine[:, 1] <= size) and np.all(mine[:, 0] == t)
    assert np.all(tiles[count:] == len(ranges)) and np.all(items[count:, 1:] == 0)
    np.testing.assert_array_equal(np.asarray(wl.first)[:count], [1, 1, 1, 0, 1, 1, 0, 1])
    np.testing.assert_array_equal(np.asarray(wl.last)[:count], [1, 1, 0, 1, 1, 0, 1, 1])


def _pallas_grids(fn, *args):
    """Grids of every `pallas_call` in fn's jaxpr (sub-jaxprs included), by kernel name."""
    grids = []

    def walk(jaxpr):
        for eqn in jaxpr.eqns:
            if eqn.primitive.name == "pallas_call":
                grids.append((eqn.params["name"], eqn.params["grid_mapping"].grid))
            for p in eqn.params.values():
                for sub in p if isinstance(p, (tuple, list)) else (p,):
                    if isinstance(sub, jax.extend.core.ClosedJaxpr):
                        walk(sub.jaxpr)
                    elif isinstance(sub, jax.extend.core.Jaxpr):
                        walk(sub)

    walk(jax.make_jaxpr(fn)(*args).jaxpr)
    return grids


@pytest.mark.parametrize("work_item_size", [None, 64])
def test_render_batch_grad_is_one_grid_over_all_views(work_item_size):
    """render_batch(views_per_step=V) with Pallas: the gradient program holds one forward and
    one backward `pallas_call` (plus pass 1 with work items), each with a single 1-D grid over
    all V views' tiles (or work items) of the concatenated lists. (Vmapping the per-view
    render instead, the path before, also gives one call, through Pallas's batching rule, but
    with a (V, T) grid over per-view tables: that fails here.) Traced only, not run; without
    the checkpoint (with it, the backward also re-runs the forward passes)."""
    g = random_scene(0, 20)
    views, size, capacity = 4, 32, 512
    cams = G.stack_cameras(G.orbit_cameras(views, 3.5, width=size, height=size))
    loss = lambda g: jnp.sum(
        G.render_batch(
            g,
            cams,
            impl="pallas",
            views_per_step=views,
            capacity=capacity,
            work_item_size=work_item_size,
            checkpoint=False,
        ).rgb  # fmt: skip
    )
    grids = _pallas_grids(jax.grad(loss), g)
    names = sorted(name for name, _ in grids)
    tiles = views * (size // 16) ** 2
    if work_item_size is None:
        assert names == ["splat_rasterize_bwd", "splat_rasterize_fwd"], grids
        assert all(grid == (tiles,) for _, grid in grids), grids
    else:
        expected = ["splat_rasterize_bwd", "splat_rasterize_fwd", "splat_rasterize_item_trans"]
        assert names == expected, grids
        items = pallas_gpu.max_work_items(tiles, views * capacity, work_item_size)
        assert all(grid == (items,) for _, grid in grids), grids


@pytest.mark.slow
def test_render_batch_groups_and_work_items_match_reference():
    """End to end: 4 views in groups of 3 (a full group and a remainder), Pallas with work
    items vs the reference, values and gradients w.r.t. the Gaussians."""
    g = random_scene(0, 30, opacity=(0.3, 0.97))
    cams = G.stack_cameras(G.orbit_cameras(4, 3.5, width=32, height=16))

    def loss(g, **kw):
        return jnp.sum(G.render_batch(g, cams, chunk=CHUNK, **kw).rgb ** 2)

    ref_val, ref_grad = jax.value_and_grad(loss)(g, impl="reference")
    val, grad = jax.value_and_grad(loss)(g, impl="pallas", views_per_step=3, work_item_size=8)
    np.testing.assert_allclose(val, ref_val, rtol=1e-5)
    for r, p in zip(jax.tree.leaves(ref_grad), jax.tree.leaves(grad), strict=True):
        np.testing.assert_allclose(p, r, atol=1e-4 * float(jnp.abs(r).max()), rtol=1e-4)


def test_bad_work_item_size_raises():
    args = _deep_scene()
    with pytest.raises(ValueError, match="multiple of chunk"):
        _pallas_views(args, 12)
    with pytest.raises(ValueError, match="multiple of chunk"):
        G.render(random_scene(0, 4), G.orbit_cameras(1, 3.0, width=16, height=16)[0],
                 impl="reference", chunk=8, work_item_size=0)  # fmt: skip


@pytest.mark.gpu
@pytest.mark.parametrize("work_item_size", [None, ITEM])
def test_compiled_views_and_work_items_match_reference(work_item_size):
    """On a GPU: the compiled Triton kernels (one grid over both views; work items) vs the
    reference per view, values and gradients (same tolerances: conftest pins fp32 matmuls)."""
    args = _deep_scene()
    ct = jax.random.normal(jax.random.PRNGKey(3), (2, H, W, 3))
    floats, ints = args[:5], args[5:]

    def run(fn):
        out, vjp = jax.vjp(lambda *a: fn((*a, *ints))[0], *floats)
        return out, vjp(ct)

    compiled = lambda a: pallas_gpu.rasterize_views(
        *a, width=W, height=H, chunk=CHUNK, work_item_size=work_item_size, interpret=False
    )
    ref_out, ref_grads = run(_reference_views)
    out, grads = run(compiled)
    np.testing.assert_allclose(out, ref_out, atol=1e-5, rtol=1e-5)
    for r, p in zip(ref_grads, grads, strict=True):
        np.testing.assert_allclose(p, r, atol=1e-4 * float(jnp.abs(r).max()), rtol=1e-4)
