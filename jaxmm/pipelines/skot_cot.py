"""`skot_cot`: Video-SKoT step 3, skill-conditioned chain of thought (arXiv 2506.03525).

Per training question, given its top skills (the driver picks the 3 taxonomy clusters nearest
the question's skill phrase): one sub-question per skill (one batched call), one answer per
sub-question (one batched call), a fused step-by-step rationale ending in `Answer: X` (one
call; `skot_prompts.read_answer` also accepts a named option), then the filter: the
rationale is kept only when its final answer matches the gold letter *and* the judge (one
more call, made only for those) says it is relevant. Kept rationales, cut after their last
`Answer: X` (or given one), become the experts' SFT targets. The sub-question, sub-answer
and fuse prompts show the question's video frames when the record has a `video` and the
backend takes images (`skot_prompts.video_parts`); the judge reads text only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from jaxmm.generate.backends import Backend
from jaxmm.generate.params import GenerationParams
from jaxmm.pipelines import skot_prompts as P
from jaxmm.pipelines import skot_skills
from jaxmm.pipelines.runtime import Pipeline, Record


def validate(record: Record) -> None:
    skot_skills.validate(record)
    if "answer" not in record:
        raise ValueError("field 'answer' (the gold option letter) is required")
    skills = record.get("skills")
    if not isinstance(skills, list) or not skills:
        raise ValueError("field 'skills' must be a non-empty list of skill names")
    if not all(isinstance(s, str) and s.strip() for s in skills):
        raise ValueError("field 'skills' must hold non-empty strings")


def steps_text(skills: Sequence[str], sub_questions: Sequence[str], answers: Sequence[str]) -> str:
    """`k. [skill] sub-question -> answer` lines, the steps the fuse prompt shows."""
    rows = zip(skills, sub_questions, answers, strict=True)
    return "\n".join(f"{i}. [{s}] {q} -> {a}" for i, (s, q, a) in enumerate(rows, start=1))


def training_target(rationale: str, letter: str) -> str:
    """The rationale up to and including its last `Answer: X` (text after it dropped), or the
    whole rationale plus `Answer: <letter>` when it named the option without a letter line."""
    found = list(P.ANSWER_RE.finditer(rationale))
    if found:
        return rationale[: found[-1].end()].strip()
    return f"{rationale.strip()}\n{P.answer_line(letter)}"


def run(record: Record, backend: Backend, params: GenerationParams) -> dict[str, Any]:
    ctx, question, options = record["context"], record["question"], record["options"]
    skills = list(record["skills"])
    frames, frames_error = P.video_parts(record, backend)  # [] on the text path
    asks = [
        P.with_frames(P.render("sub_question", context=ctx, question=question, skill=s), frames)
        for s in skills
    ]
    replies = backend.chat(asks, P.params_for("sub_question", params))
    sub_questions = [P.parse_sub_question(t, s) for t, s in zip(replies, skills, strict=True)]
    answers = backend.chat(
        [P.with_frames(P.render("sub_answer", context=ctx, sub_question=q), frames)
         for q in sub_questions],
        P.params_for("sub_answer", params),
    )  # fmt: skip
    answers = [P.first_line(a) or "(no answer)" for a in answers]
    steps = steps_text(skills, sub_questions, answers)
    fuse = P.render("fuse", context=ctx, question=question, options=options, steps=steps)
    (rationale,) = backend.chat([P.with_frames(fuse, frames)], params)
    predicted, rule = P.read_answer(rationale, options)
    judge: bool | None = None
    if predicted is None:
        reason = "no_answer"
    elif predicted != record["answer"]:
        reason = "wrong_answer"
    else:
        (verdict,) = backend.chat(
            [P.render("judge", question=question, options=options, rationale=rationale.strip())],
            P.params_for("judge", params),
        )
        judge = P.parse_judge(verdict)
        reason = {True: "kept", False: "judge_rejected", None: "judge_unparsed"}[judge]
    target = training_target(rationale, predicted) if reason == "kept" else None
    return {"skills": skills, "sub_questions": sub_questions, "sub_answers": answers,
            "rationale": rationale.strip(), "predicted": predicted, "answer_rule": rule,
            "judge": judge,
            "keep": reason == "kept", "reason": reason,
            "target": target, "frames": _num_images(frames),
            **({"frames_error": frames_error} if frames_error else {})}  # fmt: skip


def _num_images(parts: Sequence[dict[str, Any]]) -> int:
    return sum(p["type"] == "image_url" for p in parts)


def metrics(inputs: Sequence[Record], outputs: Sequence[Record]) -> dict[str, float]:
    del inputs
    n = max(len(outputs), 1)
    out = {"kept_rate": sum(o["keep"] for o in outputs) / n,
           "answer_accuracy": sum(o["reason"] not in ("no_answer", "wrong_answer")
                                  for o in outputs) / n}  # fmt: skip
    for reason in ("no_answer", "wrong_answer", "judge_rejected", "judge_unparsed"):
        out[f"reason/{reason}"] = float(sum(o["reason"] == reason for o in outputs))
    out["frames_error_rate"] = sum("frames_error" in o for o in outputs) / n
    return out


PIPELINE = Pipeline(
    name="skot_cot",
    version=P.VERSION,
    run=run,
    required_fields=(*skot_skills.FIELDS, "answer", "skills"),
    validate=validate,
    metrics=metrics,
)
