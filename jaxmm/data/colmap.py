"""COLMAP scene folders: `sparse/0` (cameras, images, points3D; binary or text) + `images/`.

Read with `pycolmap` (the COLMAP project's own Python bindings, PyPI wheels for Linux/macOS/
Windows): it parses both the binary and the text model formats, including COLMAP ≥ 3.12's
rigs/frames, so jaxmm keeps no parser of its own. Only undistorted pinhole cameras are
accepted (SIMPLE_PINHOLE, PINHOLE: run `colmap image_undistorter` first); other models, images
without a pose, non-finite or non-rotation poses and missing image files raise
`ColmapFormatError` naming the camera, image or file. COLMAP poses are world-to-camera in
OpenCV axes, the renderer's convention, so they are only inverted.

Splits follow the 3DGS/Mip-NeRF 360 convention: images sorted by name, every `test_every`-th
is a test view (0: all are training views). `downscale` f reads `images_f/` when it exists
(the 3DGS layout) and otherwise box-filters `images/`; intrinsics scale with the image.
"""

from __future__ import annotations

import os

import numpy as np

from jaxmm.data.dnerf import (
    BACKGROUNDS,
    SceneFolderError,
    composite_background,
    load_rgba,
    resize_image,
)
from jaxmm.data.posed import PosedImages

PINHOLE_MODELS = ("SIMPLE_PINHOLE", "PINHOLE")


class ColmapFormatError(SceneFolderError):
    """A COLMAP model, camera, pose or image is missing, malformed or unsupported."""


def is_colmap_folder(root: str) -> bool:
    return os.path.isdir(os.path.join(root, "sparse", "0")) or os.path.isdir(
        os.path.join(root, "sparse")
    )


def _model_dir(root: str) -> str:
    for d in (os.path.join(root, "sparse", "0"), os.path.join(root, "sparse")):
        if any(os.path.isfile(os.path.join(d, f"cameras.{e}")) for e in ("bin", "txt")):
            return d
    raise ColmapFormatError(f"{root}: no COLMAP model (sparse/0/cameras.bin or .txt) found")


def _pinhole(camera, where: str) -> np.ndarray:
    """(fx, fy, cx, cy) of an undistorted pinhole camera."""
    model = camera.model.name
    params = np.asarray(camera.params, np.float64)
    if model not in PINHOLE_MODELS:
        raise ColmapFormatError(
            f"{where}: camera model {model} is not supported (only {PINHOLE_MODELS}); "
            "undistort the images first (`colmap image_undistorter`)"
        )
    if model == "SIMPLE_PINHOLE":
        f, cx, cy = params
        return np.array([f, f, cx, cy])
    return params[:4]


def _c2w(image, where: str) -> np.ndarray:
    if not image.has_pose:
        raise ColmapFormatError(f"{where}: image has no pose (not registered)")
    cfw = image.cam_from_world() if callable(image.cam_from_world) else image.cam_from_world
    m = np.asarray(cfw.matrix(), np.float64)  # [3, 4] world -> camera
    rot = m[:, :3]
    if (
        not np.all(np.isfinite(m))
        or not np.allclose(rot @ rot.T, np.eye(3), atol=1e-4)
        or (np.linalg.det(rot) < 0)
    ):
        raise ColmapFormatError(f"{where}: bad pose (cam_from_world must be a finite rotation)")
    c2w = np.eye(4)
    c2w[:3, :3] = rot.T
    c2w[:3, 3] = -rot.T @ m[:, 3]
    return c2w


def load_colmap(
    root: str,
    split: str = "train",
    *,
    downscale: int = 1,
    background: str = "white",
    test_every: int = 8,
    seed: int = 0,
) -> PosedImages:
    """Reads one split of a COLMAP folder (see the module docstring) with its SfM points."""
    import pycolmap  # optional dependency: only COLMAP folders need it

    if split not in ("train", "test", "all"):
        raise ValueError(f"split must be 'train', 'test' or 'all', got {split!r}")
    if background not in BACKGROUNDS:
        raise ValueError(f"background must be one of {BACKGROUNDS}, got {background!r}")
    if int(downscale) < 1:
        raise ValueError(f"downscale must be an integer >= 1, got {downscale!r}")
    model_dir = _model_dir(root)
    try:
        rec = pycolmap.Reconstruction(model_dir)
    except Exception as e:  # pycolmap raises plain RuntimeError/ValueError on bad files
        raise ColmapFormatError(f"{model_dir}: cannot read COLMAP model: {e}") from e
    images = sorted(rec.images.values(), key=lambda im: im.name)
    if not images:
        raise ColmapFormatError(f"{model_dir}: model has no images")
    idx = np.arange(len(images))
    if split != "all" and test_every:
        is_test = idx % int(test_every) == 0
        idx = idx[is_test] if split == "test" else idx[~is_test]
    if len(idx) == 0:
        raise ColmapFormatError(f"{root}: split {split!r} is empty (test_every={test_every})")

    img_dir = os.path.join(root, "images")
    pre_scaled = downscale > 1 and os.path.isdir(os.path.join(root, f"images_{downscale}"))
    if pre_scaled:
        img_dir = os.path.join(root, f"images_{downscale}")
    rng = np.random.default_rng(seed)
    rgbs, alphas, c2ws, intrs, names = [], [], [], [], []
    size = None
    for i in idx:
        im = images[i]
        where = f"{model_dir}: image {im.image_id} ({im.name})"
        camera = rec.cameras[im.camera_id]
        intr = _pinhole(camera, f"{where} camera {im.camera_id}")
        rgba = load_rgba(os.path.join(img_dir, im.name), where, ColmapFormatError)
        if rgba.shape[:2] != (camera.height // (downscale if pre_scaled else 1),
                              camera.width // (downscale if pre_scaled else 1)):  # fmt: skip
            raise ColmapFormatError(
                f"{where}: image is {rgba.shape[1]}x{rgba.shape[0]}, camera {im.camera_id} "
                f"says {camera.width}x{camera.height} (downscale {downscale})"
            )
        if downscale > 1:
            h, w = camera.height // downscale, camera.width // downscale
            if not pre_scaled:
                premult = np.concatenate([rgba[..., :3] * rgba[..., 3:], rgba[..., 3:]], -1)
                small = resize_image(premult, (h, w))
                a = small[..., 3:]
                rgba = np.concatenate([small[..., :3] / np.maximum(a, 1e-6), a], -1)
            intr = intr * np.array([w / camera.width, h / camera.height] * 2)
        if size is None:
            size = rgba.shape[:2]
        elif rgba.shape[:2] != size:
            raise ColmapFormatError(f"{where}: all images must share one size, got {rgba.shape}")
        rgbs.append(composite_background(rgba, background, rng))
        alphas.append(rgba[..., 3])
        c2ws.append(_c2w(im, where))
        intrs.append(intr)
        names.append(im.name)
    pts = [p for _, p in sorted(rec.points3D.items(), key=lambda kv: kv[0])]
    points = np.asarray([p.xyz for p in pts], np.float32).reshape(-1, 3)
    colors = np.asarray([p.color for p in pts], np.float32).reshape(-1, 3) / 255.0
    return PosedImages(
        images=np.stack(rgbs).astype(np.float32),
        alphas=np.stack(alphas).astype(np.float32),
        c2w=np.stack(c2ws).astype(np.float32),
        intrinsics=np.stack(intrs).astype(np.float32),
        names=tuple(names),
        background=background,
        points=points if len(points) else None,
        point_colors=colors if len(points) else None,
    )


def write_colmap(
    root: str,
    images: np.ndarray,
    c2w: np.ndarray,
    intrinsics: np.ndarray,
    points: np.ndarray,
    point_colors: np.ndarray,
    *,
    binary: bool = True,
    model: str = "PINHOLE",
) -> str:
    """Writes a COLMAP folder (images/ + sparse/0) with pycolmap; for tests and exports.

    images [N, H, W, 3 or 4] in [0, 1], c2w [N, 4, 4] OpenCV, intrinsics [N, 4] (one camera
    per image), points [P, 3] with colours [P, 3] in [0, 1]. Returns the model folder."""
    import pycolmap
    from PIL import Image

    n, h, w = images.shape[:3]
    os.makedirs(os.path.join(root, "images"), exist_ok=True)
    model_dir = os.path.join(root, "sparse", "0")
    os.makedirs(model_dir, exist_ok=True)
    rec = pycolmap.Reconstruction()
    for i in range(n):
        fx, fy, cx, cy = (float(v) for v in intrinsics[i])
        params = [fx, cx, cy] if model == "SIMPLE_PINHOLE" else [fx, fy, cx, cy]
        if model not in PINHOLE_MODELS:  # e.g. to test the error: extra params zero
            params = [fx, cx, cy, 0.0] if model == "SIMPLE_RADIAL" else params + [0.0] * 4
        cam = pycolmap.Camera.create_from_model_name(i + 1, model, fx, w, h)
        cam.params = params
        rec.add_camera_with_trivial_rig(cam)
        w2c = np.linalg.inv(np.asarray(c2w[i], np.float64))
        pose = pycolmap.Rigid3d(pycolmap.Rotation3d(w2c[:3, :3]), w2c[:3, 3])
        name = f"{i:03d}.png"
        rec.add_image_with_trivial_frame(
            pycolmap.Image(name=name, camera_id=i + 1, image_id=i + 1), pose
        )
        pixels = np.clip(np.asarray(images[i]) * 255.0 + 0.5, 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(os.path.join(root, "images", name))
    for p, c in zip(points, point_colors, strict=True):
        rgb = np.clip(np.asarray(c) * 255.0 + 0.5, 0, 255).astype(np.uint8)
        rec.add_point3D(np.asarray(p, np.float64), pycolmap.Track(), rgb)
    (rec.write_binary if binary else rec.write_text)(model_dir)
    return model_dir
