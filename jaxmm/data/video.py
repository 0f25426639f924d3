"""Video and subtitle files: decode frames with their timestamps, write MP4, read/write SRT.

The one home for video I/O (decoding for MF²-style harnesses and frame selection, the MP4
writer used by `jaxmm.lrm4d.media` and `jaxmm.data.movies_synth`). Decoding uses PyAV (the
FFmpeg libraries: MP4, MKV, WebM, ...), so every frame carries its real presentation time;
writing uses the ffmpeg binary shipped by `imageio-ffmpeg` (H.264, yuv420p, plays everywhere).
Subtitles are parsed by the `srt` library. A missing file raises `FileNotFoundError`, an
unreadable one `VideoError` / `SubtitleError`; each message names the file and what is wrong.

    clip = read_video("movie.mp4", max_frames=16)       # uniform: 16 frames over the movie
    clip = read_video("movie.mp4", fps=1.0, end_s=60)    # one frame per second, first minute
    clip.frames  # uint8 [F, H, W, 3]; clip.timestamps_s  # float64 [F], seconds
    text = subtitles_text(read_srt("movie.srt"), start_s=30, end_s=90)
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import warnings
from collections.abc import Sequence

import av
import numpy as np
import srt

__all__ = [
    "Clip",
    "Subtitle",
    "SubtitleError",
    "VideoError",
    "VideoInfo",
    "probe",
    "read_srt",
    "read_video",
    "subtitles_text",
    "uniform_times",
    "write_srt",
    "write_video",
]

_EPS_S = 1e-6  # timestamps are rationals; a frame at exactly t counts as "at or before t"


class VideoError(ValueError):
    """A video file that cannot be decoded (corrupt, no video stream, bad range)."""


class SubtitleError(ValueError):
    """A subtitle file that is not valid SRT."""


@dataclasses.dataclass(frozen=True)
class VideoInfo:
    path: str
    width: int
    height: int
    fps: float  # average frame rate
    duration_s: float
    num_frames: int  # from the container; 0 when it does not say (some MKV/WebM)
    codec: str


@dataclasses.dataclass(frozen=True)
class Clip:
    """Decoded frames: `frames` uint8 [F, H, W, 3] (RGB), `timestamps_s` float64 [F]."""

    frames: np.ndarray
    timestamps_s: np.ndarray
    info: VideoInfo


def _open(path: str | os.PathLike) -> tuple[str, av.container.InputContainer]:
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"video file {path!r} does not exist")
    try:
        container = av.open(path)
    except (av.error.FFmpegError, UnicodeDecodeError) as e:
        raise VideoError(f"video file {path!r} cannot be opened: {e}") from None
    if not container.streams.video:
        container.close()
        raise VideoError(f"video file {path!r} has no video stream")
    return path, container


def _info(path: str, container: av.container.InputContainer) -> VideoInfo:
    stream = container.streams.video[0]
    fps = float(stream.average_rate or stream.guessed_rate or 0)
    if stream.duration is not None and stream.time_base is not None:
        duration = float(stream.duration * stream.time_base)
    elif container.duration is not None:
        duration = container.duration / av.time_base
    else:
        duration = 0.0
    if fps <= 0 or duration <= 0:
        raise VideoError(f"video file {path!r}: no frame rate or duration in its header")
    codec = stream.codec_context.name
    w, h = stream.codec_context.width, stream.codec_context.height
    return VideoInfo(path, w, h, fps, duration, int(stream.frames or 0), codec)


def probe(path: str | os.PathLike) -> VideoInfo:
    """Size, frame rate, duration and frame count from the header (no decoding)."""
    path, container = _open(path)
    with container:
        return _info(path, container)


def uniform_times(start_s: float, end_s: float, budget: int) -> np.ndarray:
    """`budget` times at the centres of equal segments of [start_s, end_s): for a constant
    frame rate the frame shown at segment k's centre is index floor((k + 0.5) * F / budget)."""
    if budget < 1:
        raise ValueError(f"frame budget must be >= 1, got {budget}")
    return start_s + (np.arange(budget) + 0.5) * (end_s - start_s) / budget


def read_video(
    path: str | os.PathLike,
    *,
    max_frames: int | None = None,
    fps: float | None = None,
    start_s: float = 0.0,
    end_s: float | None = None,
) -> Clip:
    """Frames shown at sampled times in [start_s, end_s) with their own timestamps.

    `max_frames`: uniform sampling with a frame budget (segment centres, `uniform_times`);
    `fps`: one frame every 1/fps seconds from `start_s`; neither: every frame. The frame
    picked for a time t is the one on screen at t (the last with timestamp <= t); a frame
    picked twice (budget above the frame count) is kept once, so F <= the budget.
    """
    if max_frames is not None and fps is not None:
        raise ValueError("give at most one of max_frames (uniform budget) and fps")
    if fps is not None and fps <= 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    path, container = _open(path)
    with container:
        info = _info(path, container)
        end = info.duration_s if end_s is None else min(end_s, info.duration_s)
        if not 0 <= start_s < end:
            raise VideoError(
                f"video file {path!r}: range [{start_s}, {end_s}) s is empty or outside "
                f"the video (duration {info.duration_s:.3f} s)"
            )
        if max_frames is not None:
            targets = uniform_times(start_s, end, max_frames)
        elif fps is not None:
            targets = np.arange(start_s, end - _EPS_S, 1.0 / fps)
        else:
            targets = None
        frames, times = _decode(path, container, targets, start_s, end)
    if not frames:
        raise VideoError(f"video file {path!r}: no frame decoded in [{start_s}, {end}) s")
    return Clip(np.stack(frames), np.asarray(times, np.float64), info)


def _decode(
    path: str,
    container: av.container.InputContainer,
    targets: np.ndarray | None,
    start_s: float,
    end_s: float,
) -> tuple[list[np.ndarray], list[float]]:
    """One sequential pass; keeps, for each target time, the frame on screen at it."""
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    frames: list[np.ndarray] = []
    times: list[float] = []
    k = 0  # next target
    prev = None  # (time, frame) of the last decoded frame
    try:
        for frame in container.decode(stream):
            t = float(frame.time) if frame.time is not None else len(times) / stream.average_rate
            if targets is None:
                if start_s - _EPS_S <= t < end_s:
                    frames.append(frame.to_ndarray(format="rgb24"))
                    times.append(t)
                elif t >= end_s:
                    break
                continue
            while k < len(targets) and t > targets[k] + _EPS_S:
                shown = prev if prev is not None else (t, frame)  # before the first frame
                if not times or times[-1] != shown[0]:
                    times.append(shown[0])
                    frames.append(shown[1].to_ndarray(format="rgb24"))
                k += 1
            if k == len(targets):
                break
            prev = (t, frame)
    except av.error.FFmpegError as e:
        raise VideoError(f"video file {path!r} is corrupt: decoding failed ({e})") from None
    if targets is not None and k < len(targets) and prev is not None:
        if not times or times[-1] != prev[0]:  # the last frame stays on screen to the end
            times.append(prev[0])
            frames.append(prev[1].to_ndarray(format="rgb24"))
    return frames, times


def write_video(
    path: str | os.PathLike, frames: np.ndarray, fps: float = 8.0, pad_value: int = 255
) -> str:
    """uint8 frames [F, H, W, 3] -> H.264 video (yuv420p) in the container of the suffix
    (.mp4, .mkv, ...), with the `imageio-ffmpeg` ffmpeg binary. Frames are padded with
    `pad_value` to multiples of 16 (the codec's macro-block); written under a temporary name
    and renamed, so a killed writer never leaves a half video under the final name."""
    import imageio_ffmpeg

    path = os.fspath(path)
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or len(frames) == 0:
        raise ValueError(
            f"write_video({path!r}): frames must be [F>0, H, W, 3], got {frames.shape}"
        )
    if frames.dtype != np.uint8:
        raise ValueError(f"write_video({path!r}): frames must be uint8, got {frames.dtype}")
    _, h, w, _ = frames.shape
    pad_h, pad_w = -h % 16, -w % 16
    pad = ((0, 0), (0, pad_h), (0, pad_w), (0, 0))
    frames = np.pad(frames, pad, constant_values=pad_value)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    stem, ext = os.path.splitext(path)
    tmp = f"{path}.tmp{ext or '.mp4'}"
    writer = imageio_ffmpeg.write_frames(
        tmp,
        (w + pad_w, h + pad_h),
        fps=fps,
        codec="libx264",
        quality=8,
        macro_block_size=1,
        ffmpeg_log_level="error",
    )
    with warnings.catch_warnings():  # JAX warns on any fork; this one execs ffmpeg at once
        warnings.filterwarnings("ignore", "os.fork", RuntimeWarning)
        writer.send(None)  # starts the ffmpeg process
    for f in frames:
        writer.send(np.ascontiguousarray(f))
    writer.close()
    os.replace(tmp, path)
    return path


# ------------------------------------------------------------------------------ subtitles
@dataclasses.dataclass(frozen=True)
class Subtitle:
    index: int
    start_s: float
    end_s: float
    text: str


def read_srt(path: str | os.PathLike) -> list[Subtitle]:
    """The subtitles of an SRT file in time order; `SubtitleError` names the file and the
    first bad block."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"subtitle file {path!r} does not exist")
    try:
        with open(path, encoding="utf-8-sig") as f:
            subs = list(srt.parse(f.read()))
    except (srt.SRTParseError, UnicodeDecodeError, ValueError) as e:
        raise SubtitleError(f"subtitle file {path!r} is not valid SRT: {e}") from None
    return [
        Subtitle(s.index, s.start.total_seconds(), s.end.total_seconds(), s.content.strip())
        for s in sorted(subs, key=lambda s: (s.start, s.index))
    ]


def write_srt(path: str | os.PathLike, subtitles: Sequence[Subtitle]) -> str:
    """Writes `subtitles` as SRT (indices renumbered from 1 in the given order)."""
    td = lambda s: datetime.timedelta(seconds=s)
    blocks = [
        srt.Subtitle(i + 1, td(s.start_s), td(s.end_s), s.text) for i, s in enumerate(subtitles)
    ]
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(srt.compose(blocks, reindex=False))
    return path


def _clock(seconds: float) -> str:
    m, s = divmod(seconds, 60.0)
    h, m = divmod(int(m), 60)
    return f"{h:02d}:{m:02d}:{s:04.1f}"


def subtitles_text(
    subtitles: Sequence[Subtitle],
    *,
    start_s: float | None = None,
    end_s: float | None = None,
    timestamps: bool = False,
    sep: str = "\n",
) -> str:
    """The subtitles' text joined with `sep` (index and timing lines dropped), keeping those
    that overlap [start_s, end_s); `timestamps=True` prefixes each with `[hh:mm:ss.s-...]`."""
    lines = []
    for s in subtitles:
        if (start_s is not None and s.end_s <= start_s) or (
            end_s is not None and s.start_s >= end_s
        ):
            continue
        text = " ".join(s.text.split())  # a block's own line breaks become spaces
        lines.append(f"[{_clock(s.start_s)}-{_clock(s.end_s)}] {text}" if timestamps else text)
    return sep.join(lines)
