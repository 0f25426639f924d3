"""4D rotation and slicing: orthonormality, and the slice vs a direct 4D density evaluation."""

import jax
import jax.numpy as jnp
import numpy as np

from jaxmm.gaussians.params import Gaussians4D, quat_to_rotmat, rotation_4d, slice_at


def _random_4d(key, n):
    k = jax.random.split(key, 6)
    return Gaussians4D(
        means=jax.random.normal(k[0], (n, 4)),
        scales=jax.random.uniform(k[1], (n, 4), minval=0.2, maxval=1.0),
        q_left=jax.random.normal(k[2], (n, 4)),
        q_right=jax.random.normal(k[3], (n, 4)),
        opacities=jax.random.uniform(k[4], (n,)),
        sh_dc=jax.random.normal(k[5], (n, 3)),
    )


def test_rotations_are_orthonormal_with_det_plus_one():
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(0), 3)
    r4 = np.asarray(rotation_4d(jax.random.normal(k1, (64, 4)), jax.random.normal(k2, (64, 4))))
    r3 = np.asarray(quat_to_rotmat(jax.random.normal(k3, (64, 4))))
    for r, d in ((r4, 4), (r3, 3)):
        # fp32 matrix products of unit quaternion entries: errors ~1e-7, 1e-5 leaves margin.
        np.testing.assert_allclose(
            r @ np.swapaxes(r, -1, -2), np.broadcast_to(np.eye(d), r.shape), atol=1e-5
        )
        np.testing.assert_allclose(np.linalg.det(r), 1.0, atol=1e-5)


def test_rotation_4d_identity_and_left_isoclinic():
    ident = jnp.array([[1.0, 0, 0, 0]])
    np.testing.assert_allclose(rotation_4d(ident, ident)[0], np.eye(4), atol=1e-7)
    # A left-isoclinic rotation moves every vector by the same angle: <v, Rv> = cos(theta)|v|^2.
    theta = 0.7
    q = jnp.array([[np.cos(theta), np.sin(theta) / np.sqrt(3)] + [np.sin(theta) / np.sqrt(3)] * 2])
    r = np.asarray(rotation_4d(q, ident)[0])
    v = np.random.default_rng(0).normal(size=(10, 4))
    np.testing.assert_allclose(
        np.einsum("ni,ij,nj->n", v, r, v), np.cos(theta) * (v * v).sum(1), rtol=1e-5
    )


def test_slice_matches_direct_4d_density():
    """exp(-½ vᵀΣ⁻¹v) at (x, t) == p(t) · exp(-½ (x-μ|t)ᵀ Σ|t⁻¹ (x-μ|t)), evaluated in float64."""
    g = _random_4d(jax.random.PRNGKey(1), 8)
    t = 0.3
    s = slice_at(g, t)
    cov4 = np.asarray(g.covariances(), np.float64)
    mu4 = np.asarray(g.means, np.float64)
    rng = np.random.default_rng(0)
    for i in range(8):
        xs = mu4[i, :3] + rng.normal(size=(16, 3)) * 0.5
        v = np.concatenate([xs, np.full((16, 1), t)], -1) - mu4[i]
        direct = np.exp(-0.5 * np.einsum("ni,ij,nj->n", v, np.linalg.inv(cov4[i]), v))
        d3 = xs - np.asarray(s.means[i], np.float64)
        cond = np.exp(
            -0.5
            * np.einsum("ni,ij,nj->n", d3, np.linalg.inv(np.asarray(s.covs[i], np.float64)), d3)
        )
        # fp32 slice vs float64 direct evaluation: relative error ~1e-5 from the conditioning.
        np.testing.assert_allclose(float(s.marginal_t[i]) * cond, direct, rtol=1e-3, atol=1e-6)
    np.testing.assert_allclose(s.opacities, g.opacities * s.marginal_t, rtol=1e-6)
    # The conditional covariance does not depend on t.
    np.testing.assert_allclose(slice_at(g, -2.0).covs, s.covs, atol=1e-6)
