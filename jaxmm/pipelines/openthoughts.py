"""`openthoughts`: the model stages of OpenThoughts data curation (arXiv 2506.04178).

One pipeline, two stages chosen by the record's `"stage"` field (the driver `run_openthoughts`
below writes these records; `launch/pipeline.py --pipeline=openthoughts` runs a hand-made file
too):

- `"filter"`: score a question for the filter stage. `"filter": "difficulty"` asks the model
  to rate it 1-10 (`parse_difficulty`), score = the rating; `"filter": "length"` asks the model
  to answer it, score = the response length in characters (the paper keeps the questions with
  the longest LLM responses for math/science and the hardest-rated for code).
- `"answers"`: sample `n_answers` (default 16, the paper's) teacher answers; answer k uses
  sampling seed `params.seed + k`, so every answer has its own call-cache key.

Input: `{"id", "stage", "domain", "source", "question"}` (+ `"filter"` for the filter stage,
optional `"n_answers"` and `"difficulty"`). Output: the input fields plus, for filter,
`filter_score`, `rated_difficulty`, `filter_parse`, `filter_response`; for answers, `answers`
and `answer_seeds`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from jaxmm.data.openthoughts import exact_dedup, mix, select, to_sharegpt, validate_question
from jaxmm.data.reasoning_questions import generate_questions
from jaxmm.generate.backends import Backend
from jaxmm.generate.params import GenerationParams
from jaxmm.io.jsonl import read_jsonl, write_jsonl
from jaxmm.pipelines.runtime import Pipeline, Record, read_input, run_pipeline

STAGES = ("filter", "answers")
FILTER_METHODS = ("difficulty", "length")
DEFAULT_N_ANSWERS = 16

DIFFICULTY_PROMPT = (
    "Rate how difficult the following problem is to solve, on a scale from 1 (trivial) to 10 "
    "(hardest competition level). Reply with one line of the form 'Difficulty: N'.\n\n"
    "Problem:\n{question}"
)
LENGTH_SYSTEM = "Solve the problem. Explain your reasoning."
ANSWER_SYSTEM = (
    "You are a careful reasoner. Think through the problem step by step between <think> and "
    "</think>, then write the final answer after </think>."
)

_NUMBER = r"(\d+(?:\.\d+)?)"
_LABELLED = re.compile(
    r"difficulty(?:\s+(?:rating|level|score))?\s*(?:is|of)?\s*[:=]?\s*\**\s*" + _NUMBER, re.I
)
_OUT_OF_10 = re.compile(_NUMBER + r"\s*(?:/|out\s+of)\s*10(?!\d|\.\d)", re.I)
_FIRST_NUMBER = re.compile(r"(?<![\d.])" + _NUMBER)


def parse_difficulty(text: str) -> tuple[int | None, str]:
    """(rating 1-10 or None, which rule decided): 'labelled' ("Difficulty: 7", "difficulty
    level is 7"), else 'out_of_10' ("7/10", "7 out of 10"), else 'first_number' (the first
    number in the text). A decimal rounds half up (6.5 -> 7). A number outside 1-10 gives
    (None, 'out_of_range'); no number gives (None, 'no_number')."""
    for rule, pattern in (
        ("labelled", _LABELLED),
        ("out_of_10", _OUT_OF_10),
        ("first_number", _FIRST_NUMBER),
    ):
        match = pattern.search(text)
        if match:
            rating = math.floor(float(match.group(1)) + 0.5)
            return (rating, rule) if 1 <= rating <= 10 else (None, "out_of_range")
    return None, "no_number"


def validate(record: Record) -> None:
    stage = record.get("stage")
    if stage not in STAGES:
        raise ValueError(f"field 'stage' must be one of {list(STAGES)}, got {stage!r}")
    validate_question(record)
    if stage == "filter" and record.get("filter") not in FILTER_METHODS:
        raise ValueError(
            f"field 'filter' must be one of {list(FILTER_METHODS)}, got {record.get('filter')!r}"
        )
    n = record.get("n_answers", DEFAULT_N_ANSWERS)
    if stage == "answers" and (not isinstance(n, int) or isinstance(n, bool) or n < 1):
        raise ValueError(f"field 'n_answers' must be a positive integer, got {n!r}")


def _filter(record: Record, backend: Backend, params: GenerationParams) -> dict[str, Any]:
    if record["filter"] == "difficulty":
        prompt = DIFFICULTY_PROMPT.format(question=record["question"])
        text = backend.chat([[{"role": "user", "content": prompt}]], params)[0]
        rating, rule = parse_difficulty(text)
        return {"filter_score": rating, "rated_difficulty": rating, "filter_parse": rule,
                "filter_response": text}  # fmt: skip
    conversation = [
        {"role": "system", "content": LENGTH_SYSTEM},
        {"role": "user", "content": record["question"]},
    ]
    text = backend.chat([conversation], params)[0]
    return {"filter_score": len(text), "rated_difficulty": None, "filter_parse": "length",
            "filter_response": text}  # fmt: skip


def _answers(record: Record, backend: Backend, params: GenerationParams) -> dict[str, Any]:
    conversation = [
        {"role": "system", "content": ANSWER_SYSTEM},
        {"role": "user", "content": record["question"]},
    ]
    base = params.seed or 0
    seeds = [base + k for k in range(record.get("n_answers", DEFAULT_N_ANSWERS))]
    answers = [backend.chat([conversation], dataclasses.replace(params, seed=s))[0] for s in seeds]
    return {"answers": answers, "answer_seeds": seeds}


def run(record: Record, backend: Backend, params: GenerationParams) -> dict[str, Any]:
    fields = {k: v for k, v in record.items() if k not in ("id", "stage")}
    stage_fn = _filter if record["stage"] == "filter" else _answers
    return {**fields, **stage_fn(record, backend, params)}


def metrics(inputs: Sequence[Record], outputs: Sequence[Record]) -> Mapping[str, float]:
    """Counts in/out; filter: rating histogram, parse rules, mean response length; answers:
    answers per question and mean answer length (characters)."""
    out: dict[str, float] = {"in": len(inputs), "out": len(outputs)}
    scored = [r for r in outputs if "filter_score" in r]
    if scored:
        ratings = Counter(r["rated_difficulty"] for r in scored if r["filter_parse"] != "length")
        for d in range(1, 11):
            out[f"rated_difficulty_{d}"] = ratings.get(d, 0)
        out["rated_difficulty_none"] = ratings.get(None, 0)
        for rule, n in Counter(r["filter_parse"] for r in scored).items():
            out[f"parse_{rule}"] = n
        out["mean_filter_response_chars"] = sum(len(r["filter_response"]) for r in scored) / len(
            scored
        )
    answered = [r for r in outputs if "answers" in r]
    if answered:
        lengths = [len(a) for r in answered for a in r["answers"]]
        out["answers"] = len(lengths)
        out["answers_per_question"] = len(lengths) / len(answered)
        out["mean_answer_chars"] = sum(lengths) / max(len(lengths), 1)
        out["distinct_answers_per_question"] = sum(len(set(r["answers"])) for r in answered) / len(
            answered
        )
    return out


PIPELINE = Pipeline(
    name="openthoughts",
    version="1",
    run=run,
    required_fields=("stage", "domain", "source", "question"),
    validate=validate,
    metrics=metrics,
)


# ----------------------------------------------------------------------------- the driver

STAGE_FILES = {
    "source": "01_source.jsonl",
    "mix": "02_mix.jsonl",
    "filter_scores": "03_filter_scores.jsonl",  # model calls
    "filter": "03_filter.jsonl",
    "dedup": "04_dedup.jsonl",
    "answers": "05_answers.jsonl",  # model calls
    "sharegpt": "06_sharegpt.jsonl",  # the final rows (no answer filtering)
}
DEFAULT_FILTER_BY_DOMAIN = {"code": "difficulty"}  # other domains: "length" (the paper's)
_SOURCE_SPEC = Pipeline(
    name="openthoughts_source",
    version="1",
    run=lambda record, backend, params: {},
    required_fields=("domain", "source", "question"),
    validate=validate_question,
)


@dataclasses.dataclass(frozen=True)
class CurationConfig:
    """What the stages do; its fields (and each stage's input file) fingerprint a stage."""

    ranking: Mapping[str, Sequence[str]]  # domain -> sources, best first (mix stage)
    sources_per_domain: int = 2
    filter_method: str = "auto"  # auto (code: difficulty, others: length) | difficulty | length
    keep_fraction: float = 0.5  # per domain, after the filter scores
    n_answers: int = DEFAULT_N_ANSWERS
    filter_params: GenerationParams = GenerationParams(max_tokens=64)
    answer_params: GenerationParams = GenerationParams(max_tokens=1024, temperature=0.7, seed=0)

    def __post_init__(self):
        if self.filter_method not in ("auto", *FILTER_METHODS):
            raise ValueError(
                "filter_method must be 'auto', 'difficulty' or 'length', "
                f"got {self.filter_method!r}"
            )
        if not isinstance(self.n_answers, int) or self.n_answers < 1:
            raise ValueError(f"n_answers must be a positive integer, got {self.n_answers!r}")

    def method(self, domain: str) -> str:
        if self.filter_method != "auto":
            return self.filter_method
        return DEFAULT_FILTER_BY_DOMAIN.get(domain, "length")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["ranking"] = {k: list(v) for k, v in self.ranking.items()}
        d["filter_params"] = self.filter_params.to_dict()
        d["answer_params"] = self.answer_params.to_dict()
        return d


def run_openthoughts(
    out_dir: str | os.PathLike,
    backend: Backend,
    config: CurationConfig,
    *,
    questions: str | os.PathLike | None = None,
    num_questions: int = 24,
    seed: int = 0,
    concurrency: int = 4,
    progress: bool = True,
) -> dict[str, dict[str, Any]]:
    """Runs the six stages into `out_dir` (files: `STAGE_FILES`, each with `.metrics.json`),
    from the question file `questions` (bad records reported in `01_source.jsonl.errors.jsonl`)
    or from `generate_questions(num_questions, seed)`. A stage whose `<file>.stage.json` says it
    finished with the same config and input is skipped; an interrupted model stage resumes
    (runtime + the call cache in `out_dir/cache`). Returns {stage: summary}."""
    out_dir = os.fspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    path = {name: os.path.join(out_dir, f) for name, f in STAGE_FILES.items()}
    conf = config.to_dict()
    summaries: dict[str, dict[str, Any]] = {}

    def source() -> dict[str, Any]:
        if questions is None:
            good, bad = generate_questions(num_questions, seed), []
        else:
            good, bad = read_input(questions, _SOURCE_SPEC)
        write_jsonl(path["source"] + ".errors.jsonl", bad)
        write_jsonl(path["source"], good)
        by_domain = dict(sorted(Counter(r["domain"] for r in good).items()))
        return {"in": len(good) + len(bad), "out": len(good), "bad_records": len(bad),
                "out_by_domain": by_domain}  # fmt: skip

    def pure(stage: str, src: str, fn) -> Any:
        def go() -> dict[str, Any]:
            kept, stage_metrics = fn(read_jsonl(path[src]))
            write_jsonl(path[stage], kept)
            return stage_metrics

        return go

    def model(stage: str, src: str, extra, params: GenerationParams) -> Any:
        def go() -> dict[str, Any]:
            stage_input = path[stage] + ".input.jsonl"
            write_jsonl(stage_input, [{**r, **extra(r)} for r in read_jsonl(path[src])])
            report = run_pipeline(
                PIPELINE, stage_input, path[stage], backend, params=params,
                cache_dir=os.path.join(out_dir, "cache"), concurrency=concurrency,
                progress=progress,
            )  # fmt: skip
            if report.bad_records:  # the records come from an earlier stage: a bug if any
                raise ValueError(f"{stage}: bad records {report.bad_records}")
            return {**report.metrics, "calls": report.calls, "cache_hits": report.cache_hits}

        return go

    def filter_fields(r: Record) -> dict[str, Any]:
        return {"stage": "filter", "filter": config.method(r["domain"])}

    def answer_fields(r: Record) -> dict[str, Any]:
        return {"stage": "answers", "n_answers": config.n_answers}

    def mix_records(records: list[Record]) -> tuple[list[Record], dict[str, Any]]:
        return mix(records, config.ranking, config.sources_per_domain)

    def sharegpt_rows(records: list[Record]) -> tuple[list[Record], dict[str, Any]]:
        return to_sharegpt(_strip_stage(records))

    def scores_to_rows(scored: list[Record]) -> tuple[list[Record], dict[str, Any]]:
        kept, stage_metrics = select(scored, config.keep_fraction)
        rows = []
        for r in kept:
            rated = r.pop("rated_difficulty")
            for k in ("filter_score", "filter_parse", "filter_response", "filter", "stage"):
                r.pop(k, None)
            rows.append({**r, "difficulty": rated if rated is not None else r.get("difficulty")})
        return rows, stage_metrics

    source_key = {"questions": _sha256(questions), "num_questions": num_questions, "seed": seed}
    steps = [  # (stage, config fields it depends on, input stage or fingerprint, run)
        ("source", (), source_key, source),
        ("mix", ("ranking", "sources_per_domain"), "source", pure("mix", "source", mix_records)),
        ("filter_scores", ("filter_method", "filter_params"), "mix",
         model("filter_scores", "mix", filter_fields, config.filter_params)),
        ("filter", ("keep_fraction",), "filter_scores",
         pure("filter", "filter_scores", scores_to_rows)),
        ("dedup", (), "filter", pure("dedup", "filter", exact_dedup)),
        ("answers", ("n_answers", "answer_params"), "dedup",
         model("answers", "dedup", answer_fields, config.answer_params)),
        ("sharegpt", (), "answers", pure("sharegpt", "answers", sharegpt_rows)),
    ]  # fmt: skip
    for stage, fields, key, go in steps:
        if isinstance(key, str):  # the previous stage's output file
            key = {"input_sha256": _sha256(path[key])}
        fingerprint = {"stage": stage, **{f: conf[f] for f in fields}, **key}
        summaries[stage] = _run_stage(path[stage], fingerprint, go)
    return summaries


def _strip_stage(records: list[Record]) -> list[Record]:
    return [{k: v for k, v in r.items() if k not in ("stage", "n_answers")} for r in records]


def _sha256(path: str | os.PathLike | None) -> str | None:
    if path is None:
        return None
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _run_stage(out_path: str, fingerprint: dict[str, Any], go) -> dict[str, Any]:
    """Skips a stage that finished with the same fingerprint; otherwise runs it (removing an
    output left by a different fingerprint, resuming one left by the same) and records it."""
    marker = out_path + ".stage.json"
    state = json.load(open(marker)) if os.path.exists(marker) else {}
    if state.get("fingerprint") == fingerprint and os.path.exists(out_path):
        if state.get("status") == "finished":
            return {**state["summary"], "skipped": True}
    elif os.path.exists(out_path):
        os.remove(out_path)  # a different config or input: start over (the call cache stays)
    _write_json(marker, {"fingerprint": fingerprint, "status": "running"})
    summary = go()
    _write_json(out_path + ".metrics.json", summary)
    _write_json(marker, {"fingerprint": fingerprint, "status": "finished", "summary": summary})
    return {**summary, "skipped": False}


def _write_json(path: str, data: Any) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2, sort_keys=True)
    os.replace(tmp, path)
