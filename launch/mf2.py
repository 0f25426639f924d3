"""MF² (arXiv 2506.06275) on a release folder: build one record per (setting, style, claim
pair), run the `mf2` pipeline (resumable, every model call cached), print the table.

    python -m jaxmm.data.movies_synth --out runs/mf2/data --n 10 --seed 0
    python launch/mf2.py --data_dir=runs/mf2/data --out_dir=runs/mf2/smollm2 \\
        --settings=statement,transcripts,synopsis --styles=direct,explanation \\
        --backend=engine:"$(python -c 'from jaxmm.models.gguf import \\
        default_instruct_model as m; print(m())')",max_seq_len=1024,max_batch=8 --concurrency=4

Writes `<out_dir>/input.jsonl` (the records, context inline), `<out_dir>/out.jsonl` (answers,
verdicts of every parser, correct), `out.jsonl.metrics.json`, `.manifest.json`, the call
cache `out.jsonl.cache/`, and `table.md`. Video settings need a backend that takes images
(`engine:<model>,vision=tiny_random` for a random tower, orchestration only, or
`openai:<url>,images=true`); with any other they stop before any model call. See docs/video.md.
"""

import json
import os

from absl import flags

from jaxmm import cli
from jaxmm.data.video import SubtitleError, VideoError
from jaxmm.eval.mf2 import CHANCE, MF2DataError
from jaxmm.generate.backend_spec import backend_from_spec
from jaxmm.generate.backends import BackendError
from jaxmm.generate.params import GenerationParams
from jaxmm.io.jsonl import write_jsonl
from jaxmm.pipelines import mf2
from jaxmm.pipelines.runtime import run_pipeline

_DATA = flags.DEFINE_string("data_dir", None, "MF² release folder (metadata.csv, subtitles/ ...).")
_OUT = flags.DEFINE_string("out_dir", None, "Output folder (resumed if it exists).")
_BACKEND = flags.DEFINE_string("backend", None, "engine:<model>[,...] or openai:<url>[,model=]")
_SETTINGS = flags.DEFINE_list("settings", list(mf2.TEXT_SETTINGS), f"Of {list(mf2.SETTINGS)}.")
_STYLES = flags.DEFINE_list("styles", ["direct", "explanation"], f"Of {list(mf2.STYLES)}.")
_FRAMES = flags.DEFINE_integer("frame_budget", 8, "Frames per claim in video settings.")
_PAIRS = flags.DEFINE_integer("max_pairs_per_movie", None, "First N pairs of each movie.")
_MAX_TOKENS = flags.DEFINE_integer(
    "max_tokens", 0, "Tokens per answer; 0: 16 for direct styles, 128 with explanations."
)
_CONCURRENCY = flags.DEFINE_integer("concurrency", 4, "Records in flight (2 calls each).")
_PROGRESS = flags.DEFINE_bool("progress", True, "Show a progress bar.")


def table(metrics: dict[str, float], settings, styles) -> str:
    head = "| setting | style | pairs | pairwise acc. | per-movie acc. | TPR | TNR | none |\n"
    rows = [head + "|---|---|---|---|---|---|---|---|"]
    for setting in settings:
        for style in styles:
            p = f"{setting}/{style}/"
            if p + "pairwise_accuracy" not in metrics:
                continue
            get = lambda k, p=p: metrics[p + k]
            rows.append(
                f"| {setting} | {style} | {get('pairs'):.0f} | {get('pairwise_accuracy'):.3f} | "
                f"{get('movie_pairwise_accuracy'):.3f} | {get('tpr'):.3f} | {get('tnr'):.3f} | "
                f"{get('none_rate'):.3f} |"
            )
    return "\n".join(rows) + f"\n\nchance (pairwise): {CHANCE:.2f}\n"


def main(argv) -> None:
    del argv
    backend = backend_from_spec(_BACKEND.value)
    video = [s for s in _SETTINGS.value if mf2.uses(s)[2]]
    if video:
        mf2.require_images(backend, video)
    records = mf2.build_records(
        _DATA.value,
        _SETTINGS.value,
        _STYLES.value,
        frame_budget=_FRAMES.value,
        max_pairs_per_movie=_PAIRS.value,
    )
    os.makedirs(_OUT.value, exist_ok=True)
    metrics: dict[str, float] = {}
    calls = hits = 0
    for style in _STYLES.value:  # one file per style: each has its own token budget
        explains = style.startswith("explanation")
        tokens = _MAX_TOKENS.value or (128 if explains else 16)
        inp = os.path.join(_OUT.value, f"input.{style}.jsonl")
        write_jsonl(inp, [r for r in records if r["style"] == style])
        report = run_pipeline(
            mf2.PIPELINE,
            inp,
            os.path.join(_OUT.value, f"out.{style}.jsonl"),
            backend,
            params=GenerationParams(max_tokens=tokens, temperature=0.0),
            cache_dir=os.path.join(_OUT.value, "cache"),
            concurrency=_CONCURRENCY.value,
            progress=_PROGRESS.value,
        )
        metrics |= report.metrics
        calls, hits = calls + report.calls, hits + report.cache_hits
        print(f"{style}: {report.written} records written in {report.seconds:.0f} s")
    text = table(metrics, _SETTINGS.value, _STYLES.value)
    with open(os.path.join(_OUT.value, "table.md"), "w") as f:
        f.write(text)
    print(text)
    print(json.dumps({"model_calls": calls, "cache_hits": hits}))


if __name__ == "__main__":
    cli.run(
        main,
        config=False,
        required=["data_dir", "out_dir", "backend"],
        errors=(
            FileNotFoundError,
            ValueError,
            BackendError,
            MF2DataError,
            VideoError,
            SubtitleError,
        ),
    )
