"""Artefacts of a reconstruction: turntable/time-sweep frames, GIF and MP4, PLY at a time t."""

from __future__ import annotations

import math
import os

import jax
import jax.numpy as jnp
import numpy as np

from jaxmm import gaussians
from jaxmm.data import synthetic4d as syn
from jaxmm.data import video
from jaxmm.gaussians.camera import Camera
from jaxmm.gaussians.params import Gaussians4D, slice_at
from jaxmm.lrm4d.inference import LRM4DModel, keep_mask


def turntable(
    model: LRM4DModel,
    g: Gaussians4D,
    num_frames: int = 24,
    size: int | None = None,
    elevation_deg: float = 15.0,
    radius: float = 2.6,
    fov_x_deg: float = 50.0,
    filters: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Camera orbits once while time sweeps -1 -> 1: (frames [F, H, W, 3], times [F])."""
    size = size or model.config.data.image_size
    times = np.linspace(-1.0, 1.0, num_frames, dtype=np.float32)
    frames = []
    for j, t in enumerate(times):
        c2w = syn.orbit_c2w(2 * math.pi * j / num_frames, math.radians(elevation_deg), radius)
        f = 0.5 * size / math.tan(0.5 * math.radians(fov_x_deg))
        cam = Camera.create(c2w, f, f, width=size, height=size)
        frames.append(np.asarray(model.render(g, cam, float(t), filters=filters).rgb))
    return np.stack(frames), times


def to_uint8(frames: np.ndarray, scale: int = 1) -> np.ndarray:
    """[..., H, W, 3] floats in [0, 1] -> uint8, nearest-neighbour upscaled by `scale`."""
    out = np.clip(np.asarray(frames, np.float32) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return out.repeat(scale, axis=-3).repeat(scale, axis=-2) if scale > 1 else out


def _check_frames(frames: np.ndarray, what: str) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or len(frames) == 0:
        raise ValueError(f"{what}: frames must be [F>0, H, W, 3], got {frames.shape}")
    return frames


def write_gif(path: str, frames: np.ndarray, fps: float = 8.0, scale: int = 4) -> str:
    """frames [F, H, W, 3] in [0, 1] -> looping GIF (nearest-neighbour upscaled by `scale`)."""
    from PIL import Image

    frames = _check_frames(frames, "write_gif")
    imgs = [Image.fromarray(f) for f in to_uint8(frames, scale)]
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    imgs[0].save(path, save_all=True, append_images=imgs[1:], duration=int(1000 / fps), loop=0)
    return path


def write_mp4(path: str, frames: np.ndarray, fps: float = 8.0, scale: int = 4) -> str:
    """frames [F, H, W, 3] in [0, 1] -> H.264 MP4, nearest-neighbour upscaled by `scale` and
    padded with white to the codec's macro-block; the writer is `jaxmm.data.video.write_video`."""
    frames = to_uint8(_check_frames(frames, "write_mp4"), scale)
    return video.write_video(path, frames, fps=fps, pad_value=255)


def contact_sheet(rows: dict[str, np.ndarray], num_columns: int = 6, scale: int = 4) -> np.ndarray:
    """A still for docs: `num_columns` evenly spaced frames of each named sequence [F, H, W, 3],
    one row per sequence, separated by white lines -> uint8 [rows·(H·scale+2), ..., 3]."""
    tiles = []
    for name, frames in rows.items():
        frames = _check_frames(frames, f"contact_sheet[{name!r}]")
        pick = np.round(np.linspace(0, len(frames) - 1, num_columns)).astype(int)
        row = to_uint8(frames[pick], scale)
        row = np.pad(row, ((0, 0), (0, 2), (0, 2), (0, 0)), constant_values=255)
        tiles.append(np.concatenate(list(row), axis=1))
    return np.concatenate(tiles, axis=0)


def write_png(path: str, image: np.ndarray) -> str:
    from PIL import Image

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    Image.fromarray(np.asarray(image, np.uint8)).save(path, optimize=True)
    return path


def save_ply(path: str, g: Gaussians4D, t: float, filters: bool = True) -> int:
    """Writes the Gaussians sliced at time t as a standard 3DGS PLY; returns the count kept."""
    sliced = slice_at(g, jnp.float32(t))
    g3 = jax.tree.map(np.asarray, gaussians.gaussians_3d_from_slice(sliced))
    if filters:
        keep = np.asarray(keep_mask(g, jnp.float32(t)))
        g3 = jax.tree.map(lambda x: x[keep], g3)
    gaussians.save_ply(path, g3)
    return g3.num
