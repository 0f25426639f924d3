"""Precomputed expert outputs in MEXA's file layout (arXiv 2506.17113, its public code).

MEXA runs its experts offline and the aggregator reads their text from files. This module is
the one reader and writer of that layout (our reading of the release's `dataset.py`):

    <root>/captions/<video_id>.txt          video captions (skill A1): one caption per line,
                                            each describing `clip_length` seconds in order
    <root>/skill_captions/<video_id>/<frame>.json
                                            one file per keyframe (frames in file-name order):
                                            {"<video_id>/<frame>": {"Detailed_Natural": ...,
                                             "Short_Natural": ..., "general_ocr": ..., ...}}
                                            plus our optional "time_s" (the frame's time)
    <root>/question_captions/<field>.json   per-question outputs (audio, 3D, medical experts):
                                            {"<qid>": "text" | {"response": ...}} or
                                            [{"id": qid, "prediction": ...}, ...]

Every problem (a missing file or folder, bad JSON, a frame file without its key, a missing
field, a question not in the file) is an `ExpertFileError` naming the file and what is wrong.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping, Sequence
from typing import Any


class ExpertFileError(ValueError):
    """A precomputed expert file is missing or malformed; the message names file and field."""


@dataclasses.dataclass(frozen=True)
class FrameCaption:
    frame: str  # file stem, e.g. "frame_0003"
    time_s: float | None
    text: str


def clip_captions_path(root: str | os.PathLike, video_id: str) -> str:
    return os.path.join(os.fspath(root), "captions", f"{video_id}.txt")


def frame_captions_dir(root: str | os.PathLike, video_id: str) -> str:
    return os.path.join(os.fspath(root), "skill_captions", video_id)


def question_captions_path(root: str | os.PathLike, field: str) -> str:
    return os.path.join(os.fspath(root), "question_captions", f"{field}.json")


def _load_json(path: str) -> Any:
    if not os.path.isfile(path):
        raise ExpertFileError(f"expert file {path!r} does not exist")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ExpertFileError(f"expert file {path!r} is not valid JSON: {e}") from None


def load_clip_captions(root: str | os.PathLike, video_id: str) -> list[str]:
    """The video's clip captions in order (blank lines and surrounding quotes dropped)."""
    path = clip_captions_path(root, video_id)
    if not os.path.isfile(path):
        raise ExpertFileError(f"video caption file {path!r} does not exist")
    with open(path, encoding="utf-8") as f:
        lines = [ln.strip().strip("'\"") for ln in f if ln.strip()]
    if not lines:
        raise ExpertFileError(f"video caption file {path!r} is empty")
    return lines


def load_frame_captions(
    root: str | os.PathLike, video_id: str, field: str, stride: int = 1
) -> list[FrameCaption]:
    """Field `field` of every `stride`-th keyframe file of the video, in file-name order."""
    folder = frame_captions_dir(root, video_id)
    if not os.path.isdir(folder):
        raise ExpertFileError(f"keyframe caption folder {folder!r} does not exist")
    files = sorted(f for f in os.listdir(folder) if f.endswith(".json"))[:: max(stride, 1)]
    if not files:
        raise ExpertFileError(f"keyframe caption folder {folder!r} has no .json files")
    out = []
    for name in files:
        path = os.path.join(folder, name)
        data = _load_json(path)
        key = f"{video_id}/{name[: -len('.json')]}"
        if not isinstance(data, dict) or not isinstance(data.get(key), dict):
            raise ExpertFileError(f"keyframe caption file {path!r} has no object under {key!r}")
        entry = data[key]
        if not isinstance(entry.get(field), str):
            raise ExpertFileError(
                f"keyframe caption file {path!r}: {key!r} has no text field {field!r} "
                f"(has {sorted(entry)})"
            )
        t = entry.get("time_s")
        out.append(
            FrameCaption(key.rsplit("/", 1)[1], None if t is None else float(t), entry[field])
        )
    return out


def load_question_caption(root: str | os.PathLike, field: str, qid: str) -> str:
    """One question's text from a per-question expert file (either layout of the release)."""
    path = question_captions_path(root, field)
    data = _load_json(path)
    if isinstance(data, list):
        data = {str(d.get("id")): d for d in data if isinstance(d, dict)}
    if not isinstance(data, dict):
        raise ExpertFileError(f"expert file {path!r} must hold an object or a list of objects")
    if qid not in data:
        raise ExpertFileError(f"expert file {path!r} has no entry for question {qid!r}")
    entry = data[qid]
    if isinstance(entry, dict):
        entry = entry.get("response", entry.get("prediction"))
    if not isinstance(entry, str):
        raise ExpertFileError(
            f"expert file {path!r}: question {qid!r} has no text ('response' or 'prediction')"
        )
    return entry


def write_clip_captions(root: str | os.PathLike, video_id: str, captions: Sequence[str]) -> str:
    path = clip_captions_path(root, video_id)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write("".join(" ".join(c.split()) + "\n" for c in captions))
    return path


def write_frame_captions(
    root: str | os.PathLike,
    video_id: str,
    frames: Sequence[tuple[float, Mapping[str, str]]],
) -> list[str]:
    """One keyframe file per (time_s, {field: text}), named `frame_0000.json`, ... in order."""
    folder = frame_captions_dir(root, video_id)
    os.makedirs(folder, exist_ok=True)
    paths = []
    for k, (t, fields) in enumerate(frames):
        stem = f"frame_{k:04d}"
        path = os.path.join(folder, stem + ".json")
        with open(path, "w", encoding="utf-8") as f:
            json.dump({f"{video_id}/{stem}": {**fields, "time_s": float(t)}}, f, indent=1)
        paths.append(path)
    return paths
