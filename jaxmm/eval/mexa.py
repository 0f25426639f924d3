"""Multiple-choice scoring for MEXA (arXiv 2506.17113): the option-letter parser and accuracy.

The aggregator is asked for the letter of the option; models answer "B", "(B)", "B. the key",
"The answer is B", or the option's text. `parse_choice` returns (letter or None, rule); an
unparsable answer is None and counts as wrong. Accuracy is reported overall, per task type
(the paper's benchmarks: Video-MMMU, MMAU, SQA3D, M3D) and per question category, next to
chance (the mean of 1 / number of options).
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence
from typing import Any

from jaxmm.eval.answers import normalize

RULES = ("answer_is", "leading", "lone_letter", "option_text")


def parse_choice(text: str, options: Sequence[str]) -> tuple[str | None, str | None]:
    """(letter, rule) from an answer to a question with `options`; (None, None) if unreadable.

    Rules in order: `answer_is` ("answer is B", "Answer: (b)"); `leading` (the answer starts
    with a letter: "B", "(B)", "B." / "B:" / "B)"); `lone_letter` (the first standalone
    capital among the valid letters, not the article "A" before a word); `option_text` (the
    answer contains exactly one option's normalised text).
    """
    valid = string.ascii_uppercase[: len(options)]
    # a lower-case letter only counts when punctuation or the end follows it ("answer: b.")
    end = r"(?=[\)\]\.:,;]|\s*$|\s+[-–(])"
    letter = rf"(?:([{valid}])(?![A-Za-z0-9'])|([{valid.lower()}]){end})"
    for m in re.finditer(rf"answer(?:\s+is)?\s*[:\-]?\s*[\(\[]?{letter}", text, re.I):
        if not _article(text, m):
            return (m.group(1) or m.group(2)).upper(), "answer_is"
    m = re.match(rf"\s*[\(\[]?{letter}", text)
    if m and not _article(text, m):
        return (m.group(1) or m.group(2)).upper(), "leading"
    for m in re.finditer(rf"(?<![A-Za-z0-9'])([{valid}])(?![A-Za-z0-9'])", text):
        if not _article(text, m):
            return m.group(1), "lone_letter"
    norm = f" {normalize(text)} "
    hits = [i for i, o in enumerate(options) if normalize(o) and f" {normalize(o)} " in norm]
    if len(hits) == 1:
        return valid[hits[0]], "option_text"
    return None, None


def _article(text: str, m: re.Match) -> bool:
    """The match ends in "A" used as the article ("A red figure"), not as an option letter."""
    return (
        text[m.end() - 1] in "Aa" and re.match(r" [a-z]", text[m.end() : m.end() + 2]) is not None
    )


def chance(options_per_question: Sequence[int]) -> float:
    return sum(1.0 / n for n in options_per_question) / len(options_per_question)


def accuracy_metrics(rows: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Over rows {"prediction", "answer", "num_options", "task_type", "category"}:
    `accuracy`, `chance`, `unparsed_rate`, `questions`, and `task=<t>/accuracy`,
    `category=<c>/accuracy` (only rows with a gold `answer` are scored)."""
    scored = [r for r in rows if r.get("answer")]
    if not scored:
        return {"questions": 0.0}
    correct = lambda r: r["prediction"] is not None and r["prediction"] == r["answer"]
    out = {
        "questions": float(len(scored)),
        "accuracy": sum(map(correct, scored)) / len(scored),
        "chance": chance([r["num_options"] for r in scored]),
        "unparsed_rate": sum(r["prediction"] is None for r in scored) / len(scored),
    }
    for key in ("task_type", "category"):
        for value in sorted({str(r.get(key, "")) for r in scored}):
            sel = [r for r in scored if str(r.get(key, "")) == value]
            name = "task" if key == "task_type" else key
            out[f"{name}={value}/accuracy"] = sum(map(correct, sel)) / len(sel)
            out[f"{name}={value}/questions"] = float(len(sel))
    return out
