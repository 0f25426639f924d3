"""`mf2`: the MF² claim-pair harness (arXiv 2506.06275) as a runtime pipeline.

One input record is one claim pair under one input setting and prompt style (built from a
release folder by `build_records`). The two claims are asked in two separate conversations
(never shown together); the answers are read by every parser of `jaxmm.eval.mf2`, and the
pair is correct when the fact is judged TRUE and the fib FALSE.

Input settings: `statement` (the claim alone), `transcripts`, `synopsis`, and the video ones
(`video`, `video_transcripts`, `video_synopsis`, `all`) which add `frame_budget` uniformly
sampled frames as OpenAI-style `image_url` content parts, each preceded by its time. Video
settings need a backend with `accepts_images` (the engine with an image encoder, e.g.
`engine:<model>,vision=tiny_random`, or `openai:<url>,images=true`), else ImageInputError
before any model call.

Prompt styles: `explanation` (reason, then `<answer>TRUE|FALSE</answer>`), `explanation_free`
(reason, then say true or false), `direct` (only the tag), `direct_free` (one word).
"""

from __future__ import annotations

import base64
import hashlib
import io
from collections.abc import Sequence
from typing import Any

import numpy as np

from jaxmm.data.video import read_video
from jaxmm.eval import mf2 as mf2_eval
from jaxmm.eval.mf2 import PARSERS, PairResult, pair_metrics, parse_answer
from jaxmm.generate.backends import Backend, ImageInputError
from jaxmm.generate.params import GenerationParams
from jaxmm.pipelines.runtime import Pipeline, Record

SETTINGS = (
    "statement",
    "transcripts",
    "synopsis",
    "video",
    "video_transcripts",
    "video_synopsis",
    "all",
)
TEXT_SETTINGS = SETTINGS[:3]
STYLES = ("explanation", "explanation_free", "direct", "direct_free")
# the parser whose numbers are the headline for each style (every parser is reported too)
DEFAULT_PARSER = {
    "explanation": "strict_fallback",
    "explanation_free": "last",
    "direct": "strict_fallback",
    "direct_free": "first",
}
_USES = {  # setting -> (transcripts, synopsis, video)
    "statement": (False, False, False),
    "transcripts": (True, False, False),
    "synopsis": (False, True, False),
    "video": (False, False, True),
    "video_transcripts": (True, False, True),
    "video_synopsis": (False, True, True),
    "all": (True, True, True),
}
PROMPTS = {
    "transcripts": "These are the subtitles of a movie:\n{transcripts}\n\n",
    "synopsis": "This is the synopsis of a movie:\n{synopsis}\n\n",
    "video": "These are {n} frames of the movie, sampled uniformly, each after its time:\n",
    "question": "Is the following claim about the movie true or false?\nClaim: {claim}\n\n",
    "explanation": (
        "First explain your reasoning briefly. Then give your final answer as "
        "<answer>TRUE</answer> or <answer>FALSE</answer>."
    ),
    "explanation_free": (
        "First explain your reasoning briefly. Then say whether the claim is true or false."
    ),
    "direct": "Answer only with <answer>TRUE</answer> or <answer>FALSE</answer>.",
    "direct_free": "Answer with one word: TRUE or FALSE.",
}
PROMPT_VERSION = "1"
VERSION = (
    f"{PROMPT_VERSION}+"
    + hashlib.sha256("\x00".join(PROMPTS[k] for k in sorted(PROMPTS)).encode()).hexdigest()[:8]
)


def uses(setting: str) -> tuple[bool, bool, bool]:
    """(transcripts, synopsis, video) that a setting shows the model."""
    if setting not in _USES:
        raise ValueError(f"unknown MF² setting {setting!r}; known: {list(SETTINGS)}")
    return _USES[setting]


def require_images(backend: Backend, settings: Sequence[str]) -> None:
    """ImageInputError unless `backend` takes image parts (video settings send frames)."""
    if not getattr(backend, "accepts_images", False):
        raise ImageInputError(
            f"MF² settings {list(settings)} send video frames as image_url parts, but backend "
            f"{backend.name!r} takes no images (Backend.accepts_images is False); use a VLM "
            "backend: engine:<model>,vision=... or openai:<url>,images=true"
        )


def frame_parts(frames: np.ndarray, timestamps_s: np.ndarray) -> list[dict[str, Any]]:
    """The image-input interface: OpenAI-style content parts, a `text` part with the time
    (seconds) before each frame as a PNG `image_url` data URI."""
    from PIL import Image

    parts: list[dict[str, Any]] = []
    for frame, t in zip(frames, timestamps_s, strict=True):
        buf = io.BytesIO()
        Image.fromarray(np.asarray(frame, np.uint8)).save(buf, format="PNG")
        url = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
        parts.append({"type": "text", "text": f"[{float(t):.2f} s]"})
        parts.append({"type": "image_url", "image_url": {"url": url}})
    return parts


def claim_messages(record: Record, claim: str) -> list[dict[str, Any]]:
    """The one user message asking about one claim under the record's setting and style.
    Text settings give a string content; video settings a list of content parts."""
    with_transcripts, with_synopsis, with_video = uses(record["setting"])
    text = ""
    if with_transcripts:
        text += PROMPTS["transcripts"].format(transcripts=record["transcripts"])
    if with_synopsis:
        text += PROMPTS["synopsis"].format(synopsis=record["synopsis"])
    ask = PROMPTS["question"].format(claim=claim) + PROMPTS[record["style"]]
    if not with_video:
        return [{"role": "user", "content": text + ask}]
    clip = read_video(record["video"], max_frames=int(record["frame_budget"]))
    head = PROMPTS["video"].format(n=len(clip.frames))
    parts = [{"type": "text", "text": text + head}, *frame_parts(clip.frames, clip.timestamps_s)]
    return [{"role": "user", "content": [*parts, {"type": "text", "text": "\n" + ask}]}]


def run(record: Record, backend: Backend, params: GenerationParams) -> dict[str, Any]:
    if uses(record["setting"])[2]:
        require_images(backend, [record["setting"]])
    conversations = [claim_messages(record, record[k]) for k in ("true_claim", "false_claim")]
    on_true, on_false = backend.chat(conversations, params)  # two separate conversations
    verdicts = {
        p: {"true": parse_answer(on_true, p), "false": parse_answer(on_false, p)} for p in PARSERS
    }
    chosen = verdicts[DEFAULT_PARSER[record["style"]]]
    keep = ("movie_id", "pair_id", "setting", "style", "category", "granularity", "evidence")
    return {k: record[k] for k in keep if k in record} | {
        "answers": {"true": on_true, "false": on_false},
        "verdicts": verdicts,
        "parser": DEFAULT_PARSER[record["style"]],
        "correct": chosen["true"] is True and chosen["false"] is False,
    }


def validate(record: Record) -> None:
    for key in ("movie_id", "true_claim", "false_claim"):
        if not isinstance(record.get(key), str) or not record[key].strip():
            raise ValueError(f"field {key!r} must be a non-empty string")
    if record["true_claim"].strip() == record["false_claim"].strip():
        raise ValueError("field 'false_claim' equals 'true_claim'")
    if record.get("style") not in STYLES:
        raise ValueError(
            f"field 'style' must be one of {list(STYLES)}, got {record.get('style')!r}"
        )
    with_transcripts, with_synopsis, with_video = uses(record.get("setting", ""))
    needed = [("transcripts", with_transcripts), ("synopsis", with_synopsis), ("video", with_video)]
    for key, need in needed:
        if need and (not isinstance(record.get(key), str) or not record[key].strip()):
            raise ValueError(f"setting {record['setting']!r} needs a non-empty field {key!r}")
    if with_video and (
        not isinstance(record.get("frame_budget"), int) or record["frame_budget"] < 1
    ):
        raise ValueError("video settings need an integer field 'frame_budget' >= 1")


def build_records(
    root: str,
    settings: Sequence[str] = TEXT_SETTINGS,
    styles: Sequence[str] = ("direct", "explanation"),
    *,
    frame_budget: int = 8,
    max_pairs_per_movie: int | None = None,
) -> list[Record]:
    """One record per (setting, style, pair) of a release folder, context text inline (so the
    call cache keys on what the model saw); a missing subtitle/synopsis/video file is an error
    naming it before any model call."""
    for s in styles:
        if s not in STYLES:
            raise ValueError(f"unknown MF² prompt style {s!r}; known: {list(STYLES)}")
    need = [uses(s) for s in settings]
    pairs = mf2_eval.load_pairs(root)
    seen: dict[str, int] = {}
    kept = []
    for p in pairs:
        seen[p.movie_id] = seen.get(p.movie_id, 0) + 1
        if max_pairs_per_movie is None or seen[p.movie_id] <= max_pairs_per_movie:
            kept.append(p)
    context: dict[str, dict[str, str]] = {}
    for movie in dict.fromkeys(p.movie_id for p in kept):
        c = context[movie] = {}
        if any(n[0] for n in need):
            c["transcripts"] = mf2_eval.transcript(root, movie)
        if any(n[1] for n in need):
            c["synopsis"] = mf2_eval.synopsis(root, movie)
        if any(n[2] for n in need):
            c["video"] = mf2_eval.video_path(root, movie)
    records = []
    for setting, (t, s, v) in zip(settings, need, strict=True):
        for style in styles:
            for p in kept:
                rec = {
                    "id": f"{p.pair_id}/{setting}/{style}",
                    "movie_id": p.movie_id,
                    "pair_id": p.pair_id,
                    "true_claim": p.true_claim,
                    "false_claim": p.false_claim,
                    "category": p.category,
                    "granularity": p.granularity,
                    **({"evidence": p.extra["evidence"]} if "evidence" in p.extra else {}),
                    "setting": setting,
                    "style": style,
                }
                ctx = context[p.movie_id]
                rec |= {"transcripts": ctx["transcripts"]} if t else {}
                rec |= {"synopsis": ctx["synopsis"]} if s else {}
                rec |= {"video": ctx["video"], "frame_budget": frame_budget} if v else {}
                records.append(rec)
    return records


def metrics(inputs: Sequence[Record], outputs: Sequence[Record]) -> dict[str, float]:
    """Per (setting, style): `<setting>/<style>/<metric>` with the style's default parser,
    `.../parser=<p>/<metric>` for every parser, `.../category=<c>/pairwise_accuracy`."""
    del inputs
    groups: dict[tuple[str, str], list[Record]] = {}
    for o in outputs:
        groups.setdefault((o["setting"], o["style"]), []).append(o)
    out: dict[str, float] = {}
    for (setting, style), rows in sorted(groups.items()):
        prefix = f"{setting}/{style}"
        for parser in PARSERS:
            results = [
                PairResult(
                    o["movie_id"], o["verdicts"][parser]["true"], o["verdicts"][parser]["false"]
                )
                for o in rows
            ]
            m = pair_metrics(results)
            if parser == DEFAULT_PARSER[style]:
                out |= {f"{prefix}/{k}": v for k, v in m.items()}
            out |= {
                f"{prefix}/parser={parser}/{k}": m[k]
                for k in ("pairwise_accuracy", "tpr", "tnr", "none_rate")
            }
        for cat in sorted({o.get("category", "") for o in rows}):
            sel = [o for o in rows if o.get("category", "") == cat]
            out[f"{prefix}/category={cat}/pairwise_accuracy"] = sum(
                o["correct"] for o in sel
            ) / len(sel)
    return out


PIPELINE = Pipeline(
    name="mf2",
    version=VERSION,
    run=run,
    required_fields=("movie_id", "true_claim", "false_claim", "setting", "style"),
    validate=validate,
    metrics=metrics,
)
