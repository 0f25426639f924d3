"""Procedural 4D objects for training and testing 4D-LRM without downloads.

A scene is 1-3 primitives (sphere, box or ellipsoid), each a cluster of small 3D Gaussians on
the primitive's surface, coloured with a base colour plus a stripe or two-tone texture. Over a
K-frame clip every primitive translates along a line, rotates about its own axis and pulsates
(anisotropic scale), so the clip has rigid and non-rigid motion. Frames are rendered by our
own Gaussian compositor from cameras on a sphere around the object, on white.

Record i of `Synthetic4D` is a pure function of (seed, i): the scene, the input (view, time)
pairs and the supervision (view, time) pairs, drawn independently as in the paper (any
combination of view and time). That makes the grain iterator state resume exactly.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from jaxmm.gaussians.camera import Camera, look_at_c2w
from jaxmm.gaussians.params import Slice3D, rgb_to_sh_dc
from jaxmm.gaussians.render import render_slice


@dataclasses.dataclass(frozen=True)
class SceneSpec:
    """Sampling ranges of the procedural scenes and cameras."""

    image_size: int = 32
    num_frames: int = 24  # K
    num_input_views: int = 4
    num_target_views: int = 4
    max_primitives: int = 3
    points_per_primitive: int = 96
    radius: tuple[float, float] = (2.4, 2.8)  # camera distance to the origin
    elevation_deg: tuple[float, float] = (-15.0, 45.0)
    fov_x_deg: float = 50.0
    seed: int = 0
    stream: int = 0  # 0 train, 1 held-out objects

    @classmethod
    def from_config(cls, config, stream: int = 0) -> SceneSpec:
        """The spec of an experiment config's `config.data` (`configs/lrm4d.py`)."""
        d = config.data
        return cls(
            image_size=d.image_size,
            num_frames=d.num_frames,
            num_input_views=d.num_input_views,
            num_target_views=d.num_target_views,
            max_primitives=d.max_primitives,
            points_per_primitive=d.points_per_primitive,
            seed=d.seed,
            stream=stream,
        )


def frame_to_time(k, num_frames: int):
    """Frame k of a K-frame clip -> model time 2k/(K-1) - 1 in [-1, 1]."""
    return 2.0 * np.asarray(k, np.float32) / max(num_frames - 1, 1) - 1.0


def _rotation(axis: np.ndarray, angle: float) -> np.ndarray:
    axis = axis / np.linalg.norm(axis)
    x, y, z = axis
    k = np.array([[0, -z, y], [z, 0, -x], [-y, x, 0]])
    return np.eye(3) + math.sin(angle) * k + (1 - math.cos(angle)) * k @ k


def _unit_sphere_points(rng: np.random.Generator, n: int) -> np.ndarray:
    p = rng.normal(size=(n, 3))
    return p / np.linalg.norm(p, axis=-1, keepdims=True)


def _box_points(rng: np.random.Generator, n: int) -> np.ndarray:
    p = rng.uniform(-1, 1, size=(n, 3))
    face = rng.integers(0, 3, size=n)
    p[np.arange(n), face] = np.sign(rng.uniform(-1, 1, size=n))
    return p


@dataclasses.dataclass(frozen=True)
class Scene:
    """Per-point canonical data and per-primitive motion; `at(k)` gives frame k's Gaussians."""

    local: np.ndarray  # [N, 3] points in primitive-local coordinates (unit size)
    primitive: np.ndarray  # [N] primitive id
    rgb: np.ndarray  # [N, 3]
    opacity: np.ndarray  # [N]
    sigma: np.ndarray  # [N] isotropic std in local units (before size/deformation)
    size: np.ndarray  # [P, 3] half-extents
    centre0: np.ndarray  # [P, 3] centre at t = -1
    velocity: np.ndarray  # [P, 3] displacement from t = -1 to t = 1
    axis: np.ndarray  # [P, 3] rotation axis
    spin: np.ndarray  # [P] total rotation angle over the clip
    pulse: np.ndarray  # [P, 3] relative scale amplitude
    pulse_freq: np.ndarray  # [P] cycles per clip
    num_frames: int

    def at(self, t: float) -> tuple[np.ndarray, np.ndarray]:
        """Means [N, 3] and covariances [N, 3, 3] at model time t in [-1, 1]."""
        s = 0.5 * (t + 1.0)  # clip progress in [0, 1]
        means, covs = [], []
        for p in range(len(self.size)):
            idx = self.primitive == p
            deform = self.size[p] * (
                1.0 + self.pulse[p] * math.sin(2 * math.pi * self.pulse_freq[p] * s)
            )
            rot = _rotation(self.axis[p], self.spin[p] * s)
            lin = rot * deform[None, :]  # rot @ diag(deform)
            means.append(self.local[idx] @ lin.T + self.centre0[p] + self.velocity[p] * s)
            sig = self.sigma[idx][:, None, None]
            covs.append(sig**2 * (lin @ lin.T)[None])
        order = np.argsort(np.argsort(self.primitive, kind="stable"), kind="stable")
        return (
            np.concatenate(means)[order].astype(np.float32),
            np.concatenate(covs)[order].astype(np.float32),
        )


def sample_scene(rng: np.random.Generator, spec: SceneSpec) -> Scene:
    """Draws one scene; the Gaussian count is fixed (max_primitives × points) for static shapes."""
    n_prim = int(rng.integers(1, spec.max_primitives + 1))
    n_pts = spec.max_primitives * spec.points_per_primitive
    # Distribute all points over the primitives (equal shares) so shapes stay static.
    primitive = np.arange(n_pts) % n_prim
    local, rgb, sigma = np.zeros((n_pts, 3)), np.zeros((n_pts, 3)), np.zeros(n_pts)
    size = np.zeros((n_prim, 3))
    for p in range(n_prim):
        idx = np.nonzero(primitive == p)[0]
        kind = rng.integers(0, 3)  # sphere, box, ellipsoid
        pts = _box_points(rng, len(idx)) if kind == 1 else _unit_sphere_points(rng, len(idx))
        local[idx] = pts
        base = rng.uniform(0.05, 0.95, size=3)
        other = rng.uniform(0.05, 0.95, size=3)
        tex_axis = rng.integers(0, 3)
        if rng.uniform() < 0.5:  # stripes
            mask = np.sin(pts[:, tex_axis] * rng.uniform(4, 8)) > 0
        else:  # two-tone halves
            mask = pts[:, tex_axis] > 0
        rgb[idx] = np.where(mask[:, None], base, other)
        extent = rng.uniform(0.2, 0.4)
        size[p] = extent * (rng.uniform(0.6, 1.4, size=3) if kind == 2 else np.ones(3))
        sigma[idx] = rng.uniform(0.18, 0.28)
    return Scene(
        local=local,
        primitive=primitive,
        rgb=rgb.astype(np.float32),
        opacity=np.full(n_pts, 0.95, np.float32),
        sigma=sigma,
        size=size,
        centre0=rng.uniform(-0.35, 0.35, size=(n_prim, 3)),
        velocity=rng.uniform(-0.3, 0.3, size=(n_prim, 3)),
        axis=rng.normal(size=(n_prim, 3)),
        spin=rng.uniform(-math.pi, math.pi, size=n_prim),
        pulse=rng.uniform(0.0, 0.3, size=(n_prim, 3)),
        pulse_freq=rng.uniform(0.5, 1.5, size=n_prim),
        num_frames=spec.num_frames,
    )


def sphere_camera_c2w(rng: np.random.Generator, spec: SceneSpec, n: int) -> np.ndarray:
    """n random cameras on a sphere (azimuth uniform, elevation in range) looking at the origin."""
    az = rng.uniform(0, 2 * math.pi, size=n)
    el = np.radians(rng.uniform(*spec.elevation_deg, size=n))
    r = rng.uniform(*spec.radius, size=n)
    return np.stack([orbit_c2w(a, e, d) for a, e, d in zip(az, el, r, strict=True)])


def orbit_c2w(azimuth: float, elevation: float, radius: float) -> np.ndarray:
    eye = radius * np.array(
        [
            math.cos(elevation) * math.cos(azimuth),
            math.cos(elevation) * math.sin(azimuth),
            math.sin(elevation),
        ]
    )
    return look_at_c2w(eye, (0.0, 0.0, 0.0), (0.0, 0.0, 1.0))


def focal_px(spec: SceneSpec) -> float:
    return 0.5 * spec.image_size / math.tan(0.5 * math.radians(spec.fov_x_deg))


@functools.partial(jax.jit, static_argnames=("size",))
def _render_views(means, covs, rgb, opacity, c2w, focal, size: int):
    """Exact (every Gaussian × every pixel) renders: the ground truth of the procedural data."""
    sh_dc, ones = rgb_to_sh_dc(rgb), jnp.ones_like(opacity)

    def one(m, c, pose):
        cam = Camera(
            c2w=pose, fx=focal, fy=focal, cx=size / 2.0, cy=size / 2.0, width=size, height=size
        )
        g = Slice3D(means=m, covs=c, opacities=opacity, marginal_t=ones, sh_dc=sh_dc)
        out = render_slice(g, cam, impl="dense", max_per_tile=None)
        return out.rgb, out.alpha

    return jax.vmap(one)(means, covs, c2w)


def render_scene(scene: Scene, c2w: np.ndarray, times: np.ndarray, spec: SceneSpec):
    """Renders views [V] (c2w [V,4,4], model times [V]) -> (rgb [V,H,W,3], alpha [V,H,W])."""
    frames = [scene.at(float(t)) for t in times]
    means = np.stack([f[0] for f in frames])
    covs = np.stack([f[1] for f in frames])
    rgb, alpha = _render_views(
        means,
        covs,
        scene.rgb,
        scene.opacity,
        c2w.astype(np.float32),
        np.float32(focal_px(spec)),
        spec.image_size,
    )
    return np.clip(np.asarray(rgb), 0.0, 1.0), np.asarray(alpha)


def intrinsics(spec: SceneSpec, n: int) -> np.ndarray:
    f, c = focal_px(spec), spec.image_size / 2.0
    return np.tile(np.array([f, f, c, c], np.float32), (n, 1))


class Synthetic4D:
    """Random-access source: record i -> input and supervision views of scene (seed, stream, i).

    Fields (numpy): `{input,target}_images` [V, H, W, 3] in [0, 1], `_times` [V] in [-1, 1],
    `_frames` [V] int, `_c2w` [V, 4, 4] OpenCV, `_intrinsics` [V, 4] (fx, fy, cx, cy).
    """

    def __init__(self, spec: SceneSpec, size: int = 2**31 - 1):
        self.spec, self.size = spec, size

    def __len__(self) -> int:
        return self.size

    def scene(self, i: int) -> Scene:
        return sample_scene(self._rng(i, 0), self.spec)

    def _rng(self, i: int, part: int) -> np.random.Generator:
        return np.random.default_rng([self.spec.seed, self.spec.stream, int(i), part])

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        spec = self.spec
        scene = self.scene(i)
        rng = self._rng(i, 1)
        record = {}
        for name, n in (("input", spec.num_input_views), ("target", spec.num_target_views)):
            frames = rng.integers(0, spec.num_frames, size=n)
            times = frame_to_time(frames, spec.num_frames)
            c2w = sphere_camera_c2w(rng, spec, n)
            rgb, _ = render_scene(scene, c2w, times, spec)
            record |= {
                f"{name}_images": rgb.astype(np.float32),
                f"{name}_times": times,
                f"{name}_frames": frames.astype(np.int32),
                f"{name}_c2w": c2w,
                f"{name}_intrinsics": intrinsics(spec, n),
            }
        return record
