"""`max_per_tile` means the same for the reference and the Pallas kernel: each tile composites
the first `max_per_tile` entries of its sorted range, and both report what that drops."""

import jax
import jax.numpy as jnp
import numpy as np

from jaxmm import gaussians as G
from kernels_pallas.splat import common
from tests.gaussians.scenes import random_scene

W, H = 40, 32
CAP = 6


def _scene():
    g = random_scene(0, 60, opacity=(0.3, 0.9), scale=(0.1, 0.4))
    cam = G.Camera.look_at((0.2, -3.2, 0.8), fov_x_deg=50.0, width=W, height=H)
    return g, cam


def test_capped_render_is_the_same_for_reference_and_pallas_and_both_count_overflow():
    g, cam = _scene()
    full = G.render(g, cam, impl="reference", max_per_tile=None)
    ref = G.render(g, cam, impl="reference", max_per_tile=CAP)
    pal = G.render(g, cam, impl="pallas", max_per_tile=CAP)
    dropped = int(ref.stats.tile_overflow)
    assert dropped > 0 and int(full.stats.tile_overflow) == 0
    assert int(pal.stats.tile_overflow) == dropped
    assert float(jnp.abs(ref.rgb - full.rgb).max()) > 1e-3  # the cap changes the image
    for name in ("rgb", "alpha", "depth"):
        np.testing.assert_allclose(
            getattr(pal, name), getattr(ref, name), atol=1e-5, rtol=1e-5, err_msg=name
        )


def test_capped_gradients_match():
    g, cam = _scene()
    w = jax.random.normal(jax.random.PRNGKey(1), (H, W, 3))
    loss = lambda g, impl: jnp.sum(G.render(g, cam, impl=impl, max_per_tile=CAP).rgb * w)
    ref = jax.grad(loss)(g, "reference")
    pal = jax.grad(loss)(g, "pallas")
    for r, p in zip(jax.tree.leaves(ref), jax.tree.leaves(pal), strict=True):
        np.testing.assert_allclose(p, r, atol=1e-4 * float(jnp.abs(r).max()), rtol=1e-4)


def test_cap_ranges_and_overflow_helpers():
    ranges = jnp.array([[0, 3], [3, 13], [13, 13]], jnp.int32)
    np.testing.assert_array_equal(common.cap_ranges(ranges, 4), [[0, 3], [3, 7], [13, 13]])
    assert common.cap_ranges(ranges, None) is ranges
    assert int(common.tile_overflow(ranges, 4)) == 6
    assert int(common.tile_overflow(ranges, None)) == 0
