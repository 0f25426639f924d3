"""D-NeRF / Consistent4D folder loader on folders the tests write, and its error messages."""

import json
import math
import os

import numpy as np
import pytest
from PIL import Image

from jaxmm.data.dnerf import DNerfFormatError, load_split, write_split
from jaxmm.gaussians.camera import look_at_c2w


def _write(root, n=3, size=8, split="train"):
    rng = np.random.default_rng(0)
    images = rng.uniform(size=(n, size, size, 3)).astype(np.float32)
    alphas = rng.uniform(size=(n, size, size)).astype(np.float32)
    c2w = np.stack(
        [
            look_at_c2w((2.0 * math.cos(a), 2.0 * math.sin(a), 0.5), (0, 0, 0), (0, 0, 1))
            for a in np.linspace(0, 2, n)
        ]
    )
    write_split(str(root), split, images, alphas, np.linspace(0, 1, n), c2w, focal=10.0)
    return images, alphas, c2w


def test_round_trip_composites_on_white_and_converts_axes(tmp_path):
    images, alphas, c2w = _write(tmp_path)
    s = load_split(str(tmp_path), "train")
    assert s.images.shape == (3, 8, 8, 3) and s.num == 3
    q = lambda x: np.round(x * 255) / 255  # PNG stores 8 bits
    expected = q(images) * q(alphas)[..., None] + (1 - q(alphas)[..., None])
    np.testing.assert_allclose(s.images, expected, atol=1e-6)
    np.testing.assert_allclose(s.c2w, c2w, atol=1e-6)  # OpenCV in, OpenGL on disk, OpenCV out
    np.testing.assert_allclose(s.focal(), 10.0, rtol=1e-6)
    np.testing.assert_allclose(s.intrinsics[0], [10.0, 10.0, 4.0, 4.0], rtol=1e-6)
    np.testing.assert_allclose(s.model_times(), [-1, 0, 1], atol=1e-6)
    cams = s.cameras()
    assert cams.c2w.shape == (3, 4, 4) and cams.width == 8
    half = load_split(str(tmp_path), "train", image_size=4)
    assert half.images.shape == (3, 4, 4, 3)
    np.testing.assert_allclose(half.focal(), 5.0, rtol=1e-6)


def test_missing_transforms_file(tmp_path):
    with pytest.raises(DNerfFormatError, match="transforms_val.json: transforms file not found"):
        load_split(str(tmp_path), "val")


def test_bad_json_names_file_and_line(tmp_path):
    (tmp_path / "transforms_train.json").write_text('{"camera_angle_x": 0.5,\n "frames": [}')
    with pytest.raises(DNerfFormatError, match=r"transforms_train.json: invalid JSON at line 2"):
        load_split(str(tmp_path), "train")


def _edit(tmp_path, fn):
    path = tmp_path / "transforms_train.json"
    meta = json.loads(path.read_text())
    fn(meta)
    path.write_text(json.dumps(meta))


@pytest.mark.parametrize("field", ["time", "transform_matrix", "file_path"])
def test_missing_frame_field(tmp_path, field):
    _write(tmp_path)
    _edit(tmp_path, lambda m: m["frames"][1].pop(field))
    with pytest.raises(DNerfFormatError, match=rf"frames\[1\]: missing field '{field}'"):
        load_split(str(tmp_path), "train")


def test_nerf_synthetic_without_times_is_static(tmp_path):
    """NeRF-synthetic files have no `time`: all frames at 0 (not an error)."""
    _write(tmp_path)
    _edit(tmp_path, lambda m: [f.pop("time") for f in m["frames"]])
    s = load_split(str(tmp_path), "train")
    np.testing.assert_array_equal(s.times, np.zeros(3, np.float32))


def test_bad_matrix_angle_and_missing_image(tmp_path):
    _write(tmp_path)
    _edit(tmp_path, lambda m: m["frames"][2].__setitem__("transform_matrix", [[1, 0], [0, 1]]))
    with pytest.raises(DNerfFormatError, match=r"frames\[2\]: field 'transform_matrix'"):
        load_split(str(tmp_path), "train")
    _write(tmp_path)
    _edit(tmp_path, lambda m: m.pop("camera_angle_x"))
    with pytest.raises(DNerfFormatError, match="missing field 'camera_angle_x'"):
        load_split(str(tmp_path), "train")
    _write(tmp_path)
    os.remove(tmp_path / "train" / "r_001.png")
    with pytest.raises(
        DNerfFormatError, match=r"frames\[1\] field 'file_path': image file .*r_001.png"
    ):
        load_split(str(tmp_path), "train")


def test_mismatched_image_sizes(tmp_path):
    _write(tmp_path)
    Image.new("RGBA", (6, 8)).save(tmp_path / "train" / "r_002.png")
    with pytest.raises(DNerfFormatError, match=r"r_002.png is 6x8 but earlier images are 8x8"):
        load_split(str(tmp_path), "train")
