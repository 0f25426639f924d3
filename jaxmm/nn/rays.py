"""The Plücker-style ray map used as 4D-LRM's position signal (the rays themselves come from
`jaxmm.gaussians.camera.rays`, the one ray builder).

4D-LRM has no positional embedding: each pixel carries its ray direction d and the ray's point
closest to the world origin, o - <o, d> d. Both are independent of where along the ray the
camera sits, so the map is a function of the ray (a line), not of the camera centre.
"""

from __future__ import annotations

import jax.numpy as jnp
from jax import Array


def closest_point_to_origin(origins: Array, directions: Array) -> Array:
    """o - <o, d> d for unit d: the foot of the perpendicular from the world origin."""
    return origins - jnp.sum(origins * directions, axis=-1, keepdims=True) * directions


def ray_map(origins: Array, directions: Array) -> Array:
    """The 6 ray channels in the paper's order: direction d, then o - <o, d> d. [..., 6]."""
    directions = directions / jnp.linalg.norm(directions, axis=-1, keepdims=True)
    return jnp.concatenate([directions, closest_point_to_origin(origins, directions)], axis=-1)
