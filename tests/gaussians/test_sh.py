"""View-dependent colour: SH bands against their closed forms, degree 0 unchanged, and the PLY
f_rest layout (channel-major, 3DGS)."""

import jax.numpy as jnp
import numpy as np
import pytest

from jaxmm import gaussians as G
from jaxmm.gaussians import sh


def test_degree_zero_is_the_dc_colour():
    dc = jnp.array([[0.3, -0.2, 1.0]])
    out = sh.view_dependent_dc(dc, jnp.zeros((1, 0, 3)), jnp.zeros((1, 3)), jnp.ones(3))
    np.testing.assert_array_equal(out, dc)


def test_bands_match_closed_forms_and_are_orthonormal():
    rng = np.random.default_rng(0)
    d = rng.normal(size=(20000, 3))
    d /= np.linalg.norm(d, axis=-1, keepdims=True)
    y = np.asarray(sh.sh_basis(jnp.asarray(d, jnp.float32), 3))
    assert y.shape == (20000, 15)
    np.testing.assert_allclose(y[:, 0], -sh.SH_C1 * d[:, 1], rtol=1e-5)  # band 1: -C1·y
    np.testing.assert_allclose(y[:, 14], sh.SH_C3[6] * d[:, 0] * (d[:, 0] ** 2 - 3 * d[:, 1] ** 2),
                               rtol=1e-4, atol=1e-6)  # fmt: skip
    # Real SH are orthonormal on the sphere: E[Y_i Y_j] = δ_ij / (4π)
    gram = y.T @ y / len(d) * 4 * np.pi
    np.testing.assert_allclose(gram, np.eye(15), atol=0.05)


def test_view_dependence_changes_with_direction():
    rest = jnp.zeros((1, 3, 3)).at[0, 2, :].set(1.0)  # band-1 x term
    means = jnp.zeros((1, 3))
    left = sh.view_dependent_dc(jnp.zeros((1, 3)), rest, means, jnp.array([-2.0, 0, 0]))
    right = sh.view_dependent_dc(jnp.zeros((1, 3)), rest, means, jnp.array([2.0, 0, 0]))
    # direction camera -> mean is +x from the left, -x from the right: Y = -C1·x flips sign
    np.testing.assert_allclose(left, -right, atol=1e-6)
    np.testing.assert_allclose(left * G.SH_C0, -sh.SH_C1, atol=1e-6)


def test_ply_writes_f_rest_channel_major(tmp_path):
    n = 3
    g = G.Gaussians3D(
        means=jnp.zeros((n, 3)), scales=jnp.full((n, 3), 0.1),
        quats=jnp.tile(jnp.array([1.0, 0, 0, 0]), (n, 1)), opacities=jnp.full((n,), 0.5),
        sh_dc=jnp.zeros((n, 3)),
    )  # fmt: skip
    rest = np.arange(n * 15 * 3, dtype=np.float32).reshape(n, 15, 3)
    G.save_ply(tmp_path / "g.ply", g, sh_rest=rest)
    from jaxmm.gaussians.ply import _read_vertices

    v = _read_vertices(str(tmp_path / "g.ply"))
    assert f"f_rest_{44}" in v.dtype.names
    for c in range(3):
        for k in (0, 7, 14):
            np.testing.assert_array_equal(v[f"f_rest_{c * 15 + k}"], rest[:, k, c])
    with pytest.raises(ValueError, match="sh_rest"):
        G.save_ply(tmp_path / "bad.ply", g, sh_rest=np.zeros((n, 16, 3)))
