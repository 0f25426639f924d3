"""4D-LRM model: input layout, head activations and clamps, shapes, free Gaussians, bf16."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmm.gaussians.camera import Camera, rays
from jaxmm.models import lrm4d


def _rays(views: int, size: int):
    c2w = np.tile(np.eye(4, dtype=np.float32), (views, 1, 1))
    c2w[:, 2, 3] = -2.5
    c2w[:, 0, 3] = np.linspace(-0.5, 0.5, views)
    return rays(Camera.create(c2w, size, size, size / 2, size / 2, width=size, height=size))


def test_input_features_order_and_ranges():
    o, d = _rays(2, 8)
    images = np.random.default_rng(0).uniform(size=(1, 2, 8, 8, 3)).astype(np.float32)
    times = np.array([[-1.0, 0.5]], np.float32)
    f = np.asarray(lrm4d.input_features(images, times, o[None], d[None]))
    assert f.shape == (1, 2, 8, 8, 10)
    np.testing.assert_allclose(f[..., :3], images * 2 - 1, atol=1e-6)
    np.testing.assert_array_equal(f[0, 1, ..., 3], 0.5)
    np.testing.assert_allclose(f[..., 4:7], d[None], atol=1e-6)
    # o - <o,d> d is orthogonal to d.
    np.testing.assert_allclose(np.sum(f[..., 7:10] * f[..., 4:7], -1), 0.0, atol=1e-5)


def test_activations_and_clamps():
    n = 5
    raw = np.zeros((n, 20), np.float32)
    raw[0, 0:3] = 100.0  # ω -> 1: depth 4.5
    raw[1, 0:3] = -100.0  # ω -> 0: depth 0.1
    raw[2, 7:10] = 50.0  # huge scales -> clamped
    raw[2, 10] = 50.0
    raw[3, 11:15] = [0.0, 3.0, 0.0, 4.0]  # q_left normalised
    raw[4, 19] = 2.0  # opacity sigmoid(0) = 0.5
    raw[:, 3] = np.arange(n) - 2.0  # μt passes through
    origins = np.tile(np.array([0.0, 0.0, -2.0], np.float32), (n, 1))
    origins[1] = [0.0, 0.0, -0.5]
    dirs = np.tile(np.array([0.0, 0.0, 1.0], np.float32), (n, 1))
    g = lrm4d.activate(jnp.asarray(raw), origins, dirs)
    np.testing.assert_allclose(g.means[0, :3], [0, 0, 1.0], atol=1e-6)  # -2 + 4.5 clipped to 1
    np.testing.assert_allclose(g.means[1, :3], [0, 0, -0.4], atol=1e-6)  # -0.5 + 0.1
    np.testing.assert_allclose(g.means[4, :3], [0, 0, -2.0 + 2.3], atol=1e-6)  # ω=0.5: δ = 2.3
    raw_far = raw.copy()
    raw_far[:, 0:3] = -100.0  # depth 0.1 from z = -2: clipped to the [-1, 1] box
    assert float(lrm4d.activate(jnp.asarray(raw_far), origins, dirs).means[0, 2]) == -1.0
    np.testing.assert_allclose(g.scales[2, :3], [0.3] * 3)
    np.testing.assert_allclose(g.scales[2, 3], 1.0)
    np.testing.assert_allclose(g.scales[0, :3], np.exp(-2.3), rtol=1e-6)
    np.testing.assert_allclose(g.q_left[3], [0, 0.6, 0, 0.8], atol=1e-6)
    np.testing.assert_allclose(g.opacities[4], 0.5, atol=1e-6)
    np.testing.assert_allclose(g.opacities[0], 1 / (1 + np.exp(2.0)), rtol=1e-6)
    np.testing.assert_array_equal(g.means[:, 3], raw[:, 3])
    np.testing.assert_array_equal(g.sh_dc, raw[:, 4:7])


def test_forward_shapes_free_gaussians_and_bad_input():
    views, size = 2, 16
    o, d = _rays(views, size)
    model = lrm4d.LRM4D(width=32, num_layers=2, num_heads=2, num_free_gaussians=3)
    images = jnp.full((1, views, size, size, 3), 0.5)
    times = jnp.zeros((1, views))
    params = model.init(jax.random.key(0), images, times, o[None], d[None])
    g, raw = model.apply(params, images, times, o[None], d[None])
    n = views * size * size + 3
    assert raw.shape == (1, n, 20) and g.means.shape == (1, n, 4) and g.opacities.shape == (1, n)
    assert float(jnp.max(jnp.abs(g.means[..., :3]))) <= 1.0
    # Pixel-aligned Gaussians lie on their pixel's ray.
    pix = g.means[0, : views * size * size, :3] - o.reshape(-1, 3)
    cross = jnp.cross(pix, d.reshape(-1, 3))
    unclipped = jnp.all(jnp.abs(g.means[0, : views * size * size, :3]) < 1.0, axis=-1)
    assert float(jnp.max(jnp.where(unclipped[:, None], jnp.abs(cross), 0.0))) < 1e-5
    with pytest.raises(ValueError, match="times must be"):
        model.apply(params, images, jnp.zeros((1, 3)), o[None], d[None])


def test_bf16_compute_keeps_float32_outputs_and_is_close():
    views, size = 1, 16
    o, d = _rays(views, size)
    images = jax.random.uniform(jax.random.key(1), (1, views, size, size, 3))
    times = jnp.zeros((1, views))
    f32 = lrm4d.LRM4D(width=32, num_layers=1, num_heads=2)
    bf16 = lrm4d.LRM4D(width=32, num_layers=1, num_heads=2, dtype=jnp.bfloat16, remat=True)
    params = f32.init(jax.random.key(0), images, times, o[None], d[None])
    _, raw32 = f32.apply(params, images, times, o[None], d[None])
    g16, raw16 = bf16.apply(params, images, times, o[None], d[None])
    assert raw16.dtype == jnp.float32 and g16.opacities.dtype == jnp.float32
    # bf16 has 8 mantissa bits: atol 2e-2 (docs/testing.md bf16 tolerance).
    np.testing.assert_allclose(raw16, raw32, atol=2e-2)


def test_size_table():
    assert lrm4d.SIZES["base"] == lrm4d.LRM4DSize(8, 768, 12, 12)
    assert lrm4d.SIZES["large"] == lrm4d.LRM4DSize(8, 1024, 24, 16)
