"""Artefact writers: GIF and MP4 decode back to the frames written; the still's layout."""

import imageio_ffmpeg
import numpy as np
import pytest
from PIL import Image

from jaxmm.lrm4d import media


def _frames(n=6, h=12, w=20):
    """Distinct flat-coloured frames with a moving bar (codecs keep flat regions exactly)."""
    rng = np.random.default_rng(0)
    out = np.ones((n, h, w, 3), np.float32) * rng.uniform(0.2, 0.8, (n, 1, 1, 3))
    for i in range(n):
        out[i, :, 2 * i : 2 * i + 3] = 0.0
    return out


def test_gif_round_trip(tmp_path):
    frames = _frames()
    path = media.write_gif(str(tmp_path / "a" / "t.gif"), frames, scale=2)
    with Image.open(path) as im:
        assert im.n_frames == len(frames) and im.size == (40, 24)
        im.seek(3)
        got = np.asarray(im.convert("RGB"), np.float32) / 255
    # GIF palettes quantise colour: 8-bit steps plus palette error.
    np.testing.assert_allclose(got[::2, ::2], frames[3], atol=0.03)


@pytest.mark.filterwarnings("ignore:os.fork:RuntimeWarning")  # the reader spawns ffmpeg
def test_mp4_round_trip(tmp_path):
    frames = _frames()
    path = media.write_mp4(str(tmp_path / "t.mp4"), frames, fps=4, scale=2)
    assert not (tmp_path / "t.mp4.tmp.mp4").exists()  # written under a temp name, then renamed
    reader = imageio_ffmpeg.read_frames(path)
    meta = reader.__next__()
    assert meta["size"] == (48, 32)  # 40x24 padded to multiples of 16
    decoded = [np.frombuffer(f, np.uint8).reshape(32, 48, 3) for f in reader]
    assert len(decoded) == len(frames)
    # H.264 with 4:2:0 chroma is lossy: compare frame means of the unpadded part, and check
    # that the padding is white and that frames differ as they should.
    for want, got in zip(frames, decoded, strict=True):
        got = got[:24, :40].astype(np.float32) / 255
        np.testing.assert_allclose(got.mean((0, 1)), want.mean((0, 1)), atol=0.04)
    assert decoded[0][28:, :, :].min() > 240


def test_contact_sheet_layout_and_bad_frames(tmp_path):
    frames = _frames(n=10)
    sheet = media.contact_sheet({"a": frames, "b": 1 - frames}, num_columns=4, scale=2)
    assert sheet.shape == (2 * (24 + 2), 4 * (40 + 2), 3) and sheet.dtype == np.uint8
    np.testing.assert_array_equal(sheet[:24, :40], media.to_uint8(frames[0], 2))
    np.testing.assert_array_equal(sheet[26:50, -42:-2], media.to_uint8(1 - frames[-1], 2))
    path = media.write_png(str(tmp_path / "s.png"), sheet)
    np.testing.assert_array_equal(np.asarray(Image.open(path)), sheet)
    with pytest.raises(ValueError, match=r"write_gif: frames must be \[F>0, H, W, 3\]"):
        media.write_gif(str(tmp_path / "x.gif"), frames[..., 0])
