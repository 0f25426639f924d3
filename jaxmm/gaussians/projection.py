"""EWA projection of 3D Gaussians to screen-space 2D Gaussians (pure jnp, plain autodiff).

Per Gaussian: view transform, near cull, perspective Jacobian with the 3DGS guard band
(x/z, y/z clamped at 1.3·tan(fov/2)), 2D covariance J W Σ Wᵀ Jᵀ + 0.3·I (low-pass dilation),
conic = its inverse, and an opacity-aware extent: the radius, in σ units, where o·e^(-r²/2)
drops below 1/255, capped at 3σ. Invalid Gaussians (culled, degenerate, transparent or with
non-finite parameters) keep finite placeholder values and `valid=False`, so nothing NaN ever
reaches the rasteriser or its gradients.
"""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp

from jaxmm.gaussians.camera import Camera
from jaxmm.gaussians.params import Slice3D, sh_dc_to_rgb
from kernels_pallas.splat.common import ALPHA_MIN  # the compositors' skip threshold

DILATION = 0.3
GUARD_BAND = 1.3


@flax.struct.dataclass
class Projected:
    means2d: jax.Array  # [N, 2] pixel coordinates (pixel (u, v) has centre (u+.5, v+.5))
    conics: jax.Array  # [N, 3] (A, B, C) of the inverse 2D covariance
    depths: jax.Array  # [N] camera-space z
    radii: jax.Array  # [N] float pixels (0 when invalid)
    opacities: jax.Array  # [N] effective opacity o·p(t)
    colors: jax.Array  # [N, 3] rgb
    valid: jax.Array  # [N] bool


def _where_finite(valid, x, fill=0.0):
    shape = valid.shape + (1,) * (x.ndim - valid.ndim)
    return jnp.where(valid.reshape(shape), x, fill)


def project(g: Slice3D, camera: Camera, near: float = 0.01) -> Projected:
    """Projects N Gaussians into `camera` (single camera; vmap for several)."""
    w2c = camera.w2c
    rot, trans = w2c[:3, :3], w2c[:3, 3]
    finite = (
        jnp.all(jnp.isfinite(g.means), -1)
        & jnp.all(jnp.isfinite(g.covs), (-1, -2))
        & jnp.isfinite(g.opacities)
        & jnp.all(jnp.isfinite(g.sh_dc), -1)
    )
    # Replace non-finite parameters before any arithmetic so their gradients stay zero.
    means = _where_finite(finite, g.means)
    covs = _where_finite(finite, g.covs)
    opac = _where_finite(finite, g.opacities)
    p_cam = means @ rot.T + trans
    x, y, z = p_cam[:, 0], p_cam[:, 1], p_cam[:, 2]
    in_front = z > near
    z_safe = jnp.where(in_front, z, 1.0)

    lim_x = GUARD_BAND * 0.5 * camera.width / camera.fx
    lim_y = GUARD_BAND * 0.5 * camera.height / camera.fy
    tx = jnp.clip(x / z_safe, -lim_x, lim_x) * z_safe
    ty = jnp.clip(y / z_safe, -lim_y, lim_y) * z_safe
    zero = jnp.zeros_like(z_safe)
    jac = jnp.stack(
        [
            jnp.stack([camera.fx / z_safe, zero, -camera.fx * tx / z_safe**2], -1),
            jnp.stack([zero, camera.fy / z_safe, -camera.fy * ty / z_safe**2], -1),
        ],
        -2,
    )  # [N, 2, 3]
    t_mat = jac @ rot  # J W
    cov2d = t_mat @ covs @ jnp.swapaxes(t_mat, -1, -2)
    a = cov2d[:, 0, 0] + DILATION
    b = cov2d[:, 0, 1]
    c = cov2d[:, 1, 1] + DILATION
    det = a * c - b * b
    nondegenerate = det > 1e-12
    det_safe = jnp.where(nondegenerate, det, 1.0)
    conics = jnp.stack([c / det_safe, -b / det_safe, a / det_safe], -1)

    mid = 0.5 * (a + c)
    lam_max = mid + jnp.sqrt(jnp.maximum(mid * mid - det, 0.1))
    visible_opacity = opac >= ALPHA_MIN
    opac_safe = jnp.where(visible_opacity, opac, 1.0)
    # o·exp(-k²/2) >= 1/255  <=>  k <= sqrt(2 ln(255 o)); never more than 3σ.
    k_sigma = jnp.minimum(3.0, jnp.sqrt(2.0 * jnp.log(jnp.maximum(255.0 * opac_safe, 1.0))))
    # Extents only pick tiles (integer work): no gradient, and none of sqrt(0)'s infinities.
    radii = jax.lax.stop_gradient(k_sigma * jnp.sqrt(jnp.where(nondegenerate, lam_max, 0.0)))

    u = camera.fx * x / z_safe + camera.cx
    v = camera.fy * y / z_safe + camera.cy
    means2d = jnp.stack([u, v], -1)
    on_screen = (
        (u + radii > 0) & (u - radii < camera.width) & (v + radii > 0) & (v - radii < camera.height)
    )
    valid = finite & in_front & nondegenerate & visible_opacity & (radii > 0) & on_screen
    colors = sh_dc_to_rgb(_where_finite(finite, g.sh_dc))
    return Projected(
        means2d=_where_finite(valid, means2d),
        conics=_where_finite(valid, conics),
        depths=_where_finite(valid, z),
        radii=_where_finite(valid, radii),
        opacities=_where_finite(valid, opac),
        colors=_where_finite(valid, colors),
        valid=valid,
    )
