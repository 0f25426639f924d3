"""MEXA's expert registry: who turns each selected skill into text for the aggregator.

An expert is a function of an `ExpertInput` (the record, the backend, the frames) returning
text. Kinds:

  * `subtitles`: the record's SRT file (`jaxmm.data.video.read_srt`), timestamps kept;
  * `vlm`: the backend captions frames (needs `Backend.accepts_images`): one call over all
    frames for video captions (A1), one call per frame for the other visual skills;
  * `ocr`: Tesseract through `pytesseract` when it is installed (imported lazily), else the
    backend as a VLM reading the text in each frame;
  * `precomputed`: MEXA's expert files under the record's `expert_dir`
    (`jaxmm.data.expert_files`).

`DEFAULT_EXPERTS` maps each skill to a kind; a record's `experts` field overrides it per skill
(`{"A2": "vlm"}`). An expert that cannot run raises `ExpertUnavailable` (a named reason: no
images, no subtitle file, a missing expert file); the pipeline records it per skill and counts
it, and the aggregator answers from the experts that did run.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import numpy as np

from jaxmm.data import expert_files
from jaxmm.data.video import SubtitleError, VideoError, read_srt, read_video, subtitles_text
from jaxmm.generate.backends import Backend
from jaxmm.generate.params import GenerationParams
from jaxmm.pipelines.mexa_skills import SKILLS
from jaxmm.pipelines.mf2 import frame_parts

Record = dict[str, Any]


class ExpertUnavailable(RuntimeError):
    """A selected skill's expert cannot produce text for this record; says why."""


@dataclasses.dataclass
class ExpertInput:
    record: Record
    backend: Backend
    params: GenerationParams

    @functools.cached_property
    def clip(self):
        """The record's frames (`frame_budget` uniformly sampled, default 8), decoded once."""
        if not self.record.get("video"):
            raise ExpertUnavailable("the record has no 'video' file")
        try:
            return read_video(
                self.record["video"], max_frames=int(self.record.get("frame_budget", 8))
            )
        except (FileNotFoundError, VideoError) as e:
            raise ExpertUnavailable(str(e)) from None


CAPTION_PROMPTS = {
    "A1": "Describe what happens in this video, in order, in a few sentences.",
    "A2": "Describe this image in detail: the objects, people, colours and layout.",
    "A3": "Describe this image in one short sentence.",
    "E1": "Read out all the text visible in this image. Answer with the text only.",
}
_VLM_DEFAULT = "Describe what this image shows that is relevant to its {name}."


def _need_images(x: ExpertInput) -> None:
    if not getattr(x.backend, "accepts_images", False):
        raise ExpertUnavailable(
            f"backend {x.backend.name!r} takes no images (Backend.accepts_images is False)"
        )


def vlm_expert(skill_id: str, x: ExpertInput) -> str:
    _need_images(x)
    clip = x.clip
    prompt = CAPTION_PROMPTS.get(skill_id, _VLM_DEFAULT.format(name=SKILLS[skill_id].name))
    if skill_id == "A1":
        parts = frame_parts(clip.frames, clip.timestamps_s)
        (text,) = x.backend.chat(
            [[{"role": "user", "content": [*parts, {"type": "text", "text": prompt}]}]], x.params
        )
        return text.strip()
    convs = [
        [
            {
                "role": "user",
                "content": [*frame_parts(f[None], t[None]), {"type": "text", "text": prompt}],
            }
        ]
        for f, t in zip(clip.frames, clip.timestamps_s, strict=True)
    ]
    texts = x.backend.chat(convs, x.params)
    return _per_frame(clip.timestamps_s, texts)


def _per_frame(times: np.ndarray, texts: list[str]) -> str:
    return "\n".join(f"[{float(t):.2f} s] {s.strip()}" for t, s in zip(times, texts, strict=True))


def _tesseract() -> Callable[[Any], str] | None:
    """`pytesseract.image_to_string` when pytesseract and its binary are there, else None."""
    try:
        import pytesseract  # optional: `pip install pytesseract` + the tesseract binary
    except ImportError:
        return None
    try:
        pytesseract.get_tesseract_version()
    except Exception:  # the binary is missing: pytesseract raises its own NotFound error
        return None
    return pytesseract.image_to_string


def ocr_expert(skill_id: str, x: ExpertInput) -> str:
    """Tesseract per frame when available, else the backend reading each frame."""
    read = _tesseract()
    if read is None:
        return vlm_expert("E1", x)  # every OCR skill: the VLM reads the text of each frame
    from PIL import Image

    clip = x.clip
    texts = [" ".join(read(Image.fromarray(np.asarray(f, np.uint8))).split()) for f in clip.frames]
    return _per_frame(clip.timestamps_s, texts)


def subtitles_expert(skill_id: str, x: ExpertInput) -> str:
    del skill_id
    path = x.record.get("subtitles")
    if not path:
        raise ExpertUnavailable("the record has no 'subtitles' file")
    try:
        text = subtitles_text(read_srt(path), timestamps=True)
    except (FileNotFoundError, SubtitleError) as e:
        raise ExpertUnavailable(str(e)) from None
    if not text:
        raise ExpertUnavailable(f"subtitle file {path!r} has no lines")
    return text


def precomputed_expert(skill_id: str, x: ExpertInput) -> str:
    """MEXA's files: clip captions (A1), keyframe fields, else the per-question file."""
    root, rec = x.record.get("expert_dir"), x.record
    if not root:
        raise ExpertUnavailable("the record has no 'expert_dir' for precomputed experts")
    skill = SKILLS[skill_id]
    vid = str(rec.get("video_id", ""))
    try:
        if skill_id == "A1":
            caps = expert_files.load_clip_captions(root, vid)
            clip_s = float(rec.get("clip_length_s", 4.0))
            return "\n".join(
                f"[{i * clip_s:.1f}-{(i + 1) * clip_s:.1f} s] {c}" for i, c in enumerate(caps)
            )
        if skill.group in "AEFG":
            frames = expert_files.load_frame_captions(root, vid, skill.field)
            return "\n".join(
                (f"[{f.time_s:.2f} s] " if f.time_s is not None else f"[{f.frame}] ") + f.text
                for f in frames
            )
        return expert_files.load_question_caption(root, skill.field, str(rec["id"]))
    except expert_files.ExpertFileError as e:
        raise ExpertUnavailable(str(e)) from None


KINDS: dict[str, Callable[[str, ExpertInput], str]] = {
    "subtitles": subtitles_expert,
    "vlm": vlm_expert,
    "ocr": ocr_expert,
    "precomputed": precomputed_expert,
}
DEFAULT_EXPERTS = {sid: "precomputed" for sid in SKILLS} | {
    "A1": "vlm",
    "A2": "vlm",
    "A3": "vlm",
    "B1": "subtitles",
    "E1": "ocr",
    "E2": "ocr",
    "E3": "ocr",
}


def expert_kind(record: Record, skill_id: str) -> str:
    return {**DEFAULT_EXPERTS, **record.get("experts", {})}[skill_id]


def run_expert(skill_id: str, x: ExpertInput) -> str:
    """The text of one selected skill's expert (ExpertUnavailable when it cannot run)."""
    return KINDS[expert_kind(x.record, skill_id)](skill_id, x)
