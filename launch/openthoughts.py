"""OpenThoughts data curation (arXiv 2506.04178): all six stages into one folder; running the
same command again skips finished stages and resumes an interrupted one.

    # 20 generated questions, 2 teacher answers each, the real SmolLM2 in process (CPU)
    python launch/openthoughts.py --out_dir=runs/ot --num_questions=20 --n_answers=2 \\
        --max_tokens=96 --concurrency=1 \\
        --backend=engine:"$(python -c 'from jaxmm.models.gguf import \\
        default_instruct_model as m; print(m())')",max_seq_len=512,max_batch=1
    # a question file ({"id", "domain", "source", "question", "difficulty"?} per line) and a
    # teacher behind an OpenAI-compatible server
    python launch/openthoughts.py --out_dir=runs/ot --questions=questions.jsonl \\
        --backend=openai:http://127.0.0.1:8000/v1,model=qwq-32b --n_answers=16

Writes 01_source.jsonl ... 06_sharegpt.jsonl (the sharegpt rows), each with `.metrics.json`
and `.stage.json`; model stages also `.manifest.json`, `.errors.jsonl`, and the shared call
cache `cache/`. See docs/pipelines.md, "OpenThoughts data curation".
"""

import json

from absl import flags

from jaxmm import cli
from jaxmm.data.reasoning_questions import SOURCE_RANKING
from jaxmm.generate.backend_spec import backend_from_spec
from jaxmm.generate.backends import BackendError
from jaxmm.generate.params import GenerationParams
from jaxmm.pipelines.openthoughts import CurationConfig, run_openthoughts

_OUT_DIR = flags.DEFINE_string("out_dir", None, "Folder for every stage's files.")
_BACKEND = flags.DEFINE_string(
    "backend", None, "engine:<model>[,max_seq_len=N,max_batch=N] or openai:<url>[,model=NAME]"
)
_QUESTIONS = flags.DEFINE_string("questions", None, "Question JSONL (default: generated).")
_NUM = flags.DEFINE_integer("num_questions", 24, "Generated questions (without --questions).")
_SEED = flags.DEFINE_integer("seed", 0, "Question generator seed and first sampling seed.")
_RANKING = flags.DEFINE_string(
    "ranking", None, "JSON {domain: [sources best first]} (default: the generator's ranking)."
)
_PER_DOMAIN = flags.DEFINE_integer("sources_per_domain", 2, "Best sources kept per domain.")
_FILTER = flags.DEFINE_enum(
    "filter", "auto", ["auto", "difficulty", "length"], "auto: code by difficulty, else length."
)
_KEEP = flags.DEFINE_float("keep_fraction", 0.5, "Fraction kept per domain by the filter.")
_N = flags.DEFINE_integer("n_answers", 16, "Teacher answers per question.")
_MAX_TOKENS = flags.DEFINE_integer(
    "max_tokens", 1024, "Tokens per model call (ratings and length probes greedy, answers sampled)."
)
_TEMPERATURE = flags.DEFINE_float("temperature", 0.7, "Answer sampling temperature.")
_CONCURRENCY = flags.DEFINE_integer("concurrency", 4, "Records in flight at once.")
_PROGRESS = flags.DEFINE_bool("progress", True, "Show progress bars.")


def main(argv) -> None:
    del argv
    ranking = json.loads(_RANKING.value) if _RANKING.value else SOURCE_RANKING
    config = CurationConfig(
        ranking=ranking,
        sources_per_domain=_PER_DOMAIN.value,
        filter_method=_FILTER.value,
        keep_fraction=_KEEP.value,
        n_answers=_N.value,
        filter_params=GenerationParams(max_tokens=_MAX_TOKENS.value),
        answer_params=GenerationParams(
            max_tokens=_MAX_TOKENS.value, temperature=_TEMPERATURE.value, seed=_SEED.value
        ),
    )
    backend = backend_from_spec(_BACKEND.value)
    summaries = run_openthoughts(
        _OUT_DIR.value,
        backend,
        config,
        questions=_QUESTIONS.value,
        num_questions=_NUM.value,
        seed=_SEED.value,
        concurrency=_CONCURRENCY.value,
        progress=_PROGRESS.value,
    )
    for stage, summary in summaries.items():
        print(f"{stage}: {json.dumps(summary, sort_keys=True)}")


if __name__ == "__main__":
    cli.run(
        main,
        config=False,
        required=["out_dir", "backend"],
        errors=(FileNotFoundError, ValueError, BackendError),
    )
