"""`skot_skills`: Video-SKoT step 1, the skill each question needs (arXiv 2506.03525).

Two calls per question: the model describes the skill needed (without answering), then
rewrites its description as a short generic phrase ("Identify who performs an action"), so
questions needing the same skill get near-identical phrases that cluster well. An empty
rewrite falls back to the description's first line and is counted in `failures`.
"""

from __future__ import annotations

from typing import Any

from jaxmm.generate.backends import Backend
from jaxmm.generate.params import GenerationParams
from jaxmm.pipelines import skot_prompts as P
from jaxmm.pipelines.runtime import Pipeline, Record

FIELDS = ("context", "question", "options")


def validate(record: Record) -> None:
    for key in ("context", "question"):
        if not isinstance(record.get(key), str) or not record[key].strip():
            raise ValueError(f"field {key!r} must be a non-empty string")
    opts = record.get("options")
    if not isinstance(opts, list) or not 2 <= len(opts) <= len(P.LETTERS):
        raise ValueError(f"field 'options' must be a list of 2-{len(P.LETTERS)} strings")
    if not all(isinstance(o, str) and o.strip() for o in opts):
        raise ValueError("field 'options' must hold non-empty strings")
    if "answer" in record and record["answer"] not in P.LETTERS[: len(opts)]:
        raise ValueError(f"field 'answer' must be one of {list(P.LETTERS[: len(opts)])}")
    if "video" in record and (not isinstance(record["video"], str) or not record["video"]):
        raise ValueError("field 'video' (optional) must be a non-empty path string")
    budget = record.get("frame_budget", P.FRAME_BUDGET)
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
        raise ValueError(f"field 'frame_budget' (optional) must be an int >= 1, got {budget!r}")


def run(record: Record, backend: Backend, params: GenerationParams) -> dict[str, Any]:
    fields = {k: record[k] for k in FIELDS}
    (description,) = backend.chat(
        [P.render("describe", **fields)], P.params_for("describe", params)
    )
    (rewritten,) = backend.chat(
        [P.render("rewrite", description=description.strip())], P.params_for("rewrite", params)
    )
    phrase, failures = P.parse_skill_phrase(rewritten), []
    if phrase is None:
        failures.append("rewrite_empty")
        phrase = P.parse_skill_phrase(description) or "General reasoning"
    return {"skill_description": description.strip(), "skill_phrase": phrase,
            "failures": failures, "raw_rewrite": rewritten}  # fmt: skip


PIPELINE = Pipeline(
    name="skot_skills",
    version=P.VERSION,
    run=run,
    required_fields=FIELDS,
    validate=validate,
)
