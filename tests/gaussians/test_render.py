"""Tiled reference renderer vs an independent dense compositor; stats, bad inputs, batching."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmm import gaussians as G
from tests.gaussians.scenes import brute_force_render, random_scene, random_scene_4d

BG = (0.2, 0.5, 1.0)


@pytest.mark.parametrize(
    "seed,n,opacity,size",
    [
        (0, 60, (0.05, 0.34), (40, 36)),  # several tiles, ragged last row/column of tiles
        # High opacities: the 3σ cap can cut alpha >= 1/255 tails, so use one tile (16x16),
        # where every intersecting Gaussian reaches every pixel; exercises the 0.99 clamp and
        # the T < 1e-4 early stop.
        (1, 40, (0.6, 1.0), (16, 16)),
    ],
)
def test_reference_matches_dense_compositor(seed, n, opacity, size):
    g = random_scene(seed, n, opacity=opacity, scale=(0.2, 0.5) if size[0] == 16 else (0.05, 0.3))
    cam = G.Camera.look_at((0.3, -3.5, 1.0), fov_x_deg=45.0, width=size[0], height=size[1])
    out = G.render(g, cam, background=BG, impl="reference", chunk=8)
    rgb, alpha, depth = brute_force_render(g, cam, BG)
    # fp32 (exp-cumsum transmittance) vs float64 sequential products: ~1e-6 observed.
    np.testing.assert_allclose(out.rgb, rgb, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(out.alpha, alpha, atol=1e-5, rtol=1e-5)
    # depth = Σwd/Σw divides by alpha; 1e-4 relative for pixels with alpha >= 1e-3.
    m = alpha > 1e-3
    np.testing.assert_allclose(np.asarray(out.depth)[m], depth[m], rtol=1e-4, atol=1e-4)
    assert int(out.stats.overflow) == 0 and int(out.stats.visible) > 0
    assert alpha.max() > 0.5  # the scene is actually in view
    if opacity[0] > 0.5:
        assert alpha.max() > 0.999  # saturated pixels: the T < 1e-4 stop is exercised


def test_overflow_is_counted_not_silent():
    g = random_scene(2, 30)
    cam = G.Camera.look_at((0.0, -3.0, 0.5), fov_x_deg=60.0, width=48, height=48)
    full = G.render(g, cam, impl="reference")
    total = int(full.stats.intersections)
    assert int(full.stats.overflow) == 0 and total > 20
    small = G.render(g, cam, impl="reference", capacity=total - 7)
    assert int(small.stats.intersections) == total
    assert int(small.stats.overflow) == 7
    assert float(jnp.abs(small.rgb - full.rgb).max()) > 0  # dropping was real


def test_camera_behind_everything_gives_background():
    g = random_scene(3, 10)
    cam = G.Camera.look_at((0.0, -5.0, 0.0), (0.0, -10.0, 0.0), fov_x_deg=60.0, width=16, height=16)
    out = G.render(g, cam, background=BG, impl="reference")
    assert int(out.stats.visible) == 0 and int(out.stats.intersections) == 0
    np.testing.assert_array_equal(out.rgb, np.broadcast_to(np.float32(BG), (16, 16, 3)))
    np.testing.assert_array_equal(out.alpha, 0.0)


def test_nan_gaussians_are_dropped_and_gradients_stay_finite():
    g = random_scene(4, 12)
    bad = g.replace(means=g.means.at[3].set(jnp.nan), scales=g.scales.at[5, 1].set(jnp.inf))
    cam = G.Camera.look_at((0.0, -3.0, 0.5), fov_x_deg=60.0, width=16, height=16)

    def loss(g):
        out = G.render(g, cam, impl="reference")
        return jnp.mean(out.rgb), out.stats

    (value, stats), grads = jax.value_and_grad(loss, has_aux=True)(bad)
    assert np.isfinite(float(value)) and int(stats.nonfinite) == 2
    assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(grads))


def test_bad_inputs_raise_before_device_work():
    g = random_scene(5, 4)
    cam = G.Camera.look_at((0.0, -3.0, 0.0), fov_x_deg=60.0, width=16, height=16)
    with pytest.raises(ValueError, match=r"Gaussians3D.scales must have shape \(4, 3\)"):
        G.render(g.replace(scales=g.scales[:, :2]), cam)
    with pytest.raises(ValueError, match="background"):
        G.render(g, cam, background=(1.0, 1.0))
    with pytest.raises(TypeError, match="Camera"):
        G.render(g, np.eye(4))
    with pytest.raises(ValueError, match="impl"):
        G.render(g, cam, impl="cuda")
    with pytest.raises(TypeError, match="render_4d"):
        G.render_4d(g, cam, 0.0)


@pytest.mark.slow  # ~60 s on a loaded 2-core CPU (three jit compiles incl. a vmapped grad)
def test_render_batch_4d_matches_per_view_and_is_differentiable():
    g4 = random_scene_4d(6, 20, extent=1.0)
    cams = G.orbit_cameras(3, 3.5, width=16, height=16)
    times = jnp.array([-0.5, 0.0, 0.5])
    batch = G.render_batch(g4, G.stack_cameras(cams), times, impl="reference")
    assert batch.rgb.shape == (3, 16, 16, 3) and batch.stats.overflow.shape == (3,)
    single = G.render_4d(g4, cams[2], times[2], impl="reference")
    # Same ops batched by vmap; summation order may differ by an ulp.
    np.testing.assert_allclose(batch.rgb[2], single.rgb, atol=1e-6)
    assert float(jnp.abs(batch.rgb[0] - batch.rgb[2]).max()) > 1e-2  # views do differ
    grads = jax.grad(
        lambda g: jnp.mean(G.render_batch(g, G.stack_cameras(cams), times, impl="reference").rgb)
    )(g4)
    for name in ("means", "scales", "q_left", "q_right", "opacities", "sh_dc"):
        leaf = getattr(grads, name)
        assert bool(jnp.all(jnp.isfinite(leaf))) and float(jnp.abs(leaf).max()) > 0, name


def test_render_4d_with_separable_time_equals_3d_with_marginal_opacity():
    """q_left = q_right = identity: no x-t coupling, so the slice at t is the 3D Gaussian with
    opacity o·exp(-½((t-μt)/st)²) (computed here by hand) and an unchanged mean/covariance."""
    g3 = random_scene(7, 12, opacity=(0.3, 0.9))
    n = g3.num
    rng = np.random.default_rng(0)
    mu_t = jnp.asarray(rng.uniform(-1, 1, n), jnp.float32)
    s_t = jnp.asarray(rng.uniform(0.2, 0.8, n), jnp.float32)
    ident = jnp.tile(jnp.array([[1.0, 0.0, 0.0, 0.0]]), (n, 1))
    # A 4D rotation of identity quaternions cannot rotate xyz, so give axis-aligned 3D ones.
    g3 = g3.replace(quats=ident)
    g4 = G.Gaussians4D(
        means=jnp.concatenate([g3.means, mu_t[:, None]], -1),
        scales=jnp.concatenate([g3.scales, s_t[:, None]], -1),
        q_left=ident,
        q_right=ident,
        opacities=g3.opacities,
        sh_dc=g3.sh_dc,
    )
    t = 0.2
    cam = G.Camera.look_at((0.3, -3.5, 1.0), fov_x_deg=45.0, width=16, height=16)
    out4 = G.render_4d(g4, cam, t, impl="reference")
    weight = np.exp(-0.5 * ((t - np.asarray(mu_t)) / np.asarray(s_t)) ** 2)
    out3 = G.render(g3.replace(opacities=g3.opacities * weight), cam, impl="reference")
    # Same pipeline after slicing; the 4D covariance goes through an extra 4x4 product.
    np.testing.assert_allclose(out4.rgb, out3.rgb, atol=1e-5)
    np.testing.assert_allclose(out4.alpha, out3.alpha, atol=1e-5)
    assert float(out4.alpha.max()) > 0.1
