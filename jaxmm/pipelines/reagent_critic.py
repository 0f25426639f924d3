"""ReAgent-V's critic and reflection outputs (arXiv 2506.01300): parse the critic's
sub-questions and JSON report, parse each reflection's {answer, confidence}, and merge the
three reflections. Pure functions on model text, so every rule is tested without a model.

Report (the layout of the authors' released example):

    {"structured_feedback": "...",
     "scores": {"visual_alignment": {"value": 4.0, "reason": "..."}, ... five dimensions},
     "total_score": 16.5, "scalar_reward": 0.8}

A dimension's value may also be a bare number. Bad text raises a named `CriticError`
subclass whose `reason` is a short counter key (the pipeline stores and counts it).

Merge (the spec's thresholds; the order is our reading, the paper gives the numbers only):
a reflection is *accepted* when its confidence reaches its perspective's threshold
(conservative 0.6, neutral 0.7, aggressive 0.8: the bolder the revision, the more confidence
it needs); among accepted ones the most conservative wins; when none is accepted the highest
confidence wins (ties: the more conservative). Unparsable reflections take no part.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

DIMENSIONS = (
    "visual_alignment",
    "temporal_accuracy",
    "option_disambiguation",
    "reasoning_specificity",
    "linguistic_precision",
)
PERSPECTIVES = ("conservative", "neutral", "aggressive")  # most to least conservative
THRESHOLDS = {"conservative": 0.6, "neutral": 0.7, "aggressive": 0.8}
MAX_SUB_QUESTIONS = 3


class CriticError(ValueError):
    """Critic or reflection text that cannot be used; `reason` is a counter key."""

    reason = "critic_error"


class NoJSONError(CriticError):
    reason = "no_json"


class BadJSONError(CriticError):
    reason = "bad_json"


class MissingFieldError(CriticError):
    reason = "missing_field"


class OutOfRangeError(CriticError):
    reason = "out_of_range"


class NoQuestionsError(CriticError):
    reason = "no_questions"


@dataclasses.dataclass(frozen=True)
class Report:
    scores: dict[str, float]  # each of DIMENSIONS, in [0, 5]
    reward: float  # scalar_reward in [0, 1]
    feedback: str

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _json_object(text: str) -> dict[str, Any]:
    """The first `{...}` object in text (code fences and prose around it are ignored)."""
    start = text.find("{")
    if start < 0:
        raise NoJSONError(f"no JSON object in {text[:120]!r}")
    try:
        value, _ = json.JSONDecoder().raw_decode(text[start:])
    except json.JSONDecodeError as e:
        raise BadJSONError(f"unparsable JSON ({e.msg} at char {e.pos}) in {text[:120]!r}") from None
    if not isinstance(value, dict):
        raise BadJSONError(f"JSON is not an object in {text[:120]!r}")
    return value


def _number(value: Any, field: str, lo: float, hi: float) -> float:
    if isinstance(value, Mapping):
        value = value.get("value", value.get("score"))
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise MissingFieldError(f"field {field!r} is not a number: {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        raise MissingFieldError(f"field {field!r} is missing or not a number: {value!r}")
    if not lo <= value <= hi:
        raise OutOfRangeError(f"field {field!r} = {value} is outside [{lo}, {hi}]")
    return float(value)


def parse_report(text: str) -> Report:
    """The critic's JSON report: five dimension scores in [0, 5] and a reward in [0, 1]."""
    obj = _json_object(text)
    scores_obj = obj.get("scores")
    if not isinstance(scores_obj, Mapping):
        raise MissingFieldError("field 'scores' is missing or not an object")
    scores = {d: _number(scores_obj.get(d), f"scores.{d}", 0.0, 5.0) for d in DIMENSIONS}
    reward = _number(obj.get("scalar_reward"), "scalar_reward", 0.0, 1.0)
    feedback = obj.get("structured_feedback", "")
    return Report(scores, reward, feedback if isinstance(feedback, str) else json.dumps(feedback))


def parse_sub_questions(text: str) -> tuple[list[str], bool]:
    """(1-3 questions, whether more were written and cut). One per line; numbering and
    bullets are stripped; only lines ending in '?' count."""
    questions = []
    for line in text.splitlines():
        line = re.sub(r"^\s*(?:[-*•]|\(?\d+[.):]|Q\d+[.:)]?)\s*", "", line).strip()
        if line.endswith("?") and len(line) > 1:
            questions.append(line)
    if not questions:
        raise NoQuestionsError(f"no question (a line ending in '?') in {text[:120]!r}")
    return questions[:MAX_SUB_QUESTIONS], len(questions) > MAX_SUB_QUESTIONS


@dataclasses.dataclass(frozen=True)
class Reflection:
    perspective: str
    answer: str
    confidence: float  # in [0, 1]


def parse_reflection(text: str, perspective: str) -> Reflection:
    """{"answer": ..., "confidence": c in [0, 1]} (a percentage 1 < c <= 100 is not
    rescaled: it is out of range, so the prompt's contract is checked, not guessed)."""
    obj = _json_object(text)
    answer = obj.get("answer")
    if isinstance(answer, int | float) and not isinstance(answer, bool):
        answer = str(answer)
    if not isinstance(answer, str) or not answer.strip():
        raise MissingFieldError("field 'answer' is missing or empty")
    confidence = _number(obj.get("confidence"), "confidence", 0.0, 1.0)
    return Reflection(perspective, answer.strip(), confidence)


@dataclasses.dataclass(frozen=True)
class Merge:
    answer: str | None  # None when no reflection parsed
    perspective: str | None
    rule: str  # "threshold" | "highest_confidence" | "none_parsed"


def merge_reflections(reflections: Sequence[Reflection]) -> Merge:
    """The meta step: see the module docstring for the rule."""
    by_name = {r.perspective: r for r in reflections}
    unknown = set(by_name) - set(PERSPECTIVES)
    if unknown:
        raise ValueError(f"unknown perspectives {sorted(unknown)}; known: {list(PERSPECTIVES)}")
    ordered = [by_name[p] for p in PERSPECTIVES if p in by_name]
    for r in ordered:
        if r.confidence >= THRESHOLDS[r.perspective]:
            return Merge(r.answer, r.perspective, "threshold")
    if not ordered:
        return Merge(None, None, "none_parsed")
    best = max(ordered, key=lambda r: r.confidence)  # max keeps the first among ties
    return Merge(best.answer, best.perspective, "highest_confidence")
