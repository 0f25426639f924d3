"""Scene folders for per-scene fitting: one entry point for D-NeRF and COLMAP, and a procedural
static object written as either (the test data of the fitting task and its docs).

    scene = load_scene("data/lego", "train", background="white", downscale=2)

`load_scene` detects the format (`transforms_train.json` → D-NeRF / NeRF-synthetic, `sparse/`
→ COLMAP) and returns `PosedImages`. A D-NeRF folder is dynamic when its frames have different
times. Errors name the folder, file and field (`SceneFolderError` and its subclasses).
"""

from __future__ import annotations

import dataclasses
import os

import jax.numpy as jnp
import numpy as np
from PIL import Image

from jaxmm import gaussians as G
from jaxmm.data import colmap, dnerf
from jaxmm.data.dnerf import SceneFolderError
from jaxmm.data.posed import PosedImages

FORMATS = ("auto", "dnerf", "colmap")


def detect_format(root: str) -> str:
    if os.path.isfile(os.path.join(root, "transforms_train.json")):
        return "dnerf"
    if colmap.is_colmap_folder(root):
        return "colmap"
    if not os.path.isdir(root):
        raise SceneFolderError(f"{root}: scene folder not found")
    raise SceneFolderError(
        f"{root}: neither a D-NeRF/NeRF-synthetic folder (transforms_train.json) nor a COLMAP "
        "folder (sparse/0)"
    )


def _dnerf_size(root: str, split: str) -> tuple[int, int]:
    """(height, width) of a D-NeRF split's first image, read from its header only."""
    meta = dnerf._read_json(os.path.join(root, f"transforms_{split}.json"))
    frames = meta.get("frames") or [{}]
    rel = frames[0].get("file_path", "")
    path = os.path.normpath(os.path.join(root, rel))
    path += "" if os.path.splitext(path)[1] else ".png"
    if not os.path.isfile(path):
        raise dnerf.DNerfFormatError(f"{root}: frames[0] image file {path} not found")
    with Image.open(path) as im:
        return im.height, im.width


def load_scene(
    root: str,
    split: str = "train",
    *,
    fmt: str = "auto",
    background: str = "white",
    downscale: int = 1,
    test_every: int = 8,
    seed: int = 0,
) -> PosedImages:
    """One split ("train" or "test") of a scene folder as `PosedImages`."""
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {FORMATS}, got {fmt!r}")
    fmt = detect_format(root) if fmt == "auto" else fmt
    if fmt == "colmap":
        return colmap.load_colmap(
            root, split, downscale=downscale, background=background, test_every=test_every,
            seed=seed,
        )  # fmt: skip
    size = None
    if downscale != 1:
        h, w = _dnerf_size(root, split)
        size = (h // int(downscale), w // int(downscale))
    s = dnerf.load_split(root, split, image_size=size, background=background, seed=seed)
    # NeRF-synthetic folders store no times (all 0): a static scene.
    return s if np.ptp(s.times) > 0 else dataclasses.replace(s, times=None)


def procedural_scene(seed: int = 0) -> G.Gaussians3D:
    """Ground truth: a coloured torus around a sphere above a disc (about 700 Gaussians)."""
    rng = np.random.default_rng(seed)
    parts = []
    # Torus, hue varying around it.
    u = rng.uniform(0, 2 * np.pi, 320)
    v = rng.uniform(0, 2 * np.pi, 320)
    big, small = 0.65, 0.16
    pts = np.stack(
        [
            (big + small * np.cos(v)) * np.cos(u),
            (big + small * np.cos(v)) * np.sin(u),
            small * np.sin(v) + 0.1,
        ],
        -1,
    )
    rgb = 0.5 + 0.45 * np.stack([np.cos(u), np.cos(u + 2.1), np.cos(u + 4.2)], -1)
    parts.append((pts, rgb, 0.06))
    # Sphere, vertical gradient.
    d = rng.normal(size=(240, 3))
    d /= np.linalg.norm(d, axis=-1, keepdims=True)
    pts = 0.32 * d + np.array([0.0, 0.0, 0.15])
    rgb = np.stack([0.9 - 0.3 * d[:, 2], 0.4 + 0.4 * d[:, 2], 0.2 + 0.1 * d[:, 0]], -1)
    parts.append((pts, rgb, 0.07))
    # Disc floor, checker-ish two tones.
    r = 0.95 * np.sqrt(rng.uniform(0, 1, 160))
    th = rng.uniform(0, 2 * np.pi, 160)
    pts = np.stack([r * np.cos(th), r * np.sin(th), np.full_like(r, -0.35)], -1)
    tone = ((np.floor(pts[:, 0] * 3) + np.floor(pts[:, 1] * 3)) % 2)[:, None]
    rgb = tone * np.array([0.25, 0.3, 0.35]) + (1 - tone) * np.array([0.8, 0.78, 0.7])
    parts.append((pts, rgb, 0.12))
    means = np.concatenate([p[0] for p in parts])
    rgb = np.clip(np.concatenate([p[1] for p in parts]), 0.02, 0.98)
    scales = np.concatenate([np.full((len(p[0]), 3), p[2]) for p in parts])
    scales[-160:, 2] = 0.015  # flat floor splats
    n = len(means)
    quats = np.tile(np.array([1.0, 0.0, 0.0, 0.0]), (n, 1)) + 0.1 * rng.normal(size=(n, 4))
    return G.Gaussians3D(
        means=jnp.asarray(means, jnp.float32),
        scales=jnp.asarray(scales, jnp.float32),
        quats=jnp.asarray(quats, jnp.float32),
        opacities=jnp.full((n,), 0.9, jnp.float32),
        sh_dc=jnp.asarray(G.rgb_to_sh_dc(rgb), jnp.float32),
    )


def scene_cameras(num: int, size: int, *, held_out: bool) -> list[G.Camera]:
    """Cameras on a sphere of radius 3 around the scene. Held-out ones sit between the
    training azimuths at different elevations."""
    cams = []
    for i in range(num):
        if held_out:
            elev, phase = (10.0 + 35.0 * (i % 2)), 360.0 * (i + 0.5) / num + 7.0
        else:
            elev, phase = (5.0 + 50.0 * ((i * 7) % 5) / 4.0), 360.0 * i / num
        cams += G.orbit_cameras(
            1, 3.0, elevation_deg=elev, phase_deg=phase, fov_x_deg=45.0, width=size, height=size
        )
    return cams


def write_procedural_scene(
    root: str,
    *,
    num_train: int = 40,
    num_test: int = 8,
    size: int = 128,
    fmt: str = "dnerf",
    seed: int = 0,
    binary: bool = True,
) -> dict[str, int]:
    """Renders `procedural_scene` (exactly: dense compositor, no cap) from `scene_cameras`
    and writes it as a D-NeRF folder (RGBA, transparent background) or a COLMAP folder
    (RGBA images, one PINHOLE camera per image, the Gaussians' centres as SfM points; COLMAP
    has no split files, so views are interleaved and `test_every` picks the held-out ones)."""
    gt = procedural_scene(seed)
    views = {
        "train": scene_cameras(num_train, size, held_out=False),
        "test": scene_cameras(num_test, size, held_out=True),
    }
    rendered = {}
    for split, cams in views.items():
        out = G.render_batch(
            gt, G.stack_cameras(cams), checkpoint=False, impl="dense", max_per_tile=None,
            background=(0.0, 0.0, 0.0),
        )  # fmt: skip
        alpha = np.asarray(out.alpha, np.float32)
        straight = np.asarray(out.rgb, np.float32) / np.maximum(alpha[..., None], 1e-6)
        rgb = np.where(alpha[..., None] > 1e-4, np.clip(straight, 0, 1), 1.0)
        c2w = np.stack([np.asarray(c.c2w) for c in cams])
        intr = np.stack([np.asarray(c.intrinsics) for c in cams])
        rendered[split] = (rgb, alpha, c2w, intr)
    if fmt == "dnerf":
        for split, (rgb, alpha, c2w, intr) in rendered.items():
            dnerf.write_split(root, split, rgb, alpha, [0.0] * len(rgb), c2w, float(intr[0, 0]))
    elif fmt == "colmap":
        # Interleave so that `test_every` = num_train // num_test + 1 picks the test views.
        every = num_train // num_test + 1
        order, tr, te = [], iter(range(num_train)), iter(range(num_test))
        for i in range(num_train + num_test):
            order.append(("test", next(te)) if i % every == 0 else ("train", next(tr)))
        pick = lambda k: np.stack([rendered[s][k][j] for s, j in order])  # noqa: E731
        rgba = np.concatenate([pick(0), pick(1)[..., None]], -1)
        rng = np.random.default_rng(seed)
        pts = np.asarray(gt.means) + 0.01 * rng.normal(size=gt.means.shape)
        cols = np.clip(np.asarray(gt.rgb), 0, 1)
        colmap.write_colmap(root, rgba, pick(2), pick(3), pts, cols, binary=binary)
    else:
        raise ValueError(f"fmt must be 'dnerf' or 'colmap', got {fmt!r}")
    return {"train": num_train, "test": num_test}
