"""COLMAP folders: written with pycolmap from a procedural scene (binary and text), read back
as PosedImages; named errors for unsupported cameras, missing images and bad poses."""

import os

import numpy as np
import pytest

from jaxmm.data import colmap, scenes
from jaxmm.data.colmap import ColmapFormatError


def _views(n=4, size=24):
    cams = scenes.scene_cameras(n, size, held_out=False)
    c2w = np.stack([np.asarray(c.c2w) for c in cams])
    intr = np.stack([np.asarray(c.intrinsics) for c in cams])
    rng = np.random.default_rng(0)
    rgba = rng.uniform(0, 1, (n, size, size, 4)).astype(np.float32)
    rgba[..., 3] = np.where(np.arange(size)[None, :, None] < size // 2, 1.0, 0.0)
    pts = rng.normal(size=(10, 3)).astype(np.float32)
    return rgba, c2w, intr, pts, rng.uniform(0, 1, (10, 3))


@pytest.mark.parametrize("binary", [True, False])
def test_roundtrip_poses_intrinsics_points(tmp_path, binary):
    rgba, c2w, intr, pts, cols = _views()
    colmap.write_colmap(str(tmp_path), rgba, c2w, intr, pts, cols, binary=binary)
    ext = "bin" if binary else "txt"
    assert os.path.isfile(tmp_path / "sparse" / "0" / f"images.{ext}")
    v = colmap.load_colmap(str(tmp_path), "all", background="black")
    np.testing.assert_allclose(v.c2w, c2w, atol=1e-5)
    np.testing.assert_allclose(v.intrinsics, intr, rtol=1e-6)
    np.testing.assert_allclose(v.points, pts, atol=1e-6)
    np.testing.assert_allclose(v.point_colors, np.round(cols * 255) / 255, atol=1e-6)
    # black background: colour is premultiplied by the PNG's alpha, which is kept
    np.testing.assert_allclose(v.alphas, rgba[..., 3], atol=1 / 255)
    exp = np.round(rgba[..., :3] * 255) / 255 * rgba[..., 3:]
    np.testing.assert_allclose(v.images, exp, atol=1e-5)


def test_splits_downscale_and_backgrounds(tmp_path):
    rgba, c2w, intr, pts, cols = _views(n=9)
    colmap.write_colmap(str(tmp_path), rgba, c2w, intr, pts, cols)
    test = scenes.load_scene(str(tmp_path), "test", test_every=4)
    train = scenes.load_scene(str(tmp_path), "train", test_every=4)
    assert test.names == ("000.png", "004.png", "008.png") and train.num == 6
    small = scenes.load_scene(str(tmp_path), "train", test_every=4, downscale=2)
    assert small.images.shape[1:3] == (12, 12)
    np.testing.assert_allclose(small.intrinsics, train.intrinsics / 2, rtol=1e-6)
    white = scenes.load_scene(str(tmp_path), "train", background="white").images
    black = scenes.load_scene(str(tmp_path), "train", background="black").images
    transparent = np.arange(24) >= 12  # rows
    np.testing.assert_allclose(white[:, transparent], 1.0)
    np.testing.assert_allclose(black[:, transparent], 0.0)
    rand = scenes.load_scene(str(tmp_path), "train", background="random").images
    per_image = rand[:, -1, 0]  # a transparent pixel shows that image's background colour
    assert np.ptp(per_image, axis=0).max() > 0.05  # one random colour per image


def test_unsupported_camera_model_is_named(tmp_path):
    rgba, c2w, intr, pts, cols = _views()
    colmap.write_colmap(str(tmp_path), rgba, c2w, intr, pts, cols, model="OPENCV")
    with pytest.raises(ColmapFormatError, match="camera model OPENCV is not supported"):
        colmap.load_colmap(str(tmp_path))


def test_missing_image_and_folder_are_named(tmp_path):
    rgba, c2w, intr, pts, cols = _views()
    colmap.write_colmap(str(tmp_path), rgba, c2w, intr, pts, cols)
    os.remove(tmp_path / "images" / "002.png")
    with pytest.raises(ColmapFormatError, match=r"002\.png.*not found"):
        colmap.load_colmap(str(tmp_path), "all")
    with pytest.raises(ValueError, match="scene folder not found"):
        scenes.load_scene(str(tmp_path / "nope"))


def test_bad_pose_is_named(tmp_path):
    rgba, c2w, intr, pts, cols = _views()
    colmap.write_colmap(str(tmp_path), rgba, c2w, intr, pts, cols, binary=False)
    path = tmp_path / "sparse" / "0" / "images.txt"
    lines = path.read_text().splitlines()
    for i, line in enumerate(lines):
        parts = line.split()
        if parts and not line.startswith("#") and parts[-1] == "001.png":
            parts[1:5] = ["nan", "0", "0", "0"]  # QW is NaN
            lines[i] = " ".join(parts)
    path.write_text("\n".join(lines) + "\n")
    # pycolmap's own parser rejects the NaN; either way the error is ours and names the model.
    with pytest.raises(ColmapFormatError, match=r"(001\.png.*bad pose|cannot read COLMAP model)"):
        colmap.load_colmap(str(tmp_path), "all")
