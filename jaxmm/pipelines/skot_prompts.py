"""Video-SKoT's prompts and the parsers of their answers (arXiv 2506.03525).

One place for every text the model sees, so `VERSION` (a hash of the prompts, written into
every run manifest) changes whenever a prompt does. Parsers never raise: a reply that cannot
be read gives None (or the fallback named in the docstring) and the caller counts it.

Frames: a record with a `video` path asked through a backend that takes images
(`Backend.accepts_images`) also shows the model `frame_budget` (default FRAME_BUDGET) frames
sampled uniformly over the video, as image parts (`mf2.frame_parts`: each frame after its
time) before the prompt text (`video_parts`, `with_frames`); text backends, and records
without a video, get the text prompt unchanged.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import Mapping, Sequence
from typing import Any

from jaxmm.data.movie_qa import LETTERS, format_options
from jaxmm.data.video import VideoError, read_video
from jaxmm.generate.backends import Backend
from jaxmm.generate.params import GenerationParams
from jaxmm.pipelines.mf2 import frame_parts

PROMPTS = {
    "describe": (
        "{context}\n\nQuestion: {question}\nOptions:\n{options}\n\n"
        "Do not answer the question. In one sentence, describe the skill needed to answer it."
    ),
    "rewrite": (
        "Skill description: {description}\n\n"
        "Rewrite this as a short generic skill phrase of 3 to 8 words that names no person, "
        "object or place.\nSkill:"
    ),
    "sub_question": (
        "{context}\n\nQuestion: {question}\n\n"
        'Write one short sub-question about the movie that uses the skill "{skill}" and '
        "helps answer the question.\nSub-question:"
    ),
    "sub_answer": "{context}\n\nAnswer briefly in one sentence: {sub_question}",
    "fuse": (
        "{context}\n\nQuestion: {question}\nOptions:\n{options}\n\n"
        "Helpful steps:\n{steps}\n\n"
        "Using these steps, write a short step-by-step rationale. End with a final line "
        "'Answer: X' where X is the letter of the correct option."
    ),
    "judge": (
        "Question: {question}\nOptions:\n{options}\n\nRationale:\n{rationale}\n\n"
        "Is this rationale relevant to the question and does it support its answer? "
        "Reply yes or no."
    ),
    "answer": (
        "{context}\n\nQuestion: {question}\nOptions:\n{options}\n\n"
        "Think step by step, then end with a final line 'Answer: X' where X is the letter "
        "of the correct option."
    ),
    "frames": "These are {n} frames of the movie, sampled uniformly, each after its time:",
}
PROMPT_VERSION = "1"
VERSION = (
    f"{PROMPT_VERSION}+"
    + hashlib.sha256("\x00".join(PROMPTS[k] for k in sorted(PROMPTS)).encode()).hexdigest()[:8]
)
# Short steps need few tokens: their max_tokens is capped here (fuse / answer use the run's).
TOKEN_CAPS = {"describe": 48, "rewrite": 16, "sub_question": 40, "sub_answer": 40, "judge": 4}
MAX_PHRASE_WORDS = 8
FRAME_BUDGET = 8  # frames shown per question when the record has no `frame_budget`
_LABEL = re.compile(r"^\s*(?:(?:skill(?:\s+phrase)?|phrase|sub-?question|answer)\s*:\s*)+", re.I)
# Option letters are capitals only: with IGNORECASE "the answer is a ring" would read as A.
ANSWER_RE = re.compile(r"(?i:answer)\s*(?:(?i:is))?\s*[:\-]?\s*\(?\**([A-D])\b")
_LONE_LETTER = re.compile(r"^\s*\(?\**([A-D])[).:\s*]")


def render(kind: str, **fields: str) -> list[dict[str, str]]:
    """A one-turn chat with prompt `kind` filled in (options given as a list are laid out)."""
    if "options" in fields and not isinstance(fields["options"], str):
        fields = fields | {"options": format_options(list(fields["options"]))}
    return [{"role": "user", "content": PROMPTS[kind].format(**fields)}]


def video_parts(
    record: Mapping[str, Any], backend: Backend
) -> tuple[list[dict[str, Any]], str | None]:
    """(content parts, error): the `frames` header then the record's uniformly sampled frames
    (`frame_budget`, default FRAME_BUDGET) when `backend` takes images and the record names a
    `video`; ([], None) otherwise. An unreadable video gives ([], the VideoError's message):
    the question is asked from its text and the caller reports the error."""
    if not getattr(backend, "accepts_images", False) or not record.get("video"):
        return [], None
    budget = int(record.get("frame_budget", FRAME_BUDGET))
    try:
        clip = read_video(record["video"], max_frames=budget)
    except (VideoError, FileNotFoundError) as e:
        return [], str(e)
    head = {"type": "text", "text": PROMPTS["frames"].format(n=len(clip.frames))}
    return [head, *frame_parts(clip.frames, clip.timestamps_s)], None


def with_frames(
    messages: list[dict[str, Any]], parts: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """`messages` (from `render`) with `parts` put before the last message's text; unchanged
    (string content, the text path) when `parts` is empty."""
    if not parts:
        return messages
    *head, last = messages
    text = {"type": "text", "text": "\n" + last["content"]}
    return [*head, {"role": last["role"], "content": [*parts, text]}]


def params_for(kind: str, params: GenerationParams) -> GenerationParams:
    """The run's params with max_tokens capped at TOKEN_CAPS[kind] (if the kind has a cap)."""
    cap = TOKEN_CAPS.get(kind)
    if cap is None:
        return params
    return dataclasses.replace(params, max_tokens=min(params.max_tokens or cap, cap))


def first_line(text: str) -> str:
    """The first non-empty line with its `Skill:` / `Sub-question:` labels (repeated ones too:
    small models loop on them) and quotes removed."""
    for line in text.splitlines():
        line = _LABEL.sub("", line.strip().lstrip("-*•").strip()).strip().strip("\"'`*").strip()
        if line:
            return line
    return ""


def parse_skill_phrase(text: str) -> str | None:
    """The generic phrase: first line, label and trailing period removed, at most
    MAX_PHRASE_WORDS words (longer replies are cut, not rejected); None when empty."""
    line = first_line(text).rstrip(".").strip()
    words = line.split()
    return " ".join(words[:MAX_PHRASE_WORDS]) if words else None


def parse_sub_question(text: str, skill: str) -> str:
    """The sub-question: the first line, else (an empty reply) a templated question about the
    skill so the chain still has one step per skill."""
    line = first_line(text)
    return line if line else f"{skill}: what in the movie matters for the question?"


def read_answer(text: str, options: Sequence[str] | None = None) -> tuple[str | None, str]:
    """(option letter, rule) of a reply. Rules in order: `answer_line` (the *last*
    `Answer: X`), `letter` (a reply that is just `B`, `(B)`, `B.`), `option_text` (with
    `options`: the option whose text occurs last in the reply, whole words, case ignored;
    the longest one where two end at the same place; small models name the answer instead of
    its letter), else (None, "none")."""
    found = ANSWER_RE.findall(text)
    if found:
        return found[-1].upper(), "answer_line"
    lone = _LONE_LETTER.match(text.strip() + " ")
    if lone:
        return lone.group(1).upper(), "letter"
    best: tuple[int, int, int] | None = None  # (end, length, option index)
    for i, option in enumerate(options or ()):
        pattern = r"(?<!\w)" + re.escape(option.strip().lower()) + r"(?!\w)"
        for m in re.finditer(pattern, text.lower()):
            cand = (m.end(), len(option), i)
            best = cand if best is None or cand[:2] > best[:2] else best
    if best is not None:
        return LETTERS[best[2]], "option_text"
    return None, "none"


def parse_final_answer(text: str, options: Sequence[str] | None = None) -> str | None:
    """The letter of `read_answer` (None when no rule applies)."""
    return read_answer(text, options)[0]


def parse_judge(text: str) -> bool | None:
    """True for a reply starting with yes, False for no, None otherwise."""
    word = re.match(r"\W*(\w+)", text.lower())
    if word is None:
        return None
    return {"yes": True, "no": False}.get(word.group(1))


def answer_line(letter: str) -> str:
    """The final line every rationale ends with (added when the model left it out)."""
    if letter not in LETTERS:
        raise ValueError(f"answer letter must be one of {LETTERS}, got {letter!r}")
    return f"Answer: {letter}"
