"""`reagent_v`: ReAgent-V (arXiv 2506.01300) video question answering as a runtime pipeline.

One input record is one multiple-choice question about one video:

    {"id", "video": mp4 path, "captions": SRT path (one caption per stretch of frames),
     "question", "options": [2-6 strings], ["answer": gold letter], ["mode"],
     ["similarity": "captions" | "siglip" | "none"], ["tools": {"ocr"|"asr"|"scene_graph": text}],
     ["min_frames": int]}

Mode `reagent` (default), per record:
  1. ECRS frame selection (`reagent_frames`) over every decoded frame: colour entropy of the
     pixels times the frame–question similarity (`similarity`: `captions` = cosine of
     sentence embeddings of the question and each frame's caption; `siglip` = cosine of a
     SigLIP folder's image embedding of each frame and text embedding of the question
     (`siglip_similarity`, `jaxmm.models.siglip`); `none` = entropy only);
  2. tool selection: the model names the tools it wants from those the record has;
  3. initial answer from the selected frames (as their captions) and the chosen tools;
  4. critic: 1–3 sub-questions, then a JSON report (5 dimensions 0–5, reward in [0, 1]);
  5. three reflections (conservative / neutral / aggressive), each `{answer, confidence}`,
     merged by `reagent_critic.merge_reflections`;
  6. the critic's report on the final answer (skipped, reward reused, when it is unchanged).
Mode `baseline` (the paper's baseline): `min_frames` uniformly sampled frames, one call.

Frames reach the model as their captions (text), so a text LM reads what each selected frame
shows; a backend that takes images (`Backend.accepts_images`) also gets the selected frames
as `image_url` parts (`mf2.frame_parts`) with the answer prompt (initial answer, and the
baseline's one call). Failures of the
model's text (no JSON, a score out of range, no sub-question) are stored in the record under
`errors` and counted in the metrics, never fatal. The call count per record is fixed by the
mode (8 in `reagent` with a changed answer, 7 without; 1 in `baseline`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from jaxmm.data.video import Subtitle, read_srt, read_video
from jaxmm.generate.backends import Backend
from jaxmm.generate.params import GenerationParams
from jaxmm.pipelines import reagent_critic as critic
from jaxmm.pipelines import reagent_frames as ecrs
from jaxmm.pipelines.mf2 import frame_parts
from jaxmm.pipelines.runtime import Pipeline, Record

MODES = ("reagent", "baseline")
TOOLS = {
    "ocr": "OCR: text written in the frames",
    "asr": "ASR: transcript of the speech",
    "scene_graph": "scene graph: objects and their relations",
}
LETTERS = "ABCDEF"
PROMPTS = {
    "context": "Frames of the video (what each shows, with its time):\n{frames}\n",
    "tool": "{name} output:\n{text}\n",
    "question": "Question: {question}\nOptions:\n{options}\n",
    "answer": "Answer with the letter of the correct option.",
    "tools": (
        "You may use these tools before answering:\n{tools}\n"
        "Which tools do you need? Reply with their names separated by commas, or none."
    ),
    "sub_questions": (
        "A model answered: {answer}\n"
        "Write 1 to 3 short questions that would check whether this answer is right, "
        "one per line."
    ),
    "report": (
        "A model answered: {answer}\nChecking questions:\n{sub_questions}\n"
        "Evaluate the answer. Reply with only a JSON object: "
        '{{"structured_feedback": "...", "scores": {{"visual_alignment": 0-5, '
        '"temporal_accuracy": 0-5, "option_disambiguation": 0-5, '
        '"reasoning_specificity": 0-5, "linguistic_precision": 0-5}}, '
        '"total_score": sum, "scalar_reward": 0-1}}'
    ),
    "conservative": "Keep the answer unless the feedback shows it is clearly wrong; "
    "change only the final answer, not the reasoning.",
    "neutral": "Check the objects and people the answer relies on against the frames and "
    "revise the answer where they do not match.",
    "aggressive": "Reconsider the objects, the people and the reasoning from scratch, and "
    "give the answer the evidence supports best.",
    "reflection": (
        "Your answer: {answer}\nCritic feedback: {feedback}\n{instruction}\n"
        'Reply with only a JSON object: {{"answer": "<letter>", "confidence": 0-1}}'
    ),
}
PROMPT_VERSION = "1"
VERSION = (
    f"{PROMPT_VERSION}+"
    + hashlib.sha256("\x00".join(PROMPTS[k] for k in sorted(PROMPTS)).encode()).hexdigest()[:8]
)
MAX_TOKENS = {"tools": 16, "answer": 16, "sub_questions": 64, "report": 160, "reflection": 40}

# (question, frame captions, frames uint8 [F, H, W, 3]) -> similarity [F]
Similarity = Callable[[str, Sequence[str], np.ndarray], np.ndarray]
SIMILARITIES = ("captions", "siglip", "none")  # a record's `similarity`; `none`: entropy only


# ---------------------------------------------------------------------------- frame text
def frame_captions(subs: Sequence[Subtitle], timestamps_s: np.ndarray) -> list[str]:
    """The caption on screen at each frame time ("" where none is)."""
    out = []
    for t in timestamps_s:
        text = next((s.text for s in subs if s.start_s <= t < s.end_s), "")
        out.append(" ".join(text.split()))
    return out


def frames_text(captions: Sequence[str], timestamps_s: Sequence[float]) -> str:
    """One line per run of consecutive selected frames with the same caption:
    `[t0-t1 s] caption` (a run of one frame: `[t0 s]`)."""
    lines: list[str] = []
    run_start = run_end = None
    run_text = None
    for text, t in zip(captions, timestamps_s, strict=True):
        if text == run_text:
            run_end = t
            continue
        if run_text is not None:
            lines.append(_line(run_start, run_end, run_text))
        run_start = run_end = t
        run_text = text
    if run_text is not None:
        lines.append(_line(run_start, run_end, run_text))
    return "\n".join(lines)


def _line(t0: float, t1: float, text: str) -> str:
    span = f"{t0:.2f} s" if t0 == t1 else f"{t0:.2f}-{t1:.2f} s"
    return f"[{span}] {text or '(no description)'}"


# ----------------------------------------------------------------------------- similarity
_ENCODER: Any = None
_ENCODER_LOCK = threading.Lock()


def caption_similarity(question: str, captions: Sequence[str], frames: np.ndarray) -> np.ndarray:
    """Cosine of all-MiniLM-L6-v2 sentence embeddings of the question and each caption (the
    text-side stand-in for a CLIP image–question score, for machines without a SigLIP
    checkpoint; `siglip_similarity` is the image one). Distinct captions are embedded once."""
    del frames
    global _ENCODER
    with _ENCODER_LOCK:
        if _ENCODER is None:
            from jaxmm.models.text_encoder import TextEncoder, minilm_model_dir

            _ENCODER = TextEncoder.from_pretrained(minilm_model_dir())
        unique = sorted(set(captions))
        emb = _ENCODER.sentence_embeddings([question, *[u or "(none)" for u in unique]])
    by_text = dict(zip(unique, ecrs.cosine_similarity(emb[1:], emb[0]), strict=True))
    return np.array([by_text[c] for c in captions])


def siglip_similarity(folder: str | os.PathLike) -> Similarity:
    """The image–question similarity of a Hugging Face SigLIP folder (config.json,
    model.safetensors, a tokenizer; `jaxmm.models.siglip.SiglipModel`): every frame through
    SigLIP's preprocessing and image tower, the question (padded to max_length) through the
    text tower, their cosine. The model loads on the first call. FileNotFoundError now when
    the folder has no config.json."""
    folder = os.fspath(folder)
    if not os.path.exists(os.path.join(folder, "config.json")):
        raise FileNotFoundError(
            f"similarity 'siglip': {folder!r} is not a SigLIP folder (no config.json); "
            "it needs a Hugging Face SigLIP checkpoint (config.json, model.safetensors, "
            "tokenizer)"
        )
    loaded: list[Any] = []
    lock = threading.Lock()

    def similarity(question: str, captions: Sequence[str], frames: np.ndarray) -> np.ndarray:
        del captions
        with lock:
            if not loaded:
                from jaxmm.models.siglip import SiglipModel

                loaded.append(SiglipModel.from_hf(folder))
            model = loaded[0]
            images = model.frame_embeds(frames)
            text = model.text_embeds(model.tokenize([question]))[0]
        return ecrs.cosine_similarity(images, text)

    return similarity


# -------------------------------------------------------------------------------- parsing
def parse_tools(text: str, available: Sequence[str]) -> list[str]:
    """Tool names found in the reply (whole words, `scene graph` = `scene_graph`), in the
    order of `available`; names of tools the record lacks are ignored."""
    low = " " + re.sub(r"[^a-z_]+", " ", text.lower().replace("scene graph", "scene_graph")) + " "
    return [t for t in available if f" {t} " in low]


def parse_choice(text: str, n_options: int, options: Sequence[str] = ()) -> str | None:
    """The option letter of an answer: a standalone letter (`B`, `(B)`, `B)`, `B.`), else
    the one option whose text appears in the answer; None when neither."""
    letters = LETTERS[:n_options]
    m = re.search(rf"(?<![A-Za-z])([{letters}])(?![A-Za-z])", text)
    if m:
        return m.group(1)
    low = text.lower()
    hits = [LETTERS[i] for i, o in enumerate(options) if o.lower() in low]
    return hits[0] if len(hits) == 1 else None


# ------------------------------------------------------------------------------- the run
def question_text(record: Record) -> str:
    options = "\n".join(f"{LETTERS[i]}. {o}" for i, o in enumerate(record["options"]))
    return PROMPTS["question"].format(question=record["question"], options=options)


def select(
    record: Record, similarity: Similarity | Mapping[str, Similarity]
) -> tuple[list[int], dict[str, Any], str, tuple[np.ndarray, np.ndarray]]:
    """(selected frame indices, selection info, frames text, (selected frames uint8
    [K, H, W, 3], their times [K])) for the record's mode. `similarity`: one function (the
    `captions` one), or a mapping from `SIMILARITIES` names to functions."""
    clip = read_video(record["video"])
    captions = frame_captions(read_srt(record["captions"]), clip.timestamps_s)
    min_frames = int(record.get("min_frames", ecrs.MIN_FRAMES))
    if record.get("mode", "reagent") == "baseline":
        n = len(clip.frames)
        k = min(min_frames, n)
        picked = sorted({int(i) for i in np.floor((np.arange(k) + 0.5) * n / k)})
        info: dict[str, Any] = {"method": "uniform"}
    else:
        sim = None
        name = record.get("similarity", "captions")
        if name != "none":
            table = similarity if isinstance(similarity, Mapping) else {"captions": similarity}
            if name not in table:
                raise ValueError(
                    f"similarity {name!r} is not configured in this pipeline (it has "
                    f"{sorted(table)}); launch/reagent_v.py takes --similarity=siglip "
                    "--siglip_dir=<SigLIP folder>"
                )
            sim = np.asarray(table[name](record["question"], captions, clip.frames), np.float64)
        sel = ecrs.select_frames(ecrs.colour_entropy(clip.frames), sim, min_frames=min_frames)
        picked = list(sel.indices)
        info = {
            "method": "ecrs",
            "rounds": sel.rounds,
            "kept_per_round": list(sel.kept_per_round),
            "topped_up": sel.topped_up,
        }
    info |= {"num_frames": len(clip.frames), "selected": len(picked)}
    text = frames_text([captions[i] for i in picked], [float(clip.timestamps_s[i]) for i in picked])
    return picked, info, text, (clip.frames[picked], clip.timestamps_s[picked])


def _ask(backend: Backend, params: GenerationParams, kind: str, contents: list[Any]) -> list[str]:
    """One conversation per content (a string, or a list of parts)."""
    cap = MAX_TOKENS[kind]
    p = dataclasses.replace(params, max_tokens=min(params.max_tokens or cap, cap))
    return backend.chat([[{"role": "user", "content": c}] for c in contents], p)


def _report(backend, params, head: str, answer: str, sub_questions: list[str], errors):
    text = _ask(
        backend,
        params,
        "report",
        [head + PROMPTS["report"].format(answer=answer, sub_questions="\n".join(sub_questions))],
    )[0]
    try:
        return text, critic.parse_report(text)
    except critic.CriticError as e:
        errors.append({"step": "report", "reason": e.reason, "message": str(e)})
        return text, None


def run_record(
    record: Record,
    backend: Backend,
    params: GenerationParams,
    similarity: Similarity | Mapping[str, Similarity],
) -> dict[str, Any]:
    picked, selection, frames, selected = select(record, similarity)
    mode = record.get("mode", "reagent")
    n = len(record["options"])
    gold = record.get("answer")
    base = {"mode": mode, "frames": picked, "selection": selection, "gold": gold}
    context = PROMPTS["context"].format(frames=frames)
    question = question_text(record)

    def answer_content(prompt: str) -> str | list[dict[str, Any]]:
        """The answer prompt, after the selected frames when the backend takes images."""
        if not getattr(backend, "accepts_images", False):
            return prompt
        return [*frame_parts(*selected), {"type": "text", "text": prompt}]

    if mode == "baseline":
        prompt = context + question + PROMPTS["answer"]
        answer = _ask(backend, params, "answer", [answer_content(prompt)])[0]
        choice = parse_choice(answer, n, record["options"])
        return base | {
            "prompt": prompt,
            "initial_answer": answer,
            "final_answer": answer,
            "final_choice": choice,
            "correct": gold is not None and choice == gold,
            "errors": [],
        }

    errors: list[dict[str, str]] = []
    tools = record.get("tools", {})
    available = [t for t in TOOLS if t in tools]
    chosen: list[str] = []
    if available:
        listing = "\n".join(f"- {t}: {TOOLS[t]}" for t in available)
        reply = _ask(
            backend, params, "tools", [context + question + PROMPTS["tools"].format(tools=listing)]
        )[0]
        chosen = parse_tools(reply, available)
    tool_text = "".join(PROMPTS["tool"].format(name=t, text=tools[t]) for t in chosen)
    head = context + tool_text + question
    prompt = head + PROMPTS["answer"]
    initial = _ask(backend, params, "answer", [answer_content(prompt)])[0]

    q_text = _ask(
        backend, params, "sub_questions", [head + PROMPTS["sub_questions"].format(answer=initial)]
    )[0]
    try:
        sub_questions, cut = critic.parse_sub_questions(q_text)
        if cut:
            errors.append({"step": "sub_questions", "reason": "more_than_3", "message": q_text})
    except critic.CriticError as e:
        errors.append({"step": "sub_questions", "reason": e.reason, "message": str(e)})
        sub_questions = []
    report_text, report = _report(backend, params, head, initial, sub_questions, errors)

    feedback = report.feedback if report else "(no usable critic report)"
    replies = _ask(
        backend,
        params,
        "reflection",
        [
            head
            + PROMPTS["reflection"].format(
                answer=initial, feedback=feedback, instruction=PROMPTS[p]
            )
            for p in critic.PERSPECTIVES
        ],
    )
    reflections = []
    for p, text in zip(critic.PERSPECTIVES, replies, strict=True):
        try:
            reflections.append(critic.parse_reflection(text, p))
        except critic.CriticError as e:
            errors.append({"step": f"reflection/{p}", "reason": e.reason, "message": str(e)})
    merged = critic.merge_reflections(reflections)
    final = merged.answer if merged.answer is not None else initial
    initial_choice = parse_choice(initial, n, record["options"])
    final_choice = parse_choice(final, n, record["options"])
    if final == initial or (final_choice is not None and final_choice == initial_choice):
        final_report, final_report_text = report, None
    else:
        final_report_text, final_report = _report(
            backend, params, head, final, sub_questions, errors
        )
    return base | {
        "prompt": prompt,
        "tools_available": available,
        "tools_chosen": chosen,
        "initial_answer": initial,
        "initial_choice": initial_choice,
        "sub_questions": sub_questions,
        "report": report.to_dict() if report else None,
        "report_text": report_text,
        "reflections": [
            {"perspective": r.perspective, "answer": r.answer, "confidence": r.confidence}
            for r in reflections
        ],
        "reflection_texts": dict(zip(critic.PERSPECTIVES, replies, strict=True)),
        "merge": {"perspective": merged.perspective, "rule": merged.rule},
        "final_answer": final,
        "final_choice": final_choice,
        "final_report": final_report.to_dict() if final_report else None,
        "final_report_text": final_report_text,
        "reward_initial": report.reward if report else None,
        "reward_final": final_report.reward if final_report else None,
        "correct": gold is not None and final_choice == gold,
        "initial_correct": gold is not None and initial_choice == gold,
        "errors": errors,
    }


def validate(record: Record) -> None:
    for key in ("video", "captions", "question"):
        if not isinstance(record.get(key), str) or not record[key].strip():
            raise ValueError(f"field {key!r} must be a non-empty string")
    opts = record.get("options")
    if not isinstance(opts, list) or not 2 <= len(opts) <= len(LETTERS):
        raise ValueError(f"field 'options' must be a list of 2-{len(LETTERS)} strings")
    if not all(isinstance(o, str) and o.strip() for o in opts):
        raise ValueError("field 'options' must hold non-empty strings")
    if "answer" in record and record["answer"] not in LETTERS[: len(opts)]:
        raise ValueError(f"field 'answer' must be one of {list(LETTERS[: len(opts)])}")
    if record.get("mode", "reagent") not in MODES:
        raise ValueError(f"field 'mode' must be one of {list(MODES)}")
    if record.get("similarity", "captions") not in SIMILARITIES:
        raise ValueError(f"field 'similarity' must be one of {list(SIMILARITIES)}")
    tools = record.get("tools", {})
    if not isinstance(tools, dict) or any(
        k not in TOOLS or not isinstance(v, str) for k, v in tools.items()
    ):
        raise ValueError(f"field 'tools' must map some of {list(TOOLS)} to strings")
    mf = record.get("min_frames", ecrs.MIN_FRAMES)
    if not isinstance(mf, int) or isinstance(mf, bool) or mf < 1:
        raise ValueError("field 'min_frames' must be an integer >= 1")


def metrics(inputs: Sequence[Record], outputs: Sequence[Record]) -> dict[str, float]:
    """Per mode: accuracy (final answer) and, for reagent, initial-answer accuracy, mean
    rewards over parsed reports, and `errors/<reason>` counts."""
    del inputs
    out: dict[str, float] = {}
    for mode in MODES:
        rows = [o for o in outputs if o["mode"] == mode]
        if not rows:
            continue
        graded = [o for o in rows if o.get("gold") is not None]
        out[f"{mode}/records"] = len(rows)
        if graded:
            out[f"{mode}/accuracy"] = sum(o["correct"] for o in graded) / len(graded)
        out[f"{mode}/frames_mean"] = float(np.mean([len(o["frames"]) for o in rows]))
        if mode == "reagent":
            if graded:
                out[f"{mode}/initial_accuracy"] = sum(o["initial_correct"] for o in graded) / len(
                    graded
                )
            for key in ("reward_initial", "reward_final"):
                vals = [o[key] for o in rows if o.get(key) is not None]
                out[f"{mode}/{key}_parsed"] = len(vals)
                if vals:
                    out[f"{mode}/{key}_mean"] = float(np.mean(vals))
            for o in rows:
                for e in o["errors"]:
                    k = f"{mode}/errors/{e['reason']}"
                    out[k] = out.get(k, 0) + 1
                k = f"{mode}/merge/{o['merge']['rule']}"
                out[k] = out.get(k, 0) + 1
    return out


def make_pipeline(
    similarity: Similarity | Mapping[str, Similarity] = caption_similarity,
) -> Pipeline:
    """The pipeline with given frame–question similarities: one function (used for records
    with `similarity: captions`; tests pass a scripted one) or a mapping name -> function
    (`{"captions": caption_similarity, "siglip": siglip_similarity(folder)}`)."""
    return Pipeline(
        name="reagent_v",
        version=VERSION,
        run=lambda record, backend, params: run_record(record, backend, params, similarity),
        required_fields=("video", "captions", "question", "options"),
        validate=validate,
        metrics=metrics,
    )


PIPELINE = make_pipeline()
