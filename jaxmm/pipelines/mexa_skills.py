"""MEXA's skill menu, task types, and the router: prompt and a forgiving parser of its output.

The menu is the paper's 17 skills in 7 groups, with the ids of its release (`A1` ... `G2`).
The router (a multimodal model) sees the task type, question, options and a few frames and
answers with skill ids. Small and large models answer in many shapes ("A1, B1", "[A1][B1]",
"a1 and b-1", "Skills: subtitles, video caption"), so `parse_skills` reads ids first and skill
names only when no id is present; ids outside the menu are returned as `unknown` (reported
and counted by the pipeline, never an exception).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence


@dataclasses.dataclass(frozen=True)
class Skill:
    id: str
    group: str
    name: str
    field: str  # the release's name for this expert's text (keyframe JSON field, file name)
    header: str  # the aggregator's heading for this expert's text
    aliases: tuple[str, ...] = ()


GROUPS = {
    "A": "general visual",
    "B": "audio",
    "C": "3D",
    "D": "medical",
    "E": "OCR",
    "F": "structured",
    "G": "math",
}
_S = Skill
SKILLS: dict[str, Skill] = {
    s.id: s
    for s in (
        _S(
            "A1",
            "A",
            "video description",
            "Video Caption",
            "The video's captions, each describing one clip in order",
            ("video caption",),
        ),
        _S(
            "A2",
            "A",
            "detailed image description",
            "Detailed_Natural",
            "Detailed captions of the video's keyframes",
            ("detailed caption",),
        ),
        _S(
            "A3",
            "A",
            "short image description",
            "Short_Natural",
            "Short captions of the video's keyframes",
            ("short caption",),
        ),
        _S(
            "B1",
            "B",
            "subtitles",
            "Subtitle",
            "The video's subtitles",
            ("subtitle", "transcript", "speech"),
        ),
        _S("B2", "B", "audio description", "Audio", "Description of the audio", ("audio caption",)),
        _S(
            "B3",
            "B",
            "music description",
            "Music",
            "Description of the music",
            ("music caption", "music"),
        ),
        _S(
            "C1",
            "C",
            "3D scene description",
            "3D Scene",
            "Description of the 3D scene",
            ("3d scene", "scene description"),
        ),
        _S(
            "C2",
            "C",
            "3D situated description",
            "3D Situated Reasoning",
            "Description of the situation in the 3D scene",
            ("situated",),
        ),
        _S("D1", "D", "CT description", "CT Caption", "Description of the CT scan", ("ct",)),
        _S(
            "D2",
            "D",
            "medical image description",
            "Medical Image Caption",
            "Description of the medical image",
            ("medical",),
        ),
        _S(
            "E1",
            "E",
            "general OCR",
            "general_ocr",
            "Text read from the keyframes (OCR)",
            ("ocr", "text recognition"),
        ),
        _S(
            "E2",
            "E",
            "poster/slides OCR",
            "poster_caption",
            "Poster and slide text in the keyframes",
            ("poster", "slides", "slide"),
        ),
        _S(
            "E3",
            "E",
            "PDF text OCR",
            "pdf_ocr",
            "Document (PDF) text in the keyframes",
            ("pdf", "document"),
        ),
        _S("F1", "F", "chart description", "chart_caption", "Descriptions of charts", ("chart",)),
        _S("F2", "F", "table description", "table_caption", "Descriptions of tables", ("table",)),
        _S(
            "G1",
            "G",
            "equation description",
            "equation_caption",
            "Equations, transcribed",
            ("equation",),
        ),
        _S(
            "G2",
            "G",
            "geometry description",
            "mathgeo_caption",
            "Descriptions of geometry figures",
            ("geometry", "math figure"),
        ),
    )  # fmt: skip
}

# The task-type line the router and aggregator see, per benchmark of the paper (+ ours).
TASK_TYPES = {
    "video_mmmu": "Video-MMMU: expert-level multiple-choice questions about lecture videos "
    "(slides, equations, charts, spoken explanation)",
    "mmau": "MMAU: multiple-choice audio question answering (speech, environmental sounds, music)",
    "sqa3d": "SQA3D: situated question answering in a 3D indoor scene",
    "m3d": "M3D: multiple-choice question answering about 3D medical (CT) scans",
    "movie_qa": "Movie QA: multiple-choice questions about a short movie (who does what, "
    "what is said, what is shown)",
}
# used when the router's answer has no skill at all (counted as `router_fallback`)
DEFAULT_SKILLS = {
    "video_mmmu": ("A1", "B1"),
    "mmau": ("B2", "B3"),
    "sqa3d": ("C1", "C2"),
    "m3d": ("D1",),
    "movie_qa": ("A1", "B1"),
}

ROUTER_PROMPT = (
    "You select the experts that turn a multimodal input into text for a reasoning model.\n"
    "Task type: {task}\n\nQuestion: {question}\nOptions:\n{options}\n\n"
    "{frames}Skill menu (id: skill):\n{menu}\n\n"
    "Which skills are needed to answer the question? Answer only with their ids, separated by "
    "commas, e.g. A1, B1."
)


def task_line(task_type: str) -> str:
    """The benchmark's description, or the task type itself for one we do not know."""
    return TASK_TYPES.get(task_type, task_type)


def menu_text() -> str:
    lines = []
    for g, group in GROUPS.items():
        items = "; ".join(f"{s.id}: {s.name}" for s in SKILLS.values() if s.group == g)
        lines.append(f"- {group}: {items}")
    return "\n".join(lines)


def options_text(options: Sequence[str]) -> str:
    return "\n".join(f"{chr(65 + i)}: {o}" for i, o in enumerate(options))


def router_prompt(task_type: str, question: str, options: Sequence[str], n_frames: int) -> str:
    """The router's text; `n_frames` frames follow it as image parts when the backend takes
    images (0: none are shown)."""
    frames = f"{n_frames} frames of the input follow.\n\n" if n_frames else ""
    return ROUTER_PROMPT.format(
        task=task_line(task_type),
        question=question,
        options=options_text(options),
        frames=frames,
        menu=menu_text(),
    )


_ID = re.compile(r"(?<![A-Za-z0-9])([A-Za-z])[-_.]?(\d{1,2})(?![A-Za-z0-9])")


def parse_skills(text: str) -> tuple[list[str], list[str]]:
    """(selected ids in order of first mention, unknown ids) from the router's answer.

    Ids: a letter and a number (`A1`, `a1`, `B-1`, `[C2]`); one not on the menu (`H3`, `A9`)
    goes to `unknown`. Only when the answer has no id at all are skill names and aliases
    matched (whole words, case-insensitive), in order of position.
    """
    selected: list[str] = []
    unknown: list[str] = []
    for letter, num in _ID.findall(text):
        sid = f"{letter.upper()}{int(num)}"
        bucket = selected if sid in SKILLS else unknown
        if sid not in bucket:
            bucket.append(sid)
    if selected or unknown:
        return selected, unknown
    low = text.lower()
    hits: list[tuple[int, str]] = []
    for s in SKILLS.values():
        for name in (s.name.lower(), *s.aliases):
            m = re.search(rf"(?<![a-z0-9]){re.escape(name)}s?(?![a-z0-9])", low)
            if m:
                hits.append((m.start(), s.id))
    for _, sid in sorted(hits):
        if sid not in selected:
            selected.append(sid)
    return selected, unknown
