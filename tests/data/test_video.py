"""Video I/O with the real decoder (PyAV/FFmpeg): procedural movies decode with the frame count,
timestamps and colours they were drawn with; uniform and fps sampling pick the frames on
screen at the sampled times; MKV and WebM decode; corrupt/missing files and bad SRT get
errors naming the file."""

import random

import av
import numpy as np
import pytest

from jaxmm.data import movies_synth as ms
from jaxmm.data import video

pytestmark = pytest.mark.filterwarnings("ignore:os.fork:RuntimeWarning")


@pytest.fixture(scope="module")
def movie(tmp_path_factory):
    root = tmp_path_factory.mktemp("movies")
    (m,) = ms.write_dataset(str(root), n=1, seed=3)
    return m, str(root / "videos" / "movie000.mp4"), str(root / "subtitles" / "movie000.srt")


def test_probe_and_full_decode_timestamps(movie):
    m, path, _ = movie
    info = video.probe(path)
    assert (info.width, info.height, info.fps, info.num_frames) == (128, 96, 8.0, 96)
    assert info.duration_s == pytest.approx(12.0)
    assert info.codec == "h264"
    clip = video.read_video(path)
    assert clip.frames.shape == (96, 96, 128, 3) and clip.frames.dtype == np.uint8
    np.testing.assert_allclose(clip.timestamps_s, np.arange(96) / 8)


def test_decoded_colours_match_the_scene(movie):
    """Flat colours survive H.264: figure centres, background corners and the carried object
    are within a few levels of what was drawn (edges are blurred by 4:2:0 chroma)."""
    m, path, _ = movie
    clip = video.read_video(path)
    for i in (5, 30, 50, 90):  # walking, standing after the hand-over, ...
        t = clip.timestamps_s[i]
        scene = m.scenes[int(t // ms.SCENE_S)]
        frame = clip.frames[i].astype(int)
        np.testing.assert_allclose(frame[2, 2], ms.BACKGROUNDS[scene.background], atol=8)
        for who in (scene.giver, scene.receiver):
            x0, y0, x1, y1 = ms.figure_box(m, t, who)
            centre = frame[(y0 + y1) // 2, (x0 + x1) // 2]
            np.testing.assert_allclose(centre, ms.COLOURS[m.colours[who]], atol=12)
        x0, y0, x1, _ = ms.figure_box(m, t, ms.object_holder(m, t))
        np.testing.assert_allclose(frame[y0 - 2 - ms.OBJ // 2, (x0 + x1) // 2], 255, atol=12)
        assert np.abs(frame - ms.render_frame(m, t)).mean() < 3


def test_uniform_budget_and_fps_sampling(movie):
    _, path, _ = movie
    every = video.read_video(path).frames
    clip = video.read_video(path, max_frames=8)
    # segment centres (k + 0.5) * 12 s / 8 -> frames floor(t * 8 fps) = 6, 18, ..., 90
    np.testing.assert_allclose(clip.timestamps_s, [0.75, 2.25, 3.75, 5.25, 6.75, 8.25, 9.75, 11.25])
    np.testing.assert_array_equal(clip.frames, every[6::12])
    # between frames: 0.1 s shows frame 0 (t=0), 0.2 s frame 1 (t=0.125)
    assert len(video.read_video(path, max_frames=500).frames) == 96  # never more than exist
    clip = video.read_video(path, fps=1.0, start_s=2.0, end_s=6.0)
    np.testing.assert_allclose(clip.timestamps_s, [2.0, 3.0, 4.0, 5.0])
    np.testing.assert_array_equal(clip.frames, every[[16, 24, 32, 40]])
    clip = video.read_video(path, fps=3.0, end_s=1.0)  # 0, 1/3, 2/3 s -> frames 0, 2, 5
    np.testing.assert_allclose(clip.timestamps_s, [0.0, 0.25, 0.625])
    with pytest.raises(ValueError, match="at most one"):
        video.read_video(path, max_frames=4, fps=1.0)
    with pytest.raises(video.VideoError, match="outside"):
        video.read_video(path, start_s=20.0)


def _webm(path: str, frames: np.ndarray, fps: int) -> None:
    """An independent encoder (PyAV, VP9 in WebM) for the decoder to read."""
    with av.open(path, "w") as out:
        stream = out.add_stream("libvpx-vp9", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for f in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


@pytest.mark.parametrize("suffix", [".mkv", ".webm"])
def test_mkv_and_webm_decode(tmp_path, suffix):
    frames = np.zeros((10, 48, 64, 3), np.uint8)
    for i in range(10):
        frames[i, :, :, 0] = 20 * i  # red ramps over time
    path = str(tmp_path / f"v{suffix}")
    if suffix == ".mkv":
        video.write_video(path, frames, fps=5)
    else:
        _webm(path, frames, fps=5)
    clip = video.read_video(path)
    assert len(clip.frames) == 10
    np.testing.assert_allclose(clip.timestamps_s, np.arange(10) / 5, atol=1e-3)
    np.testing.assert_allclose(clip.frames[:, 24, 32, 0], 20 * np.arange(10), atol=6)


def test_corrupt_and_missing_video_named(tmp_path, movie):
    with pytest.raises(FileNotFoundError, match="nope.mp4"):
        video.read_video(tmp_path / "nope.mp4")
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(random.Random(0).randbytes(4000))
    with pytest.raises(video.VideoError, match="garbage.mp4.*cannot be opened"):
        video.probe(garbage)
    data = open(movie[1], "rb").read()
    cut = tmp_path / "cut.mp4"  # the header (moov atom at the end) is lost
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(video.VideoError, match="cut.mp4"):
        video.read_video(cut)
    audio = tmp_path / "sub.srt"
    audio.write_text("1\n00:00:01,000 --> 00:00:02,000\nhi\n")
    with pytest.raises(video.VideoError, match="sub.srt"):
        video.read_video(audio)


def test_srt_round_trip_ranges_and_errors(tmp_path, movie):
    m, _, srt_path = movie
    subs = video.read_srt(srt_path)
    assert [s.text for s in subs] == [s.text for s in ms.subtitles(m)]
    assert (subs[0].start_s, subs[0].end_s) == (0.5, 1.8)
    all_text = video.subtitles_text(subs)
    assert all_text.split("\n") == [s.text for s in subs]  # index/timing lines dropped
    second = video.subtitles_text(subs, start_s=4.0, end_s=8.0)  # the second scene only
    assert second.split("\n") == [s.text for s in subs[2:4]]
    assert video.subtitles_text(subs, start_s=1.0, end_s=1.5, timestamps=True) == (
        f"[00:00:00.5-00:00:01.8] {subs[0].text}"
    )
    bad = tmp_path / "bad.srt"
    bad.write_text("1\n00:00:01,000 --> 00:00:02,000\nhello\n\n2\n00:00:03,000 -> 00:00:04\nx\n")
    with pytest.raises(video.SubtitleError, match="bad.srt.*not valid SRT"):
        video.read_srt(bad)
    with pytest.raises(FileNotFoundError, match="subtitle file .*missing.srt"):
        video.read_srt(tmp_path / "missing.srt")
