"""The paper's camera setups and held-out evaluation clips (procedural or D-NeRF folders)."""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np

from jaxmm.data import synthetic4d as syn
from jaxmm.data.dnerf import load_split
from jaxmm.gaussians.camera import Camera

SETUPS = ("alternating_canonical", "frame_interpolation", "two_rotating")
CANONICAL_AZIMUTH_DEG = {"front": 0.0, "left": 90.0, "back": 180.0, "right": 270.0}


def setup_views(
    setup: str, num_frames: int, num_inputs: int | None = None
) -> list[tuple[float, int]]:
    """Input (azimuth in degrees, frame) pairs of a paper setup over a K-frame clip.

    num_inputs=None gives the paper's count (K views); a smaller number keeps the pattern on
    evenly spaced frames (used by the CPU demo whose model sees few views).
    """
    if setup not in SETUPS:
        raise ValueError(f"unknown setup {setup!r}; choose one of {SETUPS}")
    k = num_frames
    canon = list(CANONICAL_AZIMUTH_DEG.values())
    if setup == "frame_interpolation":
        frames = list(range(0, k, 2))
        if num_inputs is not None:
            frames = _evenly(frames, max(num_inputs // 2, 1))
        return [(az, f) for f in frames for az in (canon[0], canon[2])]
    frames = list(range(k)) if num_inputs is None else _evenly(list(range(k)), num_inputs)
    if setup == "alternating_canonical":
        return [(canon[i % 4], f) for i, f in enumerate(frames)]
    step = 360.0 / k  # two_rotating: cameras A (from 0°) and B (from 180°) orbit once per clip
    return [((f * step + (0.0 if i % 2 == 0 else 180.0)) % 360.0, f) for i, f in enumerate(frames)]


def _evenly(items: list[int], n: int) -> list[int]:
    if n >= len(items):
        return items
    idx = np.round(np.linspace(0, len(items) - 1, n)).astype(int)
    return [items[i] for i in idx]


def synthetic_eval_clips(
    spec: syn.SceneSpec,
    num_scenes: int,
    setup: str,
    num_inputs: int | None = None,
    num_targets: int = 8,
    elevation_deg: float = 15.0,
    radius: float = 2.6,
    novel_times: bool = False,
) -> list[dict]:
    """Held-out procedural objects (stream 1) seen by a setup's cameras; targets are random
    (camera, frame) pairs on the sphere, i.e. novel view–time combinations. `novel_times`
    draws target frames only among those no input view sees (held-out times)."""
    spec = syn.SceneSpec(**{**spec.__dict__, "stream": 1})
    source = syn.Synthetic4D(spec)
    clips = []
    for i in range(num_scenes):
        scene = source.scene(i)
        rng = np.random.default_rng([spec.seed, 7, i])
        views = setup_views(setup, spec.num_frames, num_inputs)
        in_c2w = np.stack(
            [
                syn.orbit_c2w(math.radians(az), math.radians(elevation_deg), radius)
                for az, _ in views
            ]
        )
        in_frames = np.array([f for _, f in views])
        tgt_frames = rng.integers(0, spec.num_frames, size=num_targets)
        if novel_times:
            unseen = np.setdiff1d(np.arange(spec.num_frames), in_frames)
            if not len(unseen):
                raise ValueError(f"novel_times: setup {setup!r} sees every one of the "
                                 f"{spec.num_frames} frames")  # fmt: skip
            tgt_frames = rng.choice(unseen, size=num_targets)
        tgt_c2w = syn.sphere_camera_c2w(rng, spec, num_targets)
        clip = {}
        for name, c2w, frames in (("input", in_c2w, in_frames), ("target", tgt_c2w, tgt_frames)):
            times = syn.frame_to_time(frames, spec.num_frames)
            rgb, _ = syn.render_scene(scene, c2w, times, spec)
            clip |= {
                f"{name}_images": rgb,
                f"{name}_times": times,
                f"{name}_frames": frames,
                f"{name}_c2w": c2w.astype(np.float32),
                f"{name}_intrinsics": syn.intrinsics(spec, len(frames)),
            }
        clip["scene"] = scene
        clips.append(clip)
    return clips


def camera_azimuths(c2w: np.ndarray) -> np.ndarray:
    """Azimuth in degrees [0, 360) of each camera (OpenCV c2w [N, 4, 4]) around the scene's up
    axis, measured from the first camera, counter-clockwise seen from above.

    Up is the direction most orthogonal to every camera's right axis (exact for cameras
    without roll, as orbit captures are), signed like the mean camera up (-y in OpenCV axes);
    the centre is the point closest to every optical axis (least squares), i.e. what an
    object-centric capture looks at.
    """
    c2w = c2w.astype(np.float64)
    centres, forward, right = c2w[:, :3, 3], c2w[:, :3, 2], c2w[:, :3, 0]
    mean_up = -c2w[:, :3, 1].mean(0)
    evals, evecs = np.linalg.eigh(right.T @ right)
    up = evecs[:, 0] if evals[1] > 1e-6 * evals[2] else mean_up  # one shared right axis: no info
    up = up * np.sign(up @ mean_up or 1.0)
    up /= max(np.linalg.norm(up), 1e-12)
    proj = np.eye(3)[None] - forward[:, :, None] * forward[:, None, :]  # [N, 3, 3]
    centre = np.linalg.lstsq(proj.sum(0), np.einsum("nij,nj->i", proj, centres), rcond=None)[0]
    rel = centres - centre
    rel -= (rel @ up)[:, None] * up
    e1 = rel[0] / max(np.linalg.norm(rel[0]), 1e-12)
    e2 = np.cross(up, e1)
    return np.degrees(np.arctan2(rel @ e2, rel @ e1)) % 360.0


def _angle_gap(a: np.ndarray, b: float) -> np.ndarray:
    d = np.abs(a - b) % 360.0
    return np.minimum(d, 360.0 - d)


def select_input_views(
    c2w: np.ndarray, times: np.ndarray, setup: str, num_inputs: int
) -> tuple[np.ndarray, dict[str, float]]:
    """Indices of the captured views that best follow a paper setup, and how well they do.

    A monocular capture (one camera pose per instant, as D-NeRF) has no exact canonical views,
    so each requested (azimuth, frame) of `setup_views(setup, K=num_inputs)` takes the unused
    view minimising (azimuth gap / 45°)² + (time gap in frames)². Azimuths are relative to the
    view nearest the first instant. Returned stats: mean azimuth gap (degrees) and time gap
    (frames) between requested and chosen views.
    """
    n = len(times)
    if num_inputs < 1 or num_inputs > n:
        raise ValueError(f"num_inputs={num_inputs} must be in [1, {n}] (the captured views)")
    k = num_inputs
    views = setup_views(setup, k, None)[:num_inputs]
    span = float(times.max() - times.min()) or 1.0
    frame_of = (times - times.min()) / span * max(k - 1, 1)  # time of each view, in frames
    azimuths = camera_azimuths(c2w)
    offset = azimuths[int(np.argmin(times))]
    free = np.ones(n, bool)
    picked, az_gaps, t_gaps = [], [], []
    for az, frame in views:
        az_gap = _angle_gap(azimuths, (az + offset) % 360.0)
        t_gap = np.abs(frame_of - frame)
        cost = np.where(free, (az_gap / 45.0) ** 2 + t_gap**2, np.inf)
        i = int(np.argmin(cost))
        free[i] = False
        picked.append(i)
        az_gaps.append(az_gap[i])
        t_gaps.append(t_gap[i])
    stats = {"input_azimuth_gap_deg": float(np.mean(az_gaps)), "input_time_gap_frames":
             float(np.mean(t_gaps))}  # fmt: skip
    return np.array(picked), stats


def dnerf_eval_clip(root: str, setup: str, num_inputs: int, image_size: int | None = None) -> dict:
    """D-NeRF / Consistent4D folder: inputs = the train views that follow `setup` best
    (`select_input_views`), targets = every test view. Adds the selection stats to the clip."""
    if setup not in SETUPS:
        raise ValueError(f"unknown setup {setup!r}; choose one of {SETUPS}")
    train = load_split(root, "train", image_size=image_size)
    test = load_split(root, "test", image_size=image_size)
    pick, stats = select_input_views(train.c2w, train.times, setup, num_inputs)
    clip: dict = {"selection": stats, "input_indices": pick}
    for name, split, idx in (("input", train, pick), ("target", test, np.arange(test.num))):
        clip |= {
            f"{name}_images": split.images[idx],
            f"{name}_times": split.model_times()[idx],
            f"{name}_c2w": split.c2w[idx],
            f"{name}_intrinsics": split.intrinsics[idx],
        }
    return clip


def clip_cameras(clip: dict, name: str) -> Camera:
    """The stacked cameras of a clip's `input` or `target` views (sized like its images)."""
    images = clip[f"{name}_images"]
    return Camera.from_intrinsics(
        jnp.asarray(clip[f"{name}_c2w"]),
        jnp.asarray(clip[f"{name}_intrinsics"]),
        width=images.shape[2],
        height=images.shape[1],
    )
