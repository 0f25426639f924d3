"""Run a model-driven pipeline over a JSONL file; running the same command again resumes.

    python launch/pipeline.py --pipeline=prompt --input=prompts.jsonl --out=runs/p/out.jsonl \
        --backend=engine:runs/smollm2               # or engine:model.gguf
    python launch/pipeline.py --pipeline=prompt --input=prompts.jsonl --out=runs/p/out.jsonl \
        --backend=openai:http://127.0.0.1:8000/v1,model=smollm2 --concurrency=8 --limit=100

Writes `<out>` (one line per record, in input order), `<out>.errors.jsonl` (bad input
records with file:line), `<out>.manifest.json`, and the call cache in `<out>.cache/` (so a
rerun repeats no model call). Pipelines: `jaxmm/pipelines/<name>.py`.
"""

import json

from absl import flags

from jaxmm import cli, pipelines
from jaxmm.generate.backend_spec import backend_from_spec
from jaxmm.generate.backends import BackendError
from jaxmm.generate.params import GenerationParams
from jaxmm.pipelines.runtime import run_pipeline

_PIPELINE = flags.DEFINE_string("pipeline", None, "Pipeline name (a module in jaxmm/pipelines).")
_INPUT = flags.DEFINE_string("input", None, "Input JSONL, one record per line with an 'id'.")
_OUT = flags.DEFINE_string("out", None, "Output JSONL (resumed if it exists).")
_BACKEND = flags.DEFINE_string("backend", None, "engine:<model> or openai:<url>[,model=NAME]")
_LIMIT = flags.DEFINE_integer("limit", None, "Only the first N valid records.")
_CONCURRENCY = flags.DEFINE_integer("concurrency", 4, "Records in flight at once.")
_MAX_TOKENS = flags.DEFINE_integer("max_tokens", 256, "Generated tokens per model call.")
_TEMPERATURE = flags.DEFINE_float("temperature", 0.0, "0 = greedy.")
_SEED = flags.DEFINE_integer("seed", None, "Sampling seed (part of the call-cache key).")
_CACHE = flags.DEFINE_string("cache_dir", None, "Call cache folder (default <out>.cache).")
_PROGRESS = flags.DEFINE_bool("progress", True, "Show a progress bar.")


def main(argv) -> None:
    del argv
    pipeline = pipelines.get(_PIPELINE.value)
    backend = backend_from_spec(_BACKEND.value)
    params = GenerationParams(
        max_tokens=_MAX_TOKENS.value, temperature=_TEMPERATURE.value, seed=_SEED.value
    )
    report = run_pipeline(
        pipeline,
        _INPUT.value,
        _OUT.value,
        backend,
        params=params,
        cache_dir=_CACHE.value,
        concurrency=_CONCURRENCY.value,
        limit=_LIMIT.value,
        progress=_PROGRESS.value,
    )
    for bad in report.bad_records:
        print(f"bad input record: {bad['error']}")
    summary = {k: getattr(report, k) for k in ("total", "done_before", "written", "calls")}
    if report.metrics:
        print("metrics: " + json.dumps(report.metrics, sort_keys=True))
    print(json.dumps(summary | {"cache_hits": report.cache_hits, "bad": len(report.bad_records)}))


if __name__ == "__main__":
    cli.run(
        main,
        config=False,
        required=["pipeline", "input", "out", "backend"],
        errors=(FileNotFoundError, ValueError, BackendError),
    )
