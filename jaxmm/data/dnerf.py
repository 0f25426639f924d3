"""Loader for D-NeRF / Consistent4D style dynamic-scene folders.

    root/transforms_{train,val,test}.json
      {"camera_angle_x": float, "frames": [{"file_path": "./train/r_000", "time": 0.0,
                                            "transform_matrix": [[4x4]]}, ...]}
    root/train/r_000.png  (RGBA; composited on a white background)

`file_path` is relative to `root`; a missing extension means `.png` (Blender convention).
NeRF-synthetic folders (static scenes) have no `time`: when no frame of a file has one, every
time is 0; a file where only some frames have one is an error naming the first without it.
`transform_matrix` is an OpenGL-axes camera-to-world matrix (converted by `Camera.from_dnerf`).
Times are stored in [0, 1] (`PosedImages.model_times` maps them to the model's [-1, 1]).
Every malformed input raises `DNerfFormatError` naming the file and the field, before any
device work.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence

import numpy as np
from PIL import Image

from jaxmm.data.posed import PosedImages

SPLITS = ("train", "val", "test")


class SceneFolderError(ValueError):
    """A scene folder (D-NeRF transforms, COLMAP model, images) is missing or malformed."""


class DNerfFormatError(SceneFolderError):
    """A transforms file, frame field or image is missing or malformed."""


def _read_json(path: str) -> dict:
    if not os.path.isfile(path):
        raise DNerfFormatError(f"{path}: transforms file not found")
    try:
        with open(path) as f:
            meta = json.load(f)
    except json.JSONDecodeError as e:
        raise DNerfFormatError(
            f"{path}: invalid JSON at line {e.lineno} col {e.colno}: {e.msg}"
        ) from e
    if not isinstance(meta, dict):
        raise DNerfFormatError(
            f"{path}: top level must be a JSON object, got {type(meta).__name__}"
        )
    return meta


def _field(obj: dict, key: str, where: str):
    if key not in obj:
        raise DNerfFormatError(f"{where}: missing field {key!r}")
    return obj[key]


BACKGROUNDS = ("white", "black", "random")


def load_rgba(
    path: str, where: str, error: type[SceneFolderError] = DNerfFormatError
) -> np.ndarray:
    """The one image reader for scene folders: [H, W, 4] float32 in [0, 1] (alpha 1 if none)."""
    if not os.path.isfile(path):
        raise error(f"{where}: image file {path} not found")
    try:
        with Image.open(path) as im:
            im = im.convert("RGBA")
            rgba = np.asarray(im, np.float32) / 255.0
    except OSError as e:
        raise error(f"{where}: cannot read image {path}: {e}") from e
    return rgba


def composite_background(rgba: np.ndarray, background: str, rng: np.random.Generator) -> np.ndarray:
    """Straight-alpha RGBA -> RGB over white, black, or one random colour per image."""
    if background == "white":
        bg = np.ones(3, np.float32)
    elif background == "black":
        bg = np.zeros(3, np.float32)
    else:
        bg = rng.uniform(0.0, 1.0, 3).astype(np.float32)
    rgb, alpha = rgba[..., :3], rgba[..., 3:]
    return rgb * alpha + (1.0 - alpha) * bg


def resize_image(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Box-filter resize of a [H, W, C] float image in [0, 1] (premultiplied RGBA stays exact)."""
    h, w = size
    channels = [
        np.asarray(
            Image.fromarray(img[..., c].astype(np.float32), "F").resize((w, h), Image.BOX),
            np.float32,
        )
        for c in range(img.shape[-1])
    ]
    return np.clip(np.stack(channels, -1), 0.0, 1.0)


def load_split(
    root: str,
    split: str = "train",
    *,
    image_size: int | tuple[int, int] | None = None,
    max_frames: int | None = None,
    background: str = "white",
    seed: int = 0,
) -> PosedImages:
    """Reads `root/transforms_<split>.json` and its images (optionally resized to image_size).

    Images are composited on `background` (white as D-NeRF evaluates, black, or a random
    colour per image drawn from `seed`); `alphas` keeps the coverage for losses and masks.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if background not in BACKGROUNDS:
        raise ValueError(f"background must be one of {BACKGROUNDS}, got {background!r}")
    path = os.path.join(root, f"transforms_{split}.json")
    meta = _read_json(path)
    angle = _field(meta, "camera_angle_x", path)
    if not isinstance(angle, (int, float)) or not 0.0 < angle < math.pi:
        raise DNerfFormatError(
            f"{path}: field 'camera_angle_x' must be a number in (0, pi), got {angle!r}"
        )
    frames = _field(meta, "frames", path)
    if not isinstance(frames, list) or not frames:
        raise DNerfFormatError(f"{path}: field 'frames' must be a non-empty list")
    frames = frames[:max_frames] if max_frames else frames

    timed = any(isinstance(f, dict) and "time" in f for f in frames)
    images, times, c2ws, paths = [], [], [], []
    first_size = None
    for i, frame in enumerate(frames):
        where = f"{path}: frames[{i}]"
        if not isinstance(frame, dict):
            raise DNerfFormatError(f"{where}: must be an object")
        rel = _field(frame, "file_path", where)
        t = _field(frame, "time", where) if timed else 0.0  # NeRF-synthetic: no times
        m = _field(frame, "transform_matrix", where)
        if not isinstance(t, (int, float)):
            raise DNerfFormatError(f"{where}: field 'time' must be a number, got {t!r}")
        try:
            m = np.asarray(m, np.float64)
        except (ValueError, TypeError) as e:
            raise DNerfFormatError(
                f"{where}: field 'transform_matrix' is not a numeric matrix"
            ) from e
        if m.shape != (4, 4) or not np.all(np.isfinite(m)):
            raise DNerfFormatError(
                f"{where}: field 'transform_matrix' must be a finite 4x4 matrix, got shape "
                f"{m.shape}"
            )
        img_path = os.path.normpath(os.path.join(root, rel))
        if not os.path.splitext(img_path)[1]:
            img_path += ".png"
        img = load_rgba(img_path, f"{where} field 'file_path'")
        if first_size is None:
            first_size = img.shape[:2]
        elif img.shape[:2] != first_size:
            raise DNerfFormatError(
                f"{where}: image {img_path} is {img.shape[1]}x{img.shape[0]} but earlier images "
                f"are {first_size[1]}x{first_size[0]} (width x height)"
            )
        images.append(img)
        times.append(float(t))
        c2ws.append(m)
        paths.append(img_path)

    height, width = first_size
    focal = 0.5 * width / math.tan(0.5 * float(angle))
    if image_size is not None:
        new_h, new_w = (image_size, image_size) if isinstance(image_size, int) else image_size
        # Resize premultiplied colour so edges do not pick up the background's colour.
        premult = [np.concatenate([im[..., :3] * im[..., 3:], im[..., 3:]], -1) for im in images]
        small = [resize_image(im, (new_h, new_w)) for im in premult]
        images = [
            np.concatenate([im[..., :3] / np.maximum(im[..., 3:], 1e-6), im[..., 3:]], -1)
            for im in small
        ]
        focal *= new_w / width
    rng = np.random.default_rng(seed)
    rgba = np.stack(images).astype(np.float32)
    opengl_to_opencv = np.diag([1.0, -1.0, -1.0, 1.0])
    n, h, w = len(rgba), rgba.shape[1], rgba.shape[2]
    return PosedImages(
        images=np.stack([composite_background(im, background, rng) for im in rgba]).astype(
            np.float32
        ),
        alphas=rgba[..., 3],
        c2w=np.stack([m @ opengl_to_opencv for m in c2ws]).astype(np.float32),
        intrinsics=np.tile(np.array([focal, focal, 0.5 * w, 0.5 * h], np.float32), (n, 1)),
        names=tuple(paths),
        background=background,
        times=np.asarray(times, np.float32),
    )


def write_split(
    root: str,
    split: str,
    images: np.ndarray,
    alphas: np.ndarray | None,
    times: Sequence[float],
    c2w_opencv: np.ndarray,
    focal: float,
) -> None:
    """Writes a split in the same format (used by tests and to export procedural scenes)."""
    os.makedirs(os.path.join(root, split), exist_ok=True)
    width = images.shape[2]
    frames = []
    opencv_to_opengl = np.diag([1.0, -1.0, -1.0, 1.0])
    for i, img in enumerate(images):
        rgb = np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)
        a = (
            np.full(img.shape[:2], 255, np.uint8)
            if alphas is None
            else np.clip(alphas[i] * 255.0 + 0.5, 0, 255).astype(np.uint8)
        )
        Image.fromarray(np.dstack([rgb, a]), "RGBA").save(
            os.path.join(root, split, f"r_{i:03d}.png")
        )
        frames.append(
            {
                "file_path": f"./{split}/r_{i:03d}",
                "time": float(times[i]),
                "transform_matrix": (np.asarray(c2w_opencv[i]) @ opencv_to_opengl).tolist(),
            }
        )
    meta = {"camera_angle_x": 2.0 * math.atan(0.5 * width / focal), "frames": frames}
    with open(os.path.join(root, f"transforms_{split}.json"), "w") as f:
        json.dump(meta, f, indent=1)
