"""The dense compositor (`kernels_pallas/splat/dense.py`, render impl="dense": no binning) vs
the float64 brute-force compositor and the tiled reference: values, gradients, the per-tile
top-k path and its dropped-pair count, and the 4D slice."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmm import gaussians as G
from kernels_pallas.splat import dense
from tests.gaussians.scenes import brute_force_render, random_scene, random_scene_4d

BG = (0.2, 0.5, 1.0)
CAM = dict(fov_x_deg=45.0, width=32, height=24)


@pytest.mark.parametrize("opacity", [(0.05, 0.34), (0.6, 1.0)])
def test_dense_matches_brute_force(opacity):
    """High opacities saturate pixels, exercising the 0.99 clamp and the T < 1e-4 stop."""
    g = random_scene(3, 50, opacity=opacity, scale=(0.1, 0.4))
    cam = G.Camera.look_at((0.3, -3.5, 1.0), **CAM)
    out = G.render(g, cam, background=BG, impl="dense", max_per_tile=None, tile_size=8)
    rgb, alpha, depth = brute_force_render(g, cam, BG)
    # fp32 log-space transmittance vs float64 sequential products: ~1e-6 observed.
    np.testing.assert_allclose(out.rgb, rgb, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(out.alpha, alpha, atol=1e-5, rtol=1e-5)
    m = alpha > 1e-3  # depth divides by alpha
    np.testing.assert_allclose(np.asarray(out.depth)[m], depth[m], rtol=1e-4, atol=1e-4)
    assert alpha.max() > (0.999 if opacity[0] > 0.5 else 0.5)


def test_topk_tiles_equal_dense_when_nothing_is_dropped_and_count_drops():
    g = random_scene(4, 60, scale=(0.05, 0.3))
    cam = G.Camera.look_at((0.3, -3.5, 1.0), **CAM)
    exact = G.render(g, cam, background=BG, impl="dense", max_per_tile=None, tile_size=8)
    roomy = G.render(g, cam, background=BG, impl="dense", max_per_tile=60, tile_size=8)
    assert int(roomy.stats.tile_overflow) == 0 and int(roomy.stats.intersections) > 0
    # Same Gaussians per pixel in the same depth order; only summation order differs.
    np.testing.assert_allclose(roomy.rgb, exact.rgb, atol=1e-6)
    tight = G.render(g, cam, background=BG, impl="dense", max_per_tile=2, tile_size=8)
    assert int(tight.stats.tile_overflow) > 0  # dropped pairs are counted, never silent
    assert float(jnp.abs(tight.rgb - exact.rgb).max()) > 1e-3


def test_dense_gradients_match_tiled_reference():
    """Both paths are autodiff of the same compositing rule (the reference rasteriser's twin
    is plain jnp too): gradients of every parameter agree to the kernel tolerance, 1e-4."""
    g = random_scene(5, 24, opacity=(0.05, 0.34), scale=(0.1, 0.3))
    cam = G.Camera.look_at((0.3, -3.5, 1.0), fov_x_deg=45.0, width=16, height=16)
    weights = jax.random.uniform(jax.random.PRNGKey(0), (16, 16, 3))

    def loss(g, **kw):
        return jnp.sum(weights * G.render(g, cam, background=BG, **kw).rgb)

    dense = jax.grad(lambda g: loss(g, impl="dense", max_per_tile=None))(g)
    tiled = jax.grad(lambda g: loss(g, impl="reference", chunk=8))(g)
    for name in ("means", "scales", "quats", "opacities", "sh_dc"):
        a, b = getattr(dense, name), getattr(tiled, name)
        assert float(jnp.abs(a).max()) > 0, name
        np.testing.assert_allclose(a, b, atol=1e-4, rtol=1e-4, err_msg=name)


def test_dense_render_4d_matches_tiled_and_batch_is_per_view():
    g4 = random_scene_4d(8, 40, extent=0.6, scale=(0.05, 0.4), opacity=(0.05, 0.34))
    cams = G.orbit_cameras(2, 2.6, width=16, height=16)
    times = jnp.array([-0.3, 0.4])
    tiled = G.render_4d(g4, cams[1], times[1], impl="reference")
    batch = G.render_batch(
        g4, G.stack_cameras(cams), times, impl="dense", max_per_tile=None, tile_size=8
    )
    # Opacities < 0.35 keep the tiled extent uncapped, so both see the same Gaussians.
    np.testing.assert_allclose(batch.rgb[1], tiled.rgb, atol=1e-5)
    assert float(jnp.abs(batch.rgb[0] - batch.rgb[1]).max()) > 1e-2


def test_dense_bad_inputs():
    g = random_scene(0, 4)
    cam = G.Camera.look_at((0.3, -3.5, 1.0), fov_x_deg=45.0, width=20, height=16)
    with pytest.raises(ValueError, match="not divisible by tile_size=8"):
        G.render(g, cam, impl="dense", tile_size=8)
    with pytest.raises(ValueError, match="dense"):
        G.render(g, cam, impl="dens")


def test_written_backward_matches_autodiff_twin():
    # One 8x8 tile per row of T, 48 depth-sorted Gaussians: some invalid, some with α clamped
    # at 0.99, and enough coverage that compositing stops at T < 1e-4 (checked below).
    t, k = 3, 48
    ks = jax.random.split(jax.random.PRNGKey(1), 8)
    px_u = jnp.tile(jnp.tile(jnp.arange(8) + 0.5, 8)[None], (t, 1))
    px_v = jnp.tile(jnp.repeat(jnp.arange(8) + 0.5, 8)[None], (t, 1))
    means = jax.random.uniform(ks[0], (t, k, 2)) * 10 - 1
    inv_var = jax.random.uniform(ks[1], (t, k, 2), minval=0.05, maxval=0.6)
    rho = 0.3 * jax.random.uniform(ks[2], (t, k), minval=-1, maxval=1)
    conics = jnp.stack(
        [inv_var[..., 0], rho * jnp.sqrt(inv_var[..., 0] * inv_var[..., 1]), inv_var[..., 1]], -1
    )
    colors = jax.random.uniform(ks[3], (t, k, 3))
    opacities = jax.random.uniform(ks[4], (t, k), maxval=1.2)
    depths = jnp.sort(jax.random.uniform(ks[5], (t, k)), -1)
    ok = jax.random.uniform(ks[6], (t, k)) > 0.1
    w = [
        jax.random.normal(kk, (t, 64, 3))[..., :n]
        for kk, n in zip(jax.random.split(ks[7], 3), (3, 1, 1), strict=True)
    ]

    def loss(fn):
        def f(*args):
            rgb, trans, depth = fn(px_u, px_v, *args[:4], args[4], ok)
            return (
                jnp.sum(rgb * w[0]) + jnp.sum(trans * w[1][..., 0]) + jnp.sum(depth * w[2][..., 0])
            )

        return f

    args = (means, conics, colors, opacities, depths)
    out = dense._composite(px_u, px_v, *args, ok)
    assert float(out[1].min()) < 2e-4  # the early stop is exercised
    ours = jax.grad(loss(dense._composite), argnums=range(5))(*args)
    ref = jax.grad(loss(dense._composite_autodiff), argnums=range(5))(*args)
    for name, a, b in zip(
        ("means", "conics", "colors", "opacities", "depths"), ours, ref, strict=True
    ):
        scale = float(jnp.abs(b).max())
        assert scale > 0, name
        np.testing.assert_allclose(a, b, atol=1e-5 * scale, err_msg=name)
