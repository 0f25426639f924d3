"""Gaussian parameter pytrees (activated values) and the 4D math: rotation and slicing at t.

Conventions (one for the whole package):
- quaternions are (w, x, y, z), need not be unit (normalised where used);
- scales are standard deviations (activated, > 0); opacities in [0, 1];
- colour is SH degree 0: rgb = max(SH_C0 · sh_dc + 0.5, 0);
- a 4D Gaussian lives in (x, y, z, t); its rotation is the 4DGS reference code's
  left-isoclinic L(q_l) times right-isoclinic R(q_r) (`rotation_4d`).
"""

from __future__ import annotations

import dataclasses

import flax.struct
import jax
import jax.numpy as jnp

SH_C0 = 0.28209479177387814


def sh_dc_to_rgb(sh_dc: jax.Array) -> jax.Array:
    return jnp.maximum(SH_C0 * sh_dc + 0.5, 0.0)


def rgb_to_sh_dc(rgb: jax.Array) -> jax.Array:
    return (rgb - 0.5) / SH_C0


@flax.struct.dataclass
class Gaussians3D:
    means: jax.Array  # [N, 3]
    scales: jax.Array  # [N, 3] std-devs along the rotated axes
    quats: jax.Array  # [N, 4] (w, x, y, z)
    opacities: jax.Array  # [N]
    sh_dc: jax.Array  # [N, 3] SH degree-0 coefficients

    @property
    def num(self) -> int:
        return self.means.shape[0]

    @property
    def rgb(self) -> jax.Array:
        return sh_dc_to_rgb(self.sh_dc)

    def covariances(self) -> jax.Array:
        """Σ = R S Sᵀ Rᵀ, [N, 3, 3]."""
        rot = quat_to_rotmat(self.quats)
        m = rot * self.scales[:, None, :]
        return m @ jnp.swapaxes(m, -1, -2)

    def validate(self) -> None:
        _check_shapes(self, {"means": 3, "scales": 3, "quats": 4, "opacities": None, "sh_dc": 3})


@flax.struct.dataclass
class Gaussians4D:
    means: jax.Array  # [N, 4] (x, y, z, t)
    scales: jax.Array  # [N, 4] std-devs along the rotated 4D axes
    q_left: jax.Array  # [N, 4] (w, x, y, z)
    q_right: jax.Array  # [N, 4]
    opacities: jax.Array  # [N]
    sh_dc: jax.Array  # [N, 3]

    @property
    def num(self) -> int:
        return self.means.shape[-2]

    def take(self, index) -> Gaussians4D:
        """Indexes the leading (batch) axes, e.g. `g.take(b)` for one sample of [B, N]."""
        return jax.tree.map(lambda x: x[index], self)

    def covariances(self) -> jax.Array:
        """Σ = R S Sᵀ Rᵀ, [N, 4, 4]."""
        m = rotation_4d(self.q_left, self.q_right) * self.scales[:, None, :]
        return m @ jnp.swapaxes(m, -1, -2)

    def validate(self) -> None:
        _check_shapes(
            self,
            {"means": 4, "scales": 4, "q_left": 4, "q_right": 4, "opacities": None, "sh_dc": 3},
        )


_SAFE_FILL = {
    "scales": 1.0,
    "quats": (1.0, 0.0, 0.0, 0.0),
    "q_left": (1.0, 0.0, 0.0, 0.0),
    "q_right": (1.0, 0.0, 0.0, 0.0),
}


def sanitize(g):
    """Replaces every Gaussian with a non-finite parameter by a harmless transparent one.

    Done on the raw parameters, before any arithmetic, so that no NaN/inf enters the forward
    pass and the backward stays finite (a later `where` would still give 0·inf = NaN).
    Returns (clean Gaussians, finite mask [N]). Works for Gaussians3D/4D and Slice3D.
    """
    leaves = {f.name: getattr(g, f.name) for f in dataclasses.fields(g)}
    n = g.means.shape[0]
    finite = jnp.ones((n,), bool)
    for x in leaves.values():
        finite &= jnp.all(jnp.isfinite(x.reshape(n, -1)), axis=-1)
    clean = {}
    for name, x in leaves.items():
        fill = jnp.broadcast_to(jnp.asarray(_SAFE_FILL.get(name, 0.0), x.dtype), x.shape[1:])
        if name == "covs":
            fill = jnp.eye(3, dtype=x.dtype)
        mask = finite.reshape((n,) + (1,) * (x.ndim - 1))
        clean[name] = jnp.where(mask, x, fill)
    return g.replace(**clean), finite


def _check_shapes(g, trailing: dict[str, int | None]) -> None:
    """Host-side shape check naming the wrong field (works on tracers: shapes are static)."""
    name = type(g).__name__
    n = g.means.shape[0] if g.means.ndim >= 1 else None
    for field, last in trailing.items():
        shape = tuple(getattr(g, field).shape)
        want = (n,) if last is None else (n, last)
        if shape != want:
            raise ValueError(f"{name}.{field} must have shape {want} (N={n}), got {shape}")


def quat_to_rotmat(q: jax.Array) -> jax.Array:
    """(w, x, y, z) quaternions [..., 4] -> rotation matrices [..., 3, 3] (normalised first)."""
    q = q / jnp.maximum(jnp.linalg.norm(q, axis=-1, keepdims=True), 1e-12)
    w, x, y, z = jnp.moveaxis(q, -1, 0)
    rows = [
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ]
    return jnp.stack([jnp.stack(r, -1) for r in rows], -2)


def rotation_4d(q_left: jax.Array, q_right: jax.Array) -> jax.Array:
    """4D rotation [..., 4, 4] = L(q_l) @ R(q_r) on (x, y, z, t) coordinates.

    L(q) is left multiplication by q = (a, b, c, d) and R(p) right multiplication by p in the
    quaternion algebra, as in the 4DGS reference code (`build_rotation_4d`). Each is orthogonal
    with det +1 for unit quaternions, so their product is a rotation; every rotation of R^4
    arises this way (up to the sign pair ±(q_l, q_r)).
    """
    ql = q_left / jnp.maximum(jnp.linalg.norm(q_left, axis=-1, keepdims=True), 1e-12)
    qr = q_right / jnp.maximum(jnp.linalg.norm(q_right, axis=-1, keepdims=True), 1e-12)
    a, b, c, d = jnp.moveaxis(ql, -1, 0)
    p, q, r, s = jnp.moveaxis(qr, -1, 0)
    left = jnp.stack(
        [
            jnp.stack([a, -b, -c, -d], -1),
            jnp.stack([b, a, -d, c], -1),
            jnp.stack([c, d, a, -b], -1),
            jnp.stack([d, -c, b, a], -1),
        ],
        -2,
    )
    right = jnp.stack(
        [
            jnp.stack([p, q, r, s], -1),
            jnp.stack([-q, p, -s, r], -1),
            jnp.stack([-r, s, p, -q], -1),
            jnp.stack([-s, -r, q, p], -1),
        ],
        -2,
    )
    return left @ right


@flax.struct.dataclass
class Slice3D:
    """A 4D Gaussian conditioned on time t: 3D mean/covariance and time-weighted opacity."""

    means: jax.Array  # [N, 3]
    covs: jax.Array  # [N, 3, 3]
    opacities: jax.Array  # [N] o · p(t)
    marginal_t: jax.Array  # [N] p(t) = exp(-½ (t-μt)² / Σtt), peak 1
    sh_dc: jax.Array  # [N, 3]


def slice_at(g: Gaussians4D, t: jax.Array | float) -> Slice3D:
    """Conditions each 4D Gaussian on time t (marginal, conditional mean and covariance).

    Σ = [[Σss, Σst], [Σstᵀ, Σtt]]: p(t) = exp(-½ (t-μt)²/Σtt), μ|t = μxyz + Σst (t-μt)/Σtt,
    Σ|t = Σss − Σst Σstᵀ / Σtt (independent of t).
    """
    cov4 = g.covariances()
    cov_ss = cov4[:, :3, :3]
    cov_st = cov4[:, :3, 3]
    cov_tt = jnp.maximum(cov4[:, 3, 3], 1e-12)
    dt = jnp.asarray(t, jnp.float32) - g.means[:, 3]
    marginal = jnp.exp(-0.5 * dt * dt / cov_tt)
    means = g.means[:, :3] + cov_st * (dt / cov_tt)[:, None]
    covs = cov_ss - cov_st[:, :, None] * cov_st[:, None, :] / cov_tt[:, None, None]
    return Slice3D(
        means=means,
        covs=covs,
        opacities=g.opacities * marginal,
        marginal_t=marginal,
        sh_dc=g.sh_dc,
    )


def covariances_3d(g: Gaussians3D) -> Slice3D:
    """A 3D Gaussian set in the same form as a time slice (p(t) = 1)."""
    return Slice3D(
        means=g.means,
        covs=g.covariances(),
        opacities=g.opacities,
        marginal_t=jnp.ones_like(g.opacities),
        sh_dc=g.sh_dc,
    )


def rotmat_to_quat(m: jax.Array) -> jax.Array:
    """Rotation matrices [..., 3, 3] -> unit quaternions (w, x, y, z) [..., 4], w >= 0."""
    d0, d1, d2 = m[..., 0, 0], m[..., 1, 1], m[..., 2, 2]
    half_sqrt = lambda x: 0.5 * jnp.sqrt(jnp.maximum(x, 0.0))
    w = half_sqrt(1.0 + d0 + d1 + d2)
    x = jnp.copysign(half_sqrt(1.0 + d0 - d1 - d2), m[..., 2, 1] - m[..., 1, 2])
    y = jnp.copysign(half_sqrt(1.0 - d0 + d1 - d2), m[..., 0, 2] - m[..., 2, 0])
    z = jnp.copysign(half_sqrt(1.0 - d0 - d1 + d2), m[..., 1, 0] - m[..., 0, 1])
    q = jnp.stack([w, x, y, z], -1)
    return q / jnp.maximum(jnp.linalg.norm(q, axis=-1, keepdims=True), 1e-12)


def gaussians_3d_from_slice(s: Slice3D) -> Gaussians3D:
    """A time slice as ordinary 3D Gaussians (eigen-decomposed covariance, opacity o·p(t)),
    e.g. to export one moment of a 4D scene to PLY for 3DGS viewers."""
    evals, evecs = jnp.linalg.eigh(s.covs)
    flip = jnp.linalg.det(evecs) < 0  # make the eigenbasis a rotation
    evecs = evecs.at[..., :, 2].multiply(jnp.where(flip, -1.0, 1.0)[..., None])
    return Gaussians3D(
        means=s.means,
        scales=jnp.sqrt(jnp.maximum(evals, 1e-12)),
        quats=rotmat_to_quat(evecs),
        opacities=s.opacities,
        sh_dc=s.sh_dc,
    )
