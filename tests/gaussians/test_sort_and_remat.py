"""Binning's packed-key sort (same order as the multi-operand sort it replaced) and
`render_batch(checkpoint=True)` saving the binning instead of re-sorting in the backward."""

import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmm import gaussians as G
from jaxmm.gaussians import binning
from tests.gaussians.scenes import random_scene

render = importlib.import_module("jaxmm.gaussians.render")  # the module (`G.render` is a function)


def _keys(seed, n, size, capacity):
    g = random_scene(seed, n, opacity=(0.3, 0.97), scale=(0.02, 0.3))
    cam = G.Camera.look_at((0.2, -3.2, 0.8), fov_x_deg=50.0, width=size, height=size)
    proj = G.project(G.covariances_3d(g), cam)
    fn = lambda *a: binning.intersections(*a, width=size, height=size, capacity=capacity)
    return jax.jit(fn)(proj.means2d, proj.radii, proj.depths, proj.valid)


@pytest.mark.parametrize("seed,n,size", [(0, 80, 40), (1, 600, 96)])
def test_packed_sort_equals_reference_sort(seed, n, size):
    tile_keys, depth_keys, ids, total = _keys(seed, n, size, capacity=12 * n)
    assert 0 < int(total) < 12 * n  # some unused slots (tile num_tiles, depth inf) too
    new = jax.jit(binning._sort_packed)(tile_keys, depth_keys, ids)
    old = jax.jit(binning._sort_reference)(tile_keys, depth_keys, ids)
    for a, b in zip(new, old, strict=True):
        assert a.dtype == jnp.int32
        np.testing.assert_array_equal(a, b)


def test_packed_sort_breaks_ties_by_gaussian_id_and_keeps_float_order():
    rng = np.random.default_rng(0)
    m = 4096
    tiles = rng.integers(0, 7, m).astype(np.int32)
    # few distinct depths (many exact ties), neighbours one ulp apart, and +inf padding
    base = np.float32(2.5)
    depths = np.array([base, np.nextafter(base, np.float32(3)), np.float32(1e-3), np.inf])
    depths = depths.astype(np.float32)[rng.integers(0, 4, m)]
    ids = np.arange(m, dtype=np.int32)  # slot order = Gaussian-id order, as in `intersections`
    sorted_tiles, sorted_ids = jax.jit(binning._sort_packed)(tiles, depths, ids)
    want = np.lexsort((ids, depths, tiles))  # stable: (tile, depth), then slot order
    np.testing.assert_array_equal(sorted_ids, ids[want])
    np.testing.assert_array_equal(sorted_tiles, tiles[want])


def test_order_bits_is_monotone():
    x = np.array([-np.inf, -3.0, -1e-30, -0.0, 0.0, 1e-38, 1.0, 1.0000001, 3e38, np.inf])
    bits = np.asarray(binning.order_bits(jnp.asarray(x, jnp.float32)), np.uint64)
    assert np.all(np.diff(bits.astype(np.int64)) > 0)


def _count(jaxpr, name):
    total = 0
    for eqn in jaxpr.eqns:
        total += eqn.primitive.name == name
        for v in eqn.params.values():
            for sub in v if isinstance(v, (tuple, list)) else (v,):
                if hasattr(sub, "eqns"):
                    total += _count(sub, name)
                elif hasattr(sub, "jaxpr") and hasattr(sub.jaxpr, "eqns"):
                    total += _count(sub.jaxpr, name)
    return total


def _grad_program(impl, views=3):
    g = random_scene(0, 30, opacity=(0.3, 0.9))
    cams = G.stack_cameras(G.orbit_cameras(views, 3.5, width=32, height=16))
    loss = lambda g: jnp.sum(G.render_batch(g, cams, impl=impl).rgb ** 2)
    return jax.value_and_grad(loss), g


@pytest.fixture
def save_nothing():
    """A function switching `render_batch` to the previous checkpoint (save nothing, the
    backward re-runs binning); the caches are cleared on both sides so that no trace made
    under one policy is reused under the other."""
    saved = render.BINNING_SAVE_POLICY

    def switch():
        render.BINNING_SAVE_POLICY = None
        jax.clear_caches()

    yield switch
    render.BINNING_SAVE_POLICY = saved
    jax.clear_caches()


@pytest.mark.parametrize("impl", ["reference", "pallas"])
def test_checkpointed_grad_sorts_once_per_view(impl, save_nothing):
    """One sort in the grad program: the per-view body of the forward `lax.map` (run once
    per view); the rematerialised backward reuses the saved binning instead of re-sorting."""
    fn, g = _grad_program(impl)
    assert _count(jax.make_jaxpr(fn)(g).jaxpr, "sort") == 1
    if impl == "reference":
        assert jax.jit(fn).lower(g).compile().as_text().count(" sort(") == 1
    # Without the policy (save nothing, the previous behaviour) the backward sorts again.
    save_nothing()
    assert _count(jax.make_jaxpr(fn)(g).jaxpr, "sort") == 2


def test_saving_binning_leaves_values_and_grads_bitwise_unchanged(save_nothing):
    fn, g = _grad_program("reference")
    val, grads = jax.jit(fn)(g)
    save_nothing()
    assert _count(jax.make_jaxpr(fn)(g).jaxpr, "sort") == 2  # really the re-sorting program
    val_remat, grads_remat = jax.jit(fn)(g)
    np.testing.assert_array_equal(val, val_remat)
    for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(grads_remat), strict=True):
        np.testing.assert_array_equal(a, b)
