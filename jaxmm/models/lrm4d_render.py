"""Dense (all Gaussians × all pixels) differentiable 4D Gaussian compositor for small images.

`jaxmm.gaussians` holds the tiled renderer (binning + Pallas rasteriser) that scales to 256²
and 10⁶ Gaussians. At the CPU demo's sizes (32-64², a few thousand Gaussians) a dense
compositor is faster than tiling and sorting intersections, needs no intersection capacity,
and is plain autodiff; it is also an independent cross-check of the tiled renderer. The
maths follows specs/splatting.md: 4D rotation R = L(q_left)·R(q_right) (4DGS convention),
Σ = R S Sᵀ Rᵀ, slice at t (conditional mean/covariance, marginal p(t) scaling opacity),
EWA projection with the 1.3·tan(fov/2) guard band and 0.3 px² dilation, α = min(0.99, o·p(t)·G),
α < 1/255 dropped, front-to-back compositing over a white (configurable) background.
"""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp
from jax import Array

from jaxmm.gaussians.camera import Camera

SH_C0 = 0.28209479177387814
NEAR = 0.01
ALPHA_MIN = 1.0 / 255.0
ALPHA_MAX = 0.99
DILATION = 0.3


@flax.struct.dataclass
class DenseRender:
    rgb: Array  # [H, W, 3]
    alpha: Array  # [H, W]
    depth: Array  # [H, W] expected depth (not normalised by alpha)


def rotation_4d(q_left: Array, q_right: Array) -> Array:
    """[..., 4] unit quaternions (w, x, y, z) -> [..., 4, 4] rotation of (x, y, z, t)."""
    a, b, c, d = jnp.moveaxis(q_left, -1, 0)
    p, q, r, s = jnp.moveaxis(q_right, -1, 0)
    m_l = jnp.stack([jnp.stack([a, -b, -c, -d], -1), jnp.stack([b, a, -d, c], -1),
                     jnp.stack([c, d, a, -b], -1), jnp.stack([d, -c, b, a], -1)], -2)
    m_r = jnp.stack([jnp.stack([p, q, r, s], -1), jnp.stack([-q, p, -s, r], -1),
                     jnp.stack([-r, s, p, -q], -1), jnp.stack([-s, -r, q, p], -1)], -2)
    return m_l @ m_r


def slice_at(xyz, t_mean, scale_xyz, scale_t, q_left, q_right, opacity, t):
    """Conditions 4D Gaussians [N] on time t -> (means [N,3], cov [N,3,3], opacity·p(t))."""
    rot = rotation_4d(q_left, q_right)
    scales = jnp.concatenate([scale_xyz, scale_t[..., None]], -1)
    m = rot * scales[..., None, :]
    cov = m @ jnp.swapaxes(m, -1, -2)
    cov_ss, cov_st, cov_tt = cov[..., :3, :3], cov[..., :3, 3], cov[..., 3, 3]
    dt = t - t_mean
    means = xyz + cov_st * (dt / cov_tt)[..., None]
    cov3 = cov_ss - cov_st[..., :, None] * cov_st[..., None, :] / cov_tt[..., None, None]
    p_t = jnp.exp(-0.5 * dt * dt / cov_tt)
    return means, cov3, opacity * p_t


def render_3d(means: Array, covs: Array, rgb: Array, opacity: Array, camera: Camera,
              background: Array | tuple = (1.0, 1.0, 1.0)) -> DenseRender:
    """Composites N 3D Gaussians into one camera's image. means [N,3], covs [N,3,3]."""
    w2c = camera.w2c
    rot, trans = w2c[:3, :3], w2c[:3, 3]
    p_cam = means @ rot.T + trans
    z = p_cam[:, 2]
    valid = z > NEAR
    z_safe = jnp.where(valid, z, 1.0)
    lim_x = 1.3 * 0.5 * camera.width / camera.fx
    lim_y = 1.3 * 0.5 * camera.height / camera.fy
    tx = jnp.clip(p_cam[:, 0] / z_safe, -lim_x, lim_x) * z_safe
    ty = jnp.clip(p_cam[:, 1] / z_safe, -lim_y, lim_y) * z_safe
    zeros = jnp.zeros_like(z)
    jac = jnp.stack([
        jnp.stack([camera.fx / z_safe, zeros, -camera.fx * tx / z_safe**2], -1),
        jnp.stack([zeros, camera.fy / z_safe, -camera.fy * ty / z_safe**2], -1),
    ], -2)  # [N, 2, 3]
    jw = jac @ rot
    cov2 = jw @ covs @ jnp.swapaxes(jw, -1, -2) + DILATION * jnp.eye(2)
    det = cov2[:, 0, 0] * cov2[:, 1, 1] - cov2[:, 0, 1] ** 2
    valid = valid & (det > 1e-12)
    det = jnp.where(valid, det, 1.0)
    conic_a, conic_b, conic_c = cov2[:, 1, 1] / det, -cov2[:, 0, 1] / det, cov2[:, 0, 0] / det
    mean_u = camera.fx * p_cam[:, 0] / z_safe + camera.cx
    mean_v = camera.fy * p_cam[:, 1] / z_safe + camera.cy

    order = jnp.argsort(jnp.where(valid, z, jnp.inf))
    take = lambda x: x[order]
    mean_u, mean_v, conic_a, conic_b, conic_c = map(take, (mean_u, mean_v, conic_a, conic_b,
                                                          conic_c))
    opac, col, zs, ok = take(opacity), take(rgb), take(z), take(valid)

    u = jnp.arange(camera.width, dtype=jnp.float32) + 0.5
    v = jnp.arange(camera.height, dtype=jnp.float32) + 0.5
    dx = u[None, :, None] - mean_u  # [1, W, N]
    dy = v[:, None, None] - mean_v  # [H, 1, N]
    power = -0.5 * (conic_a * dx * dx + conic_c * dy * dy) - conic_b * dx * dy  # [H, W, N]
    alpha = jnp.minimum(ALPHA_MAX, opac * jnp.exp(jnp.minimum(power, 0.0)))
    alpha = jnp.where((power <= 0.0) & ok & (alpha >= ALPHA_MIN), alpha, 0.0)
    log_t = jnp.cumsum(jnp.log1p(-alpha), axis=-1)
    trans_before = jnp.exp(log_t - jnp.log1p(-alpha))  # exclusive product
    weights = alpha * trans_before
    out_rgb = jnp.einsum("hwn,nc->hwc", weights, col)
    final_t = jnp.exp(log_t[..., -1])
    bg = jnp.asarray(background, jnp.float32)
    return DenseRender(
        rgb=out_rgb + final_t[..., None] * bg,
        alpha=1.0 - final_t,
        depth=jnp.einsum("hwn,n->hw", weights, zs),
    )


def sh_dc_to_rgb(sh_dc: Array) -> Array:
    return jnp.maximum(SH_C0 * sh_dc + 0.5, 0.0)


def render_4d(g, camera: Camera, t: Array, background=(1.0, 1.0, 1.0)) -> DenseRender:
    """Renders `models.lrm4d.Gaussians4D` (leading dim N) at time t (model units, [-1, 1])."""
    means, covs, opac = slice_at(g.xyz, g.t, g.scale_xyz, g.scale_t, g.q_left, g.q_right,
                                 g.opacity, t)
    return render_3d(means, covs, sh_dc_to_rgb(g.sh_dc), opac, camera, background)


def render_batch(g, cameras: Camera, times: Array, background=(1.0, 1.0, 1.0)) -> DenseRender:
    """Renders V views (stacked cameras, times [V]) of one Gaussian set, checkpointed per view
    so the backward pass keeps one view's [H, W, N] intermediates at a time."""

    @jax.checkpoint
    def one(carry, view):
        cam, t = view
        return carry, render_4d(g, cam, t, background)

    _, out = jax.lax.scan(one, None, (cameras, times))
    return out
