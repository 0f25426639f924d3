"""Pallas rasteriser (interpret mode on CPU) vs the pure-jnp reference: values and gradients."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from jaxmm import gaussians as G
from kernels_pallas.splat import pallas_gpu, reference
from tests.gaussians.scenes import random_scene

W, H = 40, 32  # 3x2 tiles, the last column ragged


@functools.cache
def _scene(seed=0, n=80):
    """Projected + binned inputs of the rasteriser for a random scene with saturated pixels."""
    g = random_scene(seed, n, opacity=(0.3, 0.97), scale=(0.1, 0.4))
    cam = G.Camera.look_at((0.2, -3.2, 0.8), fov_x_deg=50.0, width=W, height=H)
    proj = G.project(G.covariances_3d(g), cam)
    binned = G.bin_gaussians(
        proj.means2d, proj.radii, proj.depths, proj.valid, width=W, height=H, capacity=1024
    )
    assert int(binned.overflow) == 0
    args = (proj.means2d, proj.conics, proj.colors, proj.opacities, proj.depths)
    return args, (binned.gauss_ids, binned.tile_ranges), int(binned.max_per_tile)


def _run(fn, args, binned, chunk):
    return fn(*args, *binned, width=W, height=H, chunk=chunk)


def test_values_match_reference():
    args, binned, max_per_tile = _scene()
    assert max_per_tile > 16  # several chunks of 8 per tile
    ref = _run(reference.rasterize, args, binned, chunk=8)
    pal = _run(functools.partial(pallas_gpu.rasterize, interpret=True), args, binned, chunk=8)
    assert float(ref[2].min()) < 1e-3  # some pixels saturate: early stop is exercised
    for name, r, p in zip(("rgb", "depth", "transmittance"), ref, pal, strict=True):
        # fp32, same formula and order; only the chunk/tile reduction layout differs.
        np.testing.assert_allclose(p, r, atol=1e-5, rtol=1e-5, err_msg=name)


def test_gradients_of_all_inputs_match_reference():
    args, binned, _ = _scene()
    k = jax.random.split(jax.random.PRNGKey(1), 3)
    ct = (
        jax.random.normal(k[0], (H, W, 3)),
        jax.random.normal(k[1], (H, W)),
        jax.random.normal(k[2], (H, W)),
    )

    def grads(fn):
        f = lambda *a: _run(fn, a, binned, chunk=8)
        _, vjp = jax.vjp(f, *args)
        return vjp(ct)

    ref = grads(reference.rasterize)
    pal = grads(functools.partial(pallas_gpu.rasterize, interpret=True))
    names = ("means2d", "conics", "colors", "opacities", "depths")
    for name, r, p in zip(names, ref, pal, strict=True):
        assert float(jnp.abs(r).max()) > 0, name
        # Sums of up to 256 pixel terms in different orders (hand-written backward vs
        # autodiff of the reference): 1e-4 relative to the gradient's scale.
        scale = float(jnp.abs(r).max())
        np.testing.assert_allclose(p, r, atol=1e-4 * scale, rtol=1e-4, err_msg=name)


@pytest.mark.parametrize("impl", ["pallas", "reference"])
def test_check_grads_tiny_scene(impl):
    """Finite differences vs the VJP on 3 Gaussians in one 16x16 tile (no alpha thresholds
    near the evaluation point: opacities 0.4-0.6, all pixels well inside 3 sigma)."""
    means2d = jnp.array([[7.0, 8.5], [9.5, 6.0], [8.0, 9.0]])
    conics = jnp.array([[0.05, 0.01, 0.04], [0.03, -0.005, 0.06], [0.08, 0.0, 0.05]])
    colors = jnp.array([[0.9, 0.1, 0.2], [0.1, 0.8, 0.3], [0.2, 0.3, 0.9]])
    opac = jnp.array([0.5, 0.6, 0.4])
    depths = jnp.array([1.0, 2.0, 3.0])
    gauss_ids = jnp.array([0, 1, 2, 3], jnp.int32)  # 3 = empty slot
    tile_ranges = jnp.array([[0, 3]], jnp.int32)
    fn = (
        functools.partial(pallas_gpu.rasterize, interpret=True)
        if impl == "pallas"
        else (reference.rasterize)
    )
    weights = jax.random.normal(jax.random.PRNGKey(0), (16, 16, 5))

    def loss(m, c, col, o, d):
        rgb, dep, trans = fn(m, c, col, o, d, gauss_ids, tile_ranges, width=16, height=16, chunk=2)
        out = jnp.concatenate([rgb, dep[..., None], trans[..., None]], -1)
        return jnp.sum(out * weights)

    # fp32 central differences with eps=1e-3 on O(1) outputs: ~1e-3 relative noise.
    check_grads(
        loss,
        (means2d, conics, colors, opac, depths),
        order=1,
        modes=["rev"],
        eps=1e-3,
        atol=2e-2,
        rtol=2e-2,
    )


@pytest.mark.slow
def test_render_batch_with_pallas_matches_reference_under_vmap_and_remat():
    """The 4D-LRM path: render_batch (vmap + jax.checkpoint) through the custom-VJP kernel."""
    g = random_scene(0, 30, opacity=(0.3, 0.9))
    cams = G.stack_cameras(G.orbit_cameras(2, 3.5, width=32, height=16))

    def loss(g, impl):
        return jnp.sum(G.render_batch(g, cams, impl=impl).rgb ** 2)

    ref_val, ref_grad = jax.value_and_grad(loss)(g, "reference")
    pal_val, pal_grad = jax.value_and_grad(loss)(g, "pallas")
    np.testing.assert_allclose(pal_val, ref_val, rtol=1e-5)  # fp32 sums over 1024 pixels
    for r, p in zip(jax.tree.leaves(ref_grad), jax.tree.leaves(pal_grad), strict=True):
        # Gradients through projection of per-pixel sums: 1e-4 relative to their scale.
        np.testing.assert_allclose(p, r, atol=1e-4 * float(jnp.abs(r).max()), rtol=1e-4)


@pytest.mark.gpu
def test_compiled_gpu_kernel_matches_reference():
    """On a GPU: the compiled Triton kernel (not interpret mode) vs the reference."""
    args, binned, _ = _scene()
    ct = jax.random.normal(jax.random.PRNGKey(2), (H, W, 3))

    def run(fn):
        f = lambda *a: _run(fn, a, binned, chunk=32)[0]
        out, vjp = jax.vjp(f, *args)
        return out, vjp(ct)

    ref_out, ref_grads = run(reference.rasterize)
    pal_out, pal_grads = run(functools.partial(pallas_gpu.rasterize, interpret=False))
    # fp32 on GPU; exp/log1p may differ from XLA's by an ulp or two.
    np.testing.assert_allclose(pal_out, ref_out, atol=1e-5, rtol=1e-5)
    for r, p in zip(ref_grads, pal_grads, strict=True):
        np.testing.assert_allclose(p, r, atol=1e-4 * float(jnp.abs(r).max()), rtol=1e-4)
