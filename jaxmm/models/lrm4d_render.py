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
    m_l = jnp.stack(
        [
            jnp.stack([a, -b, -c, -d], -1),
            jnp.stack([b, a, -d, c], -1),
            jnp.stack([c, d, a, -b], -1),
            jnp.stack([d, -c, b, a], -1),
        ],
        -2,
    )
    m_r = jnp.stack(
        [
            jnp.stack([p, q, r, s], -1),
            jnp.stack([-q, p, -s, r], -1),
            jnp.stack([-r, s, p, -q], -1),
            jnp.stack([-s, -r, q, p], -1),
        ],
        -2,
    )
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


def project(means: Array, covs: Array, camera: Camera):
    """EWA projection -> (mean_u, mean_v, conic (a, b, c), depth z, radius px, valid), each [N]."""
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
    jac = jnp.stack(
        [
            jnp.stack([camera.fx / z_safe, zeros, -camera.fx * tx / z_safe**2], -1),
            jnp.stack([zeros, camera.fy / z_safe, -camera.fy * ty / z_safe**2], -1),
        ],
        -2,
    )  # [N, 2, 3]
    jw = jac @ rot
    cov2 = jw @ covs @ jnp.swapaxes(jw, -1, -2) + DILATION * jnp.eye(2)
    det = cov2[:, 0, 0] * cov2[:, 1, 1] - cov2[:, 0, 1] ** 2
    valid = valid & (det > 1e-12)
    det = jnp.where(valid, det, 1.0)
    conic = (cov2[:, 1, 1] / det, -cov2[:, 0, 1] / det, cov2[:, 0, 0] / det)
    mean_u = camera.fx * p_cam[:, 0] / z_safe + camera.cx
    mean_v = camera.fy * p_cam[:, 1] / z_safe + camera.cy
    mid = 0.5 * (cov2[:, 0, 0] + cov2[:, 1, 1])
    lam = mid + jnp.sqrt(jnp.maximum(mid * mid - det, 0.1))
    radius = 3.0 * jnp.sqrt(lam)
    return mean_u, mean_v, conic, z, radius, valid


def _composite(px_u, px_v, mean_u, mean_v, conic, opac, col, zs, ok, background):
    """Front-to-back over depth-sorted Gaussians [..., K] for pixels [..., P] -> rgb, T, depth."""
    dx = px_u[..., :, None] - mean_u[..., None, :]  # [..., P, K]
    dy = px_v[..., :, None] - mean_v[..., None, :]
    a, b, c = (x[..., None, :] for x in conic)
    power = -0.5 * (a * dx * dx + c * dy * dy) - b * dx * dy
    alpha = jnp.minimum(ALPHA_MAX, opac[..., None, :] * jnp.exp(jnp.minimum(power, 0.0)))
    alpha = jnp.where((power <= 0.0) & ok[..., None, :] & (alpha >= ALPHA_MIN), alpha, 0.0)
    log_t = jnp.cumsum(jnp.log1p(-alpha), axis=-1)
    weights = alpha * jnp.exp(log_t - jnp.log1p(-alpha))  # α·T with T exclusive
    rgb = jnp.einsum("...pk,...kc->...pc", weights, col)
    final_t = jnp.exp(log_t[..., -1])
    depth = jnp.einsum("...pk,...k->...p", weights, zs)
    return rgb + final_t[..., None] * jnp.asarray(background, jnp.float32), final_t, depth


def render_3d(
    means: Array,
    covs: Array,
    rgb: Array,
    opacity: Array,
    camera: Camera,
    background: Array | tuple = (1.0, 1.0, 1.0),
) -> DenseRender:
    """Composites N 3D Gaussians into one image, every Gaussian against every pixel (reference)."""
    mean_u, mean_v, conic, z, _, valid = project(means, covs, camera)
    order = jnp.argsort(jnp.where(valid, z, jnp.inf))
    take = lambda x: x[order]
    u = jnp.arange(camera.width, dtype=jnp.float32) + 0.5
    v = jnp.arange(camera.height, dtype=jnp.float32) + 0.5
    uu, vv = jnp.meshgrid(u, v, indexing="xy")
    out, final_t, depth = _composite(
        uu.reshape(-1),
        vv.reshape(-1),
        take(mean_u),
        take(mean_v),
        tuple(map(take, conic)),
        take(opacity),
        take(rgb),
        take(z),
        take(valid),
        background,
    )
    h, w = camera.height, camera.width
    return DenseRender(
        rgb=out.reshape(h, w, 3), alpha=1.0 - final_t.reshape(h, w), depth=depth.reshape(h, w)
    )


def render_3d_tiled(
    means: Array,
    covs: Array,
    rgb: Array,
    opacity: Array,
    camera: Camera,
    background: Array | tuple = (1.0, 1.0, 1.0),
    tile: int = 8,
    capacity: int = 512,
) -> tuple[DenseRender, Array]:
    """Like `render_3d`, but each tile composites only the `capacity` nearest Gaussians whose
    3σ box touches it (chosen by `lax.top_k` on depth, so they come out front to back).

    Returns (image, overflow): overflow counts (tile, Gaussian) pairs that did not fit; when it
    is 0 the image equals the dense one up to float rounding.
    """
    h, w = camera.height, camera.width
    if h % tile or w % tile:
        raise ValueError(f"image {h}x{w} is not divisible by tile size {tile}")
    mean_u, mean_v, conic, z, radius, valid = project(means, covs, camera)
    valid = valid & (opacity >= ALPHA_MIN)
    ty, tx = jnp.meshgrid(jnp.arange(h // tile), jnp.arange(w // tile), indexing="ij")
    x0, y0 = (tx.reshape(-1) * tile)[:, None], (ty.reshape(-1) * tile)[:, None]  # [T, 1]
    hits = (
        valid[None]
        & (mean_u[None] + radius[None] > x0)
        & (mean_u[None] - radius[None] < x0 + tile)
        & (mean_v[None] + radius[None] > y0)
        & (mean_v[None] - radius[None] < y0 + tile)
    )  # [T, N]
    k = min(capacity, means.shape[0])
    score = jnp.where(hits, -z[None], -jnp.inf)
    neg_depth, idx = jax.lax.top_k(jax.lax.stop_gradient(score), k)  # [T, K], nearest first
    ok = jnp.isfinite(neg_depth)
    overflow = jnp.sum(jnp.maximum(jnp.sum(hits, axis=-1) - k, 0))
    gather = lambda x: x[idx]
    pu = jnp.arange(tile, dtype=jnp.float32) + 0.5
    pv, pu = jnp.meshgrid(pu, pu, indexing="ij")
    px_u = x0 + pu.reshape(1, -1)  # [T, P]
    px_v = y0 + pv.reshape(1, -1)
    out, final_t, depth = _composite(
        px_u,
        px_v,
        gather(mean_u),
        gather(mean_v),
        tuple(map(gather, conic)),
        gather(opacity),
        gather(rgb),
        gather(z),
        ok,
        background,
    )
    n_ty, n_tx = h // tile, w // tile

    def untile(x):  # [T, tile*tile, ...] -> [H, W, ...]
        x = x.reshape(n_ty, n_tx, tile, tile, *x.shape[2:])
        return jnp.swapaxes(x, 1, 2).reshape(h, w, *x.shape[4:])

    return DenseRender(rgb=untile(out), alpha=1.0 - untile(final_t), depth=untile(depth)), overflow


def sh_dc_to_rgb(sh_dc: Array) -> Array:
    return jnp.maximum(SH_C0 * sh_dc + 0.5, 0.0)


def render_4d(
    g,
    camera: Camera,
    t: Array,
    background=(1.0, 1.0, 1.0),
    *,
    capacity: int | None = None,
    tile: int = 8,
) -> DenseRender:
    """Renders `models.lrm4d.Gaussians4D` (leading dim N) at time t (model units, [-1, 1]).

    capacity=None composites every Gaussian at every pixel; an int uses the tiled top-k path.
    """
    means, covs, opac = slice_at(
        g.xyz, g.t, g.scale_xyz, g.scale_t, g.q_left, g.q_right, g.opacity, t
    )
    if capacity is None:
        return render_3d(means, covs, sh_dc_to_rgb(g.sh_dc), opac, camera, background)
    out, _ = render_3d_tiled(
        means, covs, sh_dc_to_rgb(g.sh_dc), opac, camera, background, tile=tile, capacity=capacity
    )
    return out


def render_batch(
    g,
    cameras: Camera,
    times: Array,
    background=(1.0, 1.0, 1.0),
    *,
    capacity: int | None = None,
    tile: int = 8,
) -> DenseRender:
    """Renders V views (stacked cameras, times [V]) of one Gaussian set, checkpointed per view
    so the backward pass keeps one view's per-pixel intermediates at a time."""

    @jax.checkpoint
    def one(carry, view):
        cam, t = view
        return carry, render_4d(g, cam, t, background, capacity=capacity, tile=tile)

    _, out = jax.lax.scan(one, None, (cameras, times))
    return out
