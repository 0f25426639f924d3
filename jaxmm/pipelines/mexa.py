"""`mexa`: training-free multi-expert aggregation (MEXA, arXiv 2506.17113) as a pipeline.

Per record (one multiple-choice question about a video, audio clip, 3D scene or scan):
  1. router: the model sees the task type, question, options and (when the backend takes
     images) `frame_budget` frames, and names skills from the 17-skill menu
     (`mexa_skills`); unknown ids are kept and counted, an answer with no skill falls back
     to the task type's default skills (counted as `router_fallback`);
  2. experts: each selected skill's expert (`mexa_experts`: subtitles, VLM captions, OCR,
     precomputed files) writes text; one that cannot run is recorded with its reason;
  3. aggregator: the model reads every expert text under its skill's header and answers with
     an option letter (`jaxmm.eval.mexa.parse_choice`).

`"mode": "direct"` is the paper's baseline: the same aggregator prompt with no experts (one
call). Input: {"id", "question", "options": [2..26 strings], ["answer": letter],
["task_type"], ["mode"], ["video"], ["frame_budget"], ["subtitles"], ["expert_dir"],
["video_id"], ["experts": {skill: kind}], ["skills": "A1, B1" (router output computed
earlier, as in the release's skill files: no router call)], ["category"]}.
"""

from __future__ import annotations

import hashlib
import string
from collections.abc import Sequence
from typing import Any

from jaxmm.eval.mexa import accuracy_metrics, parse_choice
from jaxmm.generate.backends import Backend
from jaxmm.generate.params import GenerationParams
from jaxmm.pipelines import mexa_experts, mexa_skills
from jaxmm.pipelines.mexa_experts import ExpertInput, ExpertUnavailable
from jaxmm.pipelines.mexa_skills import DEFAULT_SKILLS, SKILLS, TASK_TYPES
from jaxmm.pipelines.mf2 import frame_parts
from jaxmm.pipelines.runtime import Pipeline, Record

MODES = ("mexa", "direct")
AGGREGATOR_PROMPT = (
    "Task type: {task}\n\n{experts}"
    "Select the best answer to the following multiple-choice question based on all the "
    "provided information. Respond with only the letter (A, B, C, D, E, etc.) of the correct "
    "option.\n\nQuestion: {question}\nOptions:\n{options}\n\nThe answer is:"
)
EXPERT_BLOCK = "## {header} (skill {id}: {name})\n{text}\n\n"
VERSION = (
    "1+"
    + hashlib.sha256(
        "\x00".join([mexa_skills.ROUTER_PROMPT, AGGREGATOR_PROMPT, EXPERT_BLOCK]).encode()
    ).hexdigest()[:8]
)


def aggregator_prompt(record: Record, expert_texts: dict[str, str]) -> str:
    """Every expert's text under its skill's header (in menu order), then the question."""
    blocks = "".join(
        EXPERT_BLOCK.format(header=SKILLS[s].header, id=s, name=SKILLS[s].name, text=t)
        for s, t in sorted(expert_texts.items())
    )
    return AGGREGATOR_PROMPT.format(
        task=mexa_skills.task_line(record.get("task_type", "")),
        experts=blocks,
        question=record["question"],
        options=mexa_skills.options_text(record["options"]),
    )


def _route(x: ExpertInput) -> dict[str, Any]:
    rec = x.record
    if "skills" in rec:  # the router's output computed earlier (the release's skill file)
        raw = rec["skills"] if isinstance(rec["skills"], str) else ", ".join(rec["skills"])
        return _selection(raw, rec, precomputed=True)
    clip, frames_error = None, None
    if getattr(x.backend, "accepts_images", False) and rec.get("video"):
        try:
            clip = x.clip
        except ExpertUnavailable as e:  # route from the text alone, say why
            frames_error = str(e)
    text = mexa_skills.router_prompt(
        rec.get("task_type", ""), rec["question"], rec["options"], len(clip.frames) if clip else 0
    )
    content: Any = text
    if clip is not None:
        content = [{"type": "text", "text": text}, *frame_parts(clip.frames, clip.timestamps_s)]
    (raw,) = x.backend.chat([[{"role": "user", "content": content}]], x.params)
    route = _selection(raw, rec, precomputed=False)
    return route | ({"frames_error": frames_error} if frames_error else {})


def _selection(raw: str, rec: Record, precomputed: bool) -> dict[str, Any]:
    selected, unknown = mexa_skills.parse_skills(raw)
    fallback = not selected
    if fallback:
        selected = list(DEFAULT_SKILLS.get(rec.get("task_type", ""), ("A1",)))
    return {
        "raw": raw,
        "skills": selected,
        "unknown": unknown,
        "fallback": fallback,
        "precomputed": precomputed,
    }


def run(record: Record, backend: Backend, params: GenerationParams) -> dict[str, Any]:
    mode = record.get("mode", "mexa")
    x = ExpertInput(record, backend, params)
    out: dict[str, Any] = {"mode": mode}
    texts: dict[str, str] = {}
    if mode == "mexa":
        route = _route(x)
        errors: dict[str, str] = {}
        for sid in route["skills"]:
            try:
                texts[sid] = mexa_experts.run_expert(sid, x)
            except ExpertUnavailable as e:
                errors[sid] = f"{mexa_experts.expert_kind(record, sid)}: {e}"
        kinds = {s: mexa_experts.expert_kind(record, s) for s in route["skills"]}
        out |= {"router": route, "expert_kinds": kinds, "experts": texts, "expert_errors": errors}
    (answer,) = backend.chat(
        [[{"role": "user", "content": aggregator_prompt(record, texts)}]], params
    )
    letter, rule = parse_choice(answer, record["options"])
    keep = ("task_type", "category", "evidence", "movie_id", "answer")
    return (
        {k: record[k] for k in keep if k in record}
        | out
        | {
            "num_options": len(record["options"]),
            "response": answer,
            "prediction": letter,
            "parse_rule": rule,
            "correct": letter is not None and letter == record.get("answer"),
        }
    )


def validate(record: Record) -> None:
    if not isinstance(record.get("question"), str) or not record["question"].strip():
        raise ValueError("field 'question' must be a non-empty string")
    opts = record.get("options")
    if not (isinstance(opts, list) and 2 <= len(opts) <= 26 and all(
        isinstance(o, str) and o.strip() for o in opts
    )):  # fmt: skip
        raise ValueError("field 'options' must be a list of 2 to 26 non-empty strings")
    if "answer" in record and record["answer"] not in string.ascii_uppercase[: len(opts)]:
        raise ValueError(
            f"field 'answer' must be an option letter A-{chr(64 + len(opts))}, "
            f"got {record['answer']!r}"
        )
    if record.get("mode", "mexa") not in MODES:
        raise ValueError(f"field 'mode' must be one of {list(MODES)}, got {record['mode']!r}")
    experts = record.get("experts", {})
    if not isinstance(experts, dict):
        raise ValueError("field 'experts' must be an object {skill id: expert kind}")
    for sid, kind in experts.items():
        if sid not in SKILLS:
            raise ValueError(f"field 'experts': unknown skill id {sid!r}; known: {list(SKILLS)}")
        if kind not in mexa_experts.KINDS:
            raise ValueError(
                f"field 'experts': unknown expert kind {kind!r} for {sid}; "
                f"known: {list(mexa_experts.KINDS)}"
            )
    skills = record.get("skills", "")
    if not (isinstance(skills, str) or (
        isinstance(skills, list) and all(isinstance(s, str) for s in skills)
    )):  # fmt: skip
        raise ValueError("field 'skills' must be a string ('A1, B1') or a list of skill ids")
    if "task_type" in record and not isinstance(record["task_type"], str):
        raise ValueError("field 'task_type' must be a string (e.g. one of "
                         f"{list(TASK_TYPES)})")  # fmt: skip


def _mode_metrics(rows: Sequence[Record]) -> dict[str, float]:
    out = accuracy_metrics(rows)
    routed = [r for r in rows if "router" in r]
    if routed:
        n = len(routed)
        out["router/mean_skills"] = sum(len(r["router"]["skills"]) for r in routed) / n
        out["router/unknown_ids"] = float(sum(len(r["router"]["unknown"]) for r in routed))
        out["router/records_with_unknown_ids"] = (
            sum(bool(r["router"]["unknown"]) for r in routed) / n
        )
        out["router/fallback_rate"] = sum(r["router"]["fallback"] for r in routed) / n
        out["experts/errors"] = float(sum(len(r["expert_errors"]) for r in routed))
        out["experts/records_with_errors"] = sum(bool(r["expert_errors"]) for r in routed) / n
        for sid in SKILLS:
            picked = sum(sid in r["router"]["skills"] for r in routed)
            if picked:
                out[f"router/skill={sid}/rate"] = picked / n
        for ev in sorted({r.get("evidence") for r in routed if r.get("evidence")}):
            want = {"subtitles": "B1", "video": "A"}.get(ev)
            sel = [r for r in routed if r.get("evidence") == ev]
            if want:  # the router picked an expert that can see the answer
                hit = [any(s.startswith(want) for s in r["router"]["skills"]) for r in sel]
                out[f"router/evidence={ev}/recall"] = sum(hit) / len(sel)
    return out


def metrics(inputs: Sequence[Record], outputs: Sequence[Record]) -> dict[str, float]:
    """`<mode>/<metric>` for each mode in the file (accuracy overall / per task type /
    per category, chance, unparsed rate; router and expert counts for `mexa`)."""
    del inputs
    out: dict[str, float] = {}
    for mode in MODES:
        rows = [o for o in outputs if o.get("mode") == mode]
        if rows:
            out |= {f"{mode}/{k}": v for k, v in _mode_metrics(rows).items()}
    return out


PIPELINE = Pipeline(
    name="mexa",
    version=VERSION,
    run=run,
    required_fields=("question", "options"),
    validate=validate,
    metrics=metrics,
)
