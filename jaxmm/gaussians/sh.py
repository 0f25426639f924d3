"""Real spherical harmonics up to degree 3 for view-dependent colour (the 3DGS convention).

The renderer composites one colour per Gaussian (`sh_dc`, rgb = max(C0·sh_dc + 0.5, 0)).
View dependence is evaluated per camera before rendering: `view_dependent_dc` sums all bands
for the direction camera → Gaussian and returns it as an equivalent DC coefficient, so the
renderer, its kernels and its clamp stay unchanged and a degree-0 scene is bit-identical.
Coefficient layout: `sh_rest` [N, 15, 3] holds bands 1..3 in the 3DGS order (the PLY writer
stores it channel-major as f_rest_0..44).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxmm.gaussians.params import SH_C0

SH_C1 = 0.4886025119029199
SH_C2 = (1.0925484305920792, -1.0925484305920792, 0.31539156525252005, -1.0925484305920792,
         0.5462742152960396)  # fmt: skip
SH_C3 = (-0.5900435899266435, 2.890611442640554, -0.4570457994644658, 0.3731763325901154,
         -0.4570457994644658, 1.445305721320277, -0.5900435899266435)  # fmt: skip
MAX_DEGREE = 3


def num_rest(degree: int) -> int:
    """Coefficients beyond DC for `degree` (0, 3, 8, 15)."""
    return (degree + 1) ** 2 - 1


def sh_basis(dirs: jax.Array, degree: int = MAX_DEGREE) -> jax.Array:
    """Bands 1..degree of unit directions [..., 3] -> [..., num_rest(degree)]."""
    if not 0 <= degree <= MAX_DEGREE:
        raise ValueError(f"SH degree must be in [0, {MAX_DEGREE}], got {degree}")
    x, y, z = dirs[..., 0], dirs[..., 1], dirs[..., 2]
    out = []
    if degree >= 1:
        out += [-SH_C1 * y, SH_C1 * z, -SH_C1 * x]
    if degree >= 2:
        xx, yy, zz, xy, yz, xz = x * x, y * y, z * z, x * y, y * z, x * z
        c = SH_C2
        out += [c[0] * xy, c[1] * yz, c[2] * (2 * zz - xx - yy), c[3] * xz, c[4] * (xx - yy)]
    if degree >= 3:
        c = SH_C3
        out += [
            c[0] * y * (3 * xx - yy),
            c[1] * xy * z,
            c[2] * y * (4 * zz - xx - yy),
            c[3] * z * (2 * zz - 3 * xx - 3 * yy),
            c[4] * x * (4 * zz - xx - yy),
            c[5] * z * (xx - yy),
            c[6] * x * (xx - 3 * yy),
        ]
    if not out:
        return jnp.zeros(dirs.shape[:-1] + (0,), dirs.dtype)
    return jnp.stack(out, -1)


def view_dependent_dc(
    sh_dc: jax.Array, sh_rest: jax.Array, means: jax.Array, cam_center: jax.Array
) -> jax.Array:
    """DC coefficients [N, 3] whose colour equals the full SH colour seen from `cam_center`.

    rgb = max(C0·dc + Σ_k Y_k(d)·rest_k + 0.5, 0) with d the unit direction camera → mean;
    the degree is `sh_rest.shape[1]` (0, 3, 8 or 15 coefficients)."""
    k = sh_rest.shape[1]
    degree = {0: 0, 3: 1, 8: 2, 15: 3}.get(k)
    if degree is None:
        raise ValueError(f"sh_rest must have 0, 3, 8 or 15 coefficients, got {k}")
    if degree == 0:
        return sh_dc
    d = means - cam_center
    d = d / jnp.maximum(jnp.linalg.norm(d, axis=-1, keepdims=True), 1e-12)
    rest = jnp.einsum("nk,nkc->nc", sh_basis(d, degree), sh_rest)
    return sh_dc + rest / SH_C0
