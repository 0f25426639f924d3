"""Pinhole cameras in the OpenCV convention (x right, y down, z forward), as a JAX pytree.

`c2w` is the 4×4 camera-to-world matrix; intrinsics are in pixels, with pixel (u, v) covering
[u, u+1) × [v, v+1) so its centre is (u + 0.5, v + 0.5). `width` and `height` are static
(they fix array shapes), everything else is a leaf, so cameras can be stacked along a leading
axis and vmapped (`stack_cameras`). D-NeRF / Blender files store OpenGL axes (y up, z back);
`Camera.from_dnerf` flips the y and z columns.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

_OPENGL_TO_OPENCV = np.diag([1.0, -1.0, -1.0, 1.0]).astype(np.float32)


@flax.struct.dataclass
class Camera:
    """One pinhole camera (or a stack of them when leaves carry a leading view axis)."""

    c2w: jax.Array  # [4, 4] float32, OpenCV axes, camera-to-world
    fx: jax.Array  # [] float32, focal length in pixels
    fy: jax.Array
    cx: jax.Array  # [] float32, principal point in pixels (W/2 for a centred camera)
    cy: jax.Array
    width: int = flax.struct.field(pytree_node=False)
    height: int = flax.struct.field(pytree_node=False)

    @classmethod
    def create(
        cls,
        c2w,
        fx: float,
        fy: float,
        cx: float | None = None,
        cy: float | None = None,
        *,
        width: int,
        height: int,
    ) -> Camera:
        """Validates shapes and sizes on the host, before any device work."""
        _check_size(width, height)
        c2w = jnp.asarray(c2w, jnp.float32)
        if c2w.shape[-2:] != (4, 4):
            raise ValueError(f"Camera.c2w must have shape [..., 4, 4], got {c2w.shape}")
        cx = width / 2.0 if cx is None else cx
        cy = height / 2.0 if cy is None else cy
        f32 = lambda v: jnp.asarray(v, jnp.float32)
        return cls(
            c2w=c2w, fx=f32(fx), fy=f32(fy), cx=f32(cx), cy=f32(cy), width=width, height=height
        )

    @classmethod
    def from_intrinsics(cls, c2w, intrinsics, *, width: int, height: int) -> Camera:
        """From the array form data records carry: c2w [..., 4, 4] and intrinsics [..., 4]
        (fx, fy, cx, cy in pixels). Traceable: no host checks, so it runs inside jit."""
        return cls(
            c2w=c2w,
            fx=intrinsics[..., 0],
            fy=intrinsics[..., 1],
            cx=intrinsics[..., 2],
            cy=intrinsics[..., 3],
            width=width,
            height=height,
        )

    @property
    def intrinsics(self) -> jax.Array:
        """[..., 4] (fx, fy, cx, cy): the array form of `from_intrinsics`."""
        return jnp.stack([self.fx, self.fy, self.cx, self.cy], axis=-1)

    @classmethod
    def look_at(
        cls,
        eye: Sequence[float],
        target: Sequence[float] = (0.0, 0.0, 0.0),
        up: Sequence[float] = (0.0, 0.0, 1.0),
        *,
        fov_x_deg: float | None = None,
        fx: float | None = None,
        fy: float | None = None,
        width: int,
        height: int,
    ) -> Camera:
        """A camera at `eye` looking at `target`; give either `fov_x_deg` or `fx` (pixels)."""
        _check_size(width, height)
        if (fov_x_deg is None) == (fx is None):
            raise ValueError("Camera.look_at: give exactly one of fov_x_deg or fx")
        if fx is None:
            if not 0.0 < fov_x_deg < 180.0:
                raise ValueError(f"Camera.look_at: fov_x_deg={fov_x_deg} not in (0, 180)")
            fx = 0.5 * width / math.tan(0.5 * math.radians(fov_x_deg))
        fy = fx if fy is None else fy
        return cls.create(look_at_c2w(eye, target, up), fx, fy, width=width, height=height)

    @classmethod
    def from_dnerf(cls, transform_matrix, camera_angle_x: float, width: int, height: int) -> Camera:
        """From a D-NeRF / Blender `transforms_*.json` frame (OpenGL-axes c2w)."""
        m = np.asarray(transform_matrix, np.float32)
        if m.shape != (4, 4):
            raise ValueError(f"from_dnerf: transform_matrix must be 4x4, got {m.shape}")
        if not 0.0 < float(camera_angle_x) < math.pi:
            raise ValueError(f"from_dnerf: camera_angle_x={camera_angle_x} not in (0, pi)")
        fx = 0.5 * width / math.tan(0.5 * float(camera_angle_x))
        return cls.create(m @ _OPENGL_TO_OPENCV, fx, fx, width=width, height=height)

    @property
    def w2c(self) -> jax.Array:
        """World-to-camera [.., 4, 4] by the rigid inverse (no general matrix inverse)."""
        rot = self.c2w[..., :3, :3]
        rot_t = jnp.swapaxes(rot, -1, -2)
        trans = -jnp.einsum("...ij,...j->...i", rot_t, self.c2w[..., :3, 3])
        top = jnp.concatenate([rot_t, trans[..., None]], axis=-1)
        bottom = jnp.broadcast_to(
            jnp.array([0.0, 0.0, 0.0, 1.0], jnp.float32), top.shape[:-2] + (1, 4)
        )
        return jnp.concatenate([top, bottom], axis=-2)

    @property
    def position(self) -> jax.Array:
        return self.c2w[..., :3, 3]


def _check_size(width, height) -> None:
    for name, v in (("width", width), ("height", height)):
        if not isinstance(v, (int, np.integer)) or v <= 0:
            raise ValueError(f"Camera.{name} must be a positive int, got {v!r}")


def look_at_c2w(eye, target, up) -> np.ndarray:
    """OpenCV camera-to-world matrix: columns right, down, forward, eye (host numpy)."""
    eye, target, up = (np.asarray(v, np.float64) for v in (eye, target, up))
    forward = target - eye
    if np.linalg.norm(forward) < 1e-9:
        raise ValueError("look_at: eye and target coincide")
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, up)
    if np.linalg.norm(right) < 1e-9:
        raise ValueError("look_at: `up` is parallel to the viewing direction")
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    c2w = np.eye(4)
    c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = right, down, forward, eye
    return c2w.astype(np.float32)


def rays(camera: Camera) -> tuple[jax.Array, jax.Array]:
    """World-space ray origins and unit directions through pixel centres, each [..., H, W, 3]
    for a camera with leaves [...] (one camera, or a stack: `stack_cameras`)."""
    c2w = jnp.asarray(camera.c2w)
    batch = c2w.shape[:-2]

    def expand(x) -> jax.Array:  # [...] -> [..., 1, 1] to broadcast over pixels
        return jnp.broadcast_to(jnp.asarray(x, c2w.dtype), batch)[..., None, None]

    u = jnp.arange(camera.width, dtype=c2w.dtype) + 0.5
    v = jnp.arange(camera.height, dtype=c2w.dtype) + 0.5
    x_cam = (u[None, :] - expand(camera.cx)) / expand(camera.fx)  # [..., 1, W]
    y_cam = (v[:, None] - expand(camera.cy)) / expand(camera.fy)  # [..., H, 1]
    x_cam, y_cam = jnp.broadcast_arrays(x_cam, y_cam)
    dirs_cam = jnp.stack([x_cam, y_cam, jnp.ones_like(x_cam)], axis=-1)  # [..., H, W, 3]
    rot = c2w[..., None, None, :3, :3]
    dirs = jnp.einsum("...ij,...j->...i", rot, dirs_cam)
    dirs = dirs / jnp.linalg.norm(dirs, axis=-1, keepdims=True)
    origins = jnp.broadcast_to(c2w[..., None, None, :3, 3], dirs.shape)
    return origins, dirs


def stack_cameras(cameras: Sequence[Camera]) -> Camera:
    """Stacks cameras of one image size along a new leading axis (for vmap / render_batch)."""
    if not cameras:
        raise ValueError("stack_cameras: empty list")
    sizes = {(c.width, c.height) for c in cameras}
    if len(sizes) != 1:
        raise ValueError(f"stack_cameras: cameras have different (width, height): {sizes}")
    return jax.tree.map(lambda *xs: jnp.stack(xs), *cameras)


def orbit_cameras(
    num: int,
    radius: float,
    *,
    elevation_deg: float = 20.0,
    fov_x_deg: float = 50.0,
    width: int,
    height: int,
    phase_deg: float = 0.0,
    target: Sequence[float] = (0.0, 0.0, 0.0),
) -> list[Camera]:
    """`num` cameras evenly spaced on a circle around `target` (z up), looking at it."""
    cams = []
    elev = math.radians(elevation_deg)
    for i in range(num):
        az = math.radians(phase_deg) + 2 * math.pi * i / num
        eye = np.asarray(target) + radius * np.array(
            [math.cos(elev) * math.cos(az), math.cos(elev) * math.sin(az), math.sin(elev)]
        )
        cams.append(
            Camera.look_at(eye, target, (0, 0, 1), fov_x_deg=fov_x_deg, width=width, height=height)
        )
    return cams
