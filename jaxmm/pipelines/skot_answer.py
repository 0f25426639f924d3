"""`skot_answer`: answer a question with the active expert (Video-SKoT inference, evaluation).

One call with the same `answer` prompt the experts were trained on (plus the question's video
frames when the record has a `video` and the backend takes images: `skot_prompts.video_parts`;
the experts' SFT data is the text prompt); the final `Answer: X` letter is compared with the
gold one. Which adapter answers is the backend's business
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
    frames, frames_error = P.video_parts(record, backend)  # [] on the text path
    (reply,) = backend.chat([P.with_frames(P.render("answer", **fields), frames)], params)
    predicted, rule = P.read_answer(reply, record["options"])
    gold = record.get("answer")
    return {
        "expert": record.get("expert"),
        "backend_model": backend.model,
        "reply": reply,
        "predicted": predicted,
        "answer_rule": rule,
        "correct": gold is not None and predicted == gold,
        "frames": sum(p["type"] == "image_url" for p in frames),
    } | ({"frames_error": frames_error} if frames_error else {})


def metrics(inputs: Sequence[Record], outputs: Sequence[Record]) -> dict[str, float]:
    del inputs
    n = max(len(outputs), 1)
    return {"accuracy": sum(o["correct"] for o in outputs) / n,
            "unparsed_rate": sum(o["predicted"] is None for o in outputs) / n,
            "frames_error_rate": sum("frames_error" in o for o in outputs) / n}  # fmt: skip


PIPELINE = Pipeline(
    name="skot_answer",
    version=P.VERSION,
    run=run,
    required_fields=skot_skills.FIELDS,
    validate=skot_skills.validate,
    metrics=metrics,
)
