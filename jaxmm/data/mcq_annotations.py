"""Multiple-choice annotation files -> records of the `mexa` pipeline.

The paper's benchmarks ship their questions as JSON lists whose items name the same things
differently (MEXA's release reads Video-MMMU items with `options` and a letter `answer`, MMAU
items with `choices` and the answer's text). `records_from_annotations` accepts either:
options from `options` or `choices`, the gold answer as a letter, a 0-based index or the
option's text, the id from `id`, `uid`, `question_id` or `q_uid`. Open-ended items
(`question_type: "open"` or no options) are skipped and counted; anything else that does not
fit is an `AnnotationError` naming the item and field.
"""

from __future__ import annotations

import json
import os
import string
from collections.abc import Sequence
from typing import Any

ID_KEYS = ("id", "uid", "question_id", "q_uid")


class AnnotationError(ValueError):
    """An annotation item that cannot become a multiple-choice record."""


def _answer_letter(answer: Any, options: Sequence[str], where: str) -> str | None:
    if answer is None:
        return None
    letters = string.ascii_uppercase[: len(options)]
    if isinstance(answer, int) and not isinstance(answer, bool) and 0 <= answer < len(options):
        return letters[answer]
    if isinstance(answer, str):
        a = answer.strip()
        if len(a) == 1 and a.upper() in letters:
            return a.upper()
        matches = [i for i, o in enumerate(options) if o.strip().lower() == a.lower()]
        if len(matches) == 1:
            return letters[matches[0]]
    raise AnnotationError(f"{where}: field 'answer' {answer!r} is not a letter, index or option")


def records_from_annotations(
    items: Sequence[dict[str, Any]], task_type: str, where: str = "annotations"
) -> tuple[list[dict[str, Any]], int]:
    """(records, number of open-ended items skipped); extra fields of an item are kept."""
    records, skipped = [], 0
    for k, item in enumerate(items):
        at = f"{where}[{k}]"
        if not isinstance(item, dict):
            raise AnnotationError(f"{at}: expected an object, got {type(item).__name__}")
        options = item.get("options", item.get("choices"))
        if item.get("question_type") == "open" or not options:
            skipped += 1
            continue
        if not isinstance(options, list) or not all(isinstance(o, str) for o in options):
            raise AnnotationError(f"{at}: field 'options'/'choices' must be a list of strings")
        qid = next((item[key] for key in ID_KEYS if key in item), None)
        if qid is None:
            raise AnnotationError(f"{at}: no id field (one of {list(ID_KEYS)})")
        if not isinstance(item.get("question"), str):
            raise AnnotationError(f"{at}: field 'question' must be a string")
        rec = {**item, "id": str(qid), "task_type": task_type, "options": list(options)}
        rec.pop("choices", None)
        letter = _answer_letter(item.get("answer"), options, at)
        if letter is None:
            rec.pop("answer", None)
        else:
            rec["answer"] = letter
        records.append(rec)
    return records, skipped


def load_annotations(path: str | os.PathLike, task_type: str) -> tuple[list[dict[str, Any]], int]:
    """A JSON list (or a JSONL file) of annotation items -> (records, skipped)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"annotation file {path!r} does not exist")
    with open(path, encoding="utf-8") as f:
        text = f.read()
    try:
        items = json.loads(text) if text.lstrip().startswith("[") else [
            json.loads(line) for line in text.splitlines() if line.strip()
        ]  # fmt: skip
    except json.JSONDecodeError as e:
        raise AnnotationError(f"annotation file {path!r} is not valid JSON/JSONL: {e}") from None
    return records_from_annotations(items, task_type, where=os.path.basename(path))
