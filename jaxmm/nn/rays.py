"""Per-pixel camera rays and the Plücker-style ray map used as 4D-LRM's position signal.

4D-LRM has no positional embedding: each pixel carries its ray direction d and the ray's point
closest to the world origin, o - <o, d> d. Both are independent of where along the ray the
camera sits, so the map is a function of the ray (a line), not of the camera centre.

Convention (OpenCV, same as `jaxmm.gaussians.camera`): x right, y down, z forward; `c2w` maps
camera to world; pixel (row v, column u) has its centre at image coordinates (u + 0.5, v + 0.5).
"""

from __future__ import annotations

import jax.numpy as jnp
from jax import Array


def pixel_rays(
    c2w: Array, fx: Array, fy: Array, cx: Array, cy: Array, height: int, width: int
) -> tuple[Array, Array]:
    """World-space ray origins and unit directions, each [..., H, W, 3].

    `c2w` is [..., 4, 4]; the intrinsics are scalars or [...] so cameras can be batched.
    """
    c2w = jnp.asarray(c2w)
    batch = c2w.shape[:-2]

    def expand(x: Array) -> Array:  # [...] -> [..., 1, 1] to broadcast over pixels
        return jnp.broadcast_to(jnp.asarray(x, c2w.dtype), batch)[..., None, None]

    u = jnp.arange(width, dtype=c2w.dtype) + 0.5
    v = jnp.arange(height, dtype=c2w.dtype) + 0.5
    x_cam = (u[None, :] - expand(cx)) / expand(fx)  # [..., 1, W]
    y_cam = (v[:, None] - expand(cy)) / expand(fy)  # [..., H, 1]
    x_cam, y_cam = jnp.broadcast_arrays(x_cam, y_cam)
    dirs_cam = jnp.stack([x_cam, y_cam, jnp.ones_like(x_cam)], axis=-1)  # [..., H, W, 3]
    rot = c2w[..., None, None, :3, :3]
    dirs = jnp.einsum("...ij,...j->...i", rot, dirs_cam)
    dirs = dirs / jnp.linalg.norm(dirs, axis=-1, keepdims=True)
    origins = jnp.broadcast_to(c2w[..., None, None, :3, 3], dirs.shape)
    return origins, dirs


def closest_point_to_origin(origins: Array, directions: Array) -> Array:
    """o - <o, d> d for unit d: the foot of the perpendicular from the world origin."""
    return origins - jnp.sum(origins * directions, axis=-1, keepdims=True) * directions


def ray_map(origins: Array, directions: Array) -> Array:
    """The 6 ray channels in the paper's order: direction d, then o - <o, d> d. [..., 6]."""
    directions = directions / jnp.linalg.norm(directions, axis=-1, keepdims=True)
    return jnp.concatenate([directions, closest_point_to_origin(origins, directions)], axis=-1)
