"""`skot_answer`: answer a question with the active expert (Video-SKoT inference, evaluation).

One call with the same `answer` prompt the experts were trained on; the final `Answer: X`
letter is compared with the gold one. Which adapter answers is the backend's business
(`skot_experts.ExpertBackend.select`); the record names it in `expert` for the report.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from jaxmm.generate.backends import Backend
from jaxmm.generate.params import GenerationParams
from jaxmm.pipelines import skot_prompts as P
from jaxmm.pipelines import skot_skills
from jaxmm.pipelines.runtime import Pipeline, Record


def run(record: Record, backend: Backend, params: GenerationParams) -> dict[str, Any]:
    fields = {k: record[k] for k in skot_skills.FIELDS}
    (reply,) = backend.chat([P.render("answer", **fields)], params)
    predicted, rule = P.read_answer(reply, record["options"])
    gold = record.get("answer")
    return {
        "expert": record.get("expert"),
        "backend_model": backend.model,
        "reply": reply,
        "predicted": predicted,
        "answer_rule": rule,
        "correct": gold is not None and predicted == gold,
    }


def metrics(inputs: Sequence[Record], outputs: Sequence[Record]) -> dict[str, float]:
    del inputs
    n = max(len(outputs), 1)
    return {"accuracy": sum(o["correct"] for o in outputs) / n,
            "unparsed_rate": sum(o["predicted"] is None for o in outputs) / n}  # fmt: skip


PIPELINE = Pipeline(
    name="skot_answer",
    version=P.VERSION,
    run=run,
    required_fields=skot_skills.FIELDS,
    validate=skot_skills.validate,
    metrics=metrics,
)
