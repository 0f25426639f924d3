"""MEXA (arXiv 2506.17113) on multiple-choice questions: the `mexa` pipeline next to the
paper's baseline (the same model answering without experts) in one run, resumable.

    python -m jaxmm.data.movies_mcq --out runs/mexa/data --n 10 --seed 0
    python launch/mexa.py --data_dir=runs/mexa/data --out_dir=runs/mexa/smollm2 \\
        --experts=A1=precomputed,A2=precomputed,A3=precomputed \\
        --backend=engine:"$(python -c 'from jaxmm.models.gguf import \\
        default_instruct_model as m; print(m())')",max_seq_len=2048,max_batch=4 --concurrency=4

`--data_dir` holds `questions.jsonl` (records of the `mexa` pipeline; `jaxmm.data.movies_mcq`
writes one about procedural movies with known answers), or pass `--questions`, or
`--annotations=<file> --task_type=mmau` for a benchmark's annotation items
(`jaxmm.data.mcq_annotations`). Writes `<out_dir>/input.jsonl` (one record per (question,
mode), id `<qid>/<mode>`), `out.jsonl`, `out.jsonl.metrics.json`, `.manifest.json`, the call
cache `out.jsonl.cache/` and `table.md`.
A rerun resumes and repeats no model call. See docs/mexa.md.
"""

import json
import os

from absl import flags

from jaxmm import cli
from jaxmm.data.expert_files import ExpertFileError
from jaxmm.data.mcq_annotations import AnnotationError, load_annotations
from jaxmm.generate.backend_spec import backend_from_spec
from jaxmm.generate.backends import BackendError
from jaxmm.generate.params import GenerationParams
from jaxmm.io.jsonl import read_jsonl, write_jsonl
from jaxmm.pipelines import mexa
from jaxmm.pipelines.mexa_experts import KINDS
from jaxmm.pipelines.runtime import run_pipeline

_DATA = flags.DEFINE_string("data_dir", None, "Folder with questions.jsonl (movies_mcq).")
_QUESTIONS = flags.DEFINE_string("questions", None, "A questions JSONL (default: data_dir's).")
_ANNOTATIONS = flags.DEFINE_string(
    "annotations", None, "A benchmark's JSON/JSONL annotation file instead (options|choices)."
)
_TASK_TYPE = flags.DEFINE_string("task_type", None, "Task type of --annotations, e.g. mmau.")
_EXPERT_DIR = flags.DEFINE_string(
    "expert_dir", None, "Precomputed expert files for records that name none."
)
_OUT = flags.DEFINE_string("out_dir", None, "Output folder (resumed if it exists).")
_BACKEND = flags.DEFINE_string("backend", None, "engine:<model>[,...] or openai:<url>[,model=]")
_MODES = flags.DEFINE_list("modes", list(mexa.MODES), f"Of {list(mexa.MODES)}.")
_EXPERTS = flags.DEFINE_list(
    "experts", [], f"Per-skill expert kind overrides, e.g. A1=precomputed; kinds {list(KINDS)}."
)
_SKILLS = flags.DEFINE_string(
    "skills", None, "Skip the router: the same skills for every question, e.g. 'A1, B1'."
)
_SKILLS_FILE = flags.DEFINE_string(
    "skills_file", None, "Skip the router: JSON {question id: 'A1, B1'} (the release's layout)."
)
_FRAMES = flags.DEFINE_integer("frame_budget", 8, "Frames for the router and VLM experts.")
_LIMIT = flags.DEFINE_integer("limit", None, "First N questions.")
_MAX_TOKENS = flags.DEFINE_integer("max_tokens", 24, "Tokens per router / aggregator answer.")
_CONCURRENCY = flags.DEFINE_integer("concurrency", 4, "Records in flight.")
_PROGRESS = flags.DEFINE_bool("progress", True, "Show a progress bar.")


def build_records(
    questions: list[dict],
    modes,
    experts: dict[str, str],
    frame_budget: int,
    skills: dict[str, str] | None = None,
):
    """One record per (question, mode), id `<qid>/<mode>`, expert overrides merged in;
    `skills` (question id -> router output) replaces the router call."""
    out = []
    for q in questions:
        for mode in modes:
            rec = {**q, "id": f"{q['id']}/{mode}", "mode": mode, "frame_budget": frame_budget}
            if experts:
                rec["experts"] = {**q.get("experts", {}), **experts}
            if skills is not None and mode == "mexa":
                if str(q["id"]) not in skills:
                    raise ValueError(f"--skills_file has no entry for question {q['id']!r}")
                rec["skills"] = skills[str(q["id"])]
            out.append(rec)
    return out


def table(metrics: dict[str, float], modes) -> str:
    head = "| mode | questions | accuracy | chance | unparsed | per category |\n"
    rows = [head + "|---|---|---|---|---|---|"]
    for mode in modes:
        p = f"{mode}/"
        if p + "accuracy" not in metrics:
            continue
        cats = ", ".join(
            f"{k[len(p) + 9 : -9]} {v:.2f}"
            for k, v in sorted(metrics.items())
            if k.startswith(p + "category=") and k.endswith("/accuracy")
        )
        rows.append(
            f"| {mode} | {metrics[p + 'questions']:.0f} | {metrics[p + 'accuracy']:.3f} | "
            f"{metrics[p + 'chance']:.3f} | {metrics[p + 'unparsed_rate']:.3f} | {cats} |"
        )
    return "\n".join(rows) + "\n"


def main(argv) -> None:
    del argv
    for m in _MODES.value:
        if m not in mexa.MODES:
            raise ValueError(f"--modes: unknown mode {m!r}; known: {list(mexa.MODES)}")
    experts = dict(e.split("=", 1) for e in _EXPERTS.value if "=" in e)
    if len(experts) != len(_EXPERTS.value):
        raise ValueError(f"--experts: expected SKILL=KIND items, got {_EXPERTS.value}")
    mexa.validate({"question": "q", "options": ["a", "b"], "experts": experts})  # before loading
    if _ANNOTATIONS.value:
        if not _TASK_TYPE.value:
            raise ValueError("--annotations needs --task_type (e.g. video_mmmu, mmau, m3d)")
        questions, skipped = load_annotations(_ANNOTATIONS.value, _TASK_TYPE.value)
        print(f"{len(questions)} multiple-choice items, {skipped} open-ended skipped")
    else:
        path = _QUESTIONS.value or os.path.join(_DATA.value or "", "questions.jsonl")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"questions file {path!r} does not exist (--data_dir)")
        questions = read_jsonl(path)
    questions = questions[: _LIMIT.value]
    if _EXPERT_DIR.value:
        questions = [{"expert_dir": _EXPERT_DIR.value, **q} for q in questions]
    skills = None
    if _SKILLS_FILE.value:
        with open(_SKILLS_FILE.value, encoding="utf-8") as f:
            skills = {str(k): v for k, v in json.load(f).items()}
    elif _SKILLS.value:
        skills = {str(q["id"]): _SKILLS.value for q in questions}
    backend = backend_from_spec(_BACKEND.value)
    os.makedirs(_OUT.value, exist_ok=True)
    inp = os.path.join(_OUT.value, "input.jsonl")
    write_jsonl(inp, build_records(questions, _MODES.value, experts, _FRAMES.value, skills))
    report = run_pipeline(
        mexa.PIPELINE,
        inp,
        os.path.join(_OUT.value, "out.jsonl"),
        backend,
        params=GenerationParams(max_tokens=_MAX_TOKENS.value, temperature=0.0),
        concurrency=_CONCURRENCY.value,
        progress=_PROGRESS.value,
    )
    if report.bad_records:
        print(f"{len(report.bad_records)} bad records: see {report.out_path}.errors.jsonl")
    text = table(report.metrics, _MODES.value)
    with open(os.path.join(_OUT.value, "table.md"), "w") as f:
        f.write(text)
    print(text)
    print(
        json.dumps(
            {
                "written": report.written,
                "model_calls": report.calls,
                "cache_hits": report.cache_hits,
                "seconds": round(report.seconds, 1),
            }
        )
    )


if __name__ == "__main__":
    cli.run(
        main,
        config=False,
        required=["out_dir", "backend"],
        errors=(FileNotFoundError, ValueError, BackendError, ExpertFileError, AnnotationError),
    )
