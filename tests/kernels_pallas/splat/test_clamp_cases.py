"""The two alpha thresholds of 3DGS compositing, exercised on purpose (issue 13).

`tests/kernels_pallas/splat/test_rasterize.py` keeps opacities <= 0.97, so no pixel ever reaches
the 0.99 alpha clamp, and its scenes barely touch the 1/255 cut. Here:

- near-opaque scenes (opacities up to 1.0, raw alpha > 0.99 at many pixels): the clamp must stop
  the gradient to opacity and to the Gaussian's shape at clamped pixels (the reference gets that
  from autodiff of `minimum`; the Pallas backward from its `clamped` mask);
- faint scenes (opacities 0.003-0.03, alpha crossing 1/255 inside each footprint): the cut must
  drop the same pixels in both rasterisers and in the float64 brute-force compositor.

Tolerances (docs/testing.md): fp32 values atol/rtol 1e-5; gradients 1e-4 relative to the
gradient's scale (sums of up to 256 pixel terms in a different order); float64 brute force vs
fp32 tiles 1e-5.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmm import gaussians as G
from kernels_pallas.splat import common, pallas_gpu, reference
from tests.gaussians.scenes import dense_composite, random_scene

W, H = 40, 32  # 3x2 tiles, the last column ragged
PALLAS = functools.partial(pallas_gpu.rasterize, interpret=True)
SCENES = {
    # name: (seed, n, opacity range, scale range)
    "opaque": (3, 12, (0.6, 1.0), (0.5, 1.0)),
    "faint": (4, 40, (0.003, 0.03), (0.1, 0.4)),
}


@functools.cache
def _scene(name):
    seed, n, opacity, scale = SCENES[name]
    g = random_scene(seed, n, opacity=opacity, scale=scale)
    if name == "opaque":  # every third Gaussian fully opaque: raw alpha 1.0 at its centre
        g = g.replace(opacities=g.opacities.at[::3].set(1.0))
    cam = G.Camera.look_at((0.2, -3.2, 0.8), fov_x_deg=50.0, width=W, height=H)
    proj = G.project(G.covariances_3d(g), cam)
    binned = G.bin_gaussians(
        proj.means2d, proj.radii, proj.depths, proj.valid, width=W, height=H, capacity=1024
    )
    assert int(binned.overflow) == 0
    args = (proj.means2d, proj.conics, proj.colors, proj.opacities, proj.depths)
    return args, (binned.gauss_ids, binned.tile_ranges), np.asarray(proj.valid)


def _raw_alpha(args, valid):
    """[N, H, W] raw alpha o·e^power (power <= 0) of every valid Gaussian at every pixel."""
    means2d, conics, _, opac, _ = (np.asarray(a, np.float64) for a in args)
    px, py = np.meshgrid(np.arange(W) + 0.5, np.arange(H) + 0.5, indexing="xy")
    dx = px[None] - means2d[:, 0, None, None]
    dy = py[None] - means2d[:, 1, None, None]
    c = conics[:, :, None, None]
    power = -0.5 * (c[:, 0] * dx * dx + c[:, 2] * dy * dy) - c[:, 1] * dx * dy
    raw = opac[:, None, None] * np.exp(np.minimum(power, 0.0))
    return np.where(valid[:, None, None] & (power <= 0), raw, 0.0)


def _run(fn, args, binned):
    return fn(*args, *binned, width=W, height=H, chunk=8)


def test_scenes_reach_the_thresholds():
    """The scenes do what this file says: raw alpha above the clamp at visible pixels, and faint
    footprints that cross 1/255 (some pixels kept, some cut)."""
    args, _, valid = _scene("opaque")
    raw = _raw_alpha(args, valid)
    assert int((raw > common.ALPHA_MAX + 1e-3).sum()) > 20
    args, _, valid = _scene("faint")
    raw = _raw_alpha(args, valid)
    kept = (raw >= common.ALPHA_MIN).sum()
    cut = ((raw > 0) & (raw < common.ALPHA_MIN)).sum()
    assert kept > 50 and cut > 50, (kept, cut)


@pytest.mark.parametrize("name", sorted(SCENES))
def test_values_and_gradients_match_reference(name):
    """Pallas (interpret mode) vs the reference: values, then the hand-written backward vs
    autodiff of the reference. In the opaque scene, a backward that lets gradient through
    clamped pixels changes d_opacities and d_means2d by O(1) of their scale."""
    args, binned, valid = _scene(name)
    k = jax.random.split(jax.random.PRNGKey(7), 3)
    ct = (
        jax.random.normal(k[0], (H, W, 3)),
        jax.random.normal(k[1], (H, W)),
        jax.random.normal(k[2], (H, W)),
    )

    def run(fn):
        out, vjp = jax.vjp(lambda *a: _run(fn, a, binned), *args)
        return out, vjp(ct)

    ref, ref_grads = run(reference.rasterize)
    pal, pal_grads = run(PALLAS)
    for label, r, p in zip(("rgb", "depth", "transmittance"), ref, pal, strict=True):
        np.testing.assert_allclose(p, r, atol=1e-5, rtol=1e-5, err_msg=f"{name} {label}")
    names = ("means2d", "conics", "colors", "opacities", "depths")
    for label, r, p in zip(names, ref_grads, pal_grads, strict=True):
        scale = float(jnp.abs(r).max())
        assert scale > 0, label
        np.testing.assert_allclose(p, r, atol=1e-4 * scale, rtol=1e-4, err_msg=f"{name} d_{label}")
    if name != "faint":
        return  # opacities > 0.35 exceed the 3-sigma cap of the tiled extent (tests/gaussians)
    # The reference against an independent float64 compositor (no tiles, global depth order).
    rgb64, alpha64, _ = dense_composite(*args, valid, W, H, np.zeros(3))
    np.testing.assert_allclose(ref[0], rgb64, atol=1e-5, err_msg="rgb vs brute force")
    np.testing.assert_allclose(1.0 - ref[2], alpha64, atol=1e-5, err_msg="alpha vs brute force")


def test_clamped_pixels_carry_no_opacity_gradient():
    """One Gaussian with opacity 1.0 over one 16x16 tile: alpha is clamped to 0.99 wherever
    e^power > 0.99, so d(sum of alpha)/d(opacity) is the sum of e^power over the *unclamped*
    pixels only (hand-computed), for both rasterisers."""
    means2d = jnp.array([[8.0, 8.0]])
    conics = jnp.array([[0.02, 0.0, 0.02]])
    colors = jnp.array([[0.5, 0.5, 0.5]])
    depths = jnp.array([1.0])
    opac = jnp.array([1.0])
    gauss_ids = jnp.array([0], jnp.int32)
    tile_ranges = jnp.array([[0, 1]], jnp.int32)
    px, py = np.meshgrid(np.arange(16) + 0.5, np.arange(16) + 0.5, indexing="xy")
    gauss = np.exp(-0.5 * 0.02 * ((px - 8.0) ** 2 + (py - 8.0) ** 2))
    assert (gauss > 0.99).sum() >= 4  # the central pixels are clamped
    expected = gauss[(gauss <= 0.99) & (gauss >= 1 / 255)].sum()

    for fn in (reference.rasterize, PALLAS):

        def alpha_sum(o, fn=fn):
            _, _, trans = fn(
                means2d, conics, colors, o, depths, gauss_ids, tile_ranges, width=16, height=16
            )
            return jnp.sum(1.0 - trans)

        d_opac = jax.grad(alpha_sum)(opac)
        np.testing.assert_allclose(d_opac[0], expected, rtol=1e-5, err_msg=str(fn))
