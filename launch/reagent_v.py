"""ReAgent-V (arXiv 2506.01300) vs its baseline on procedural video questions, in one job:
build the records (each question once per mode), run the `reagent_v` pipeline (resumable,
every model call cached), write the reward-selected SFT / DPO / GRPO files, print the table.

    python -m jaxmm.data.reagent_synth --out runs/reagent/data --n 10 --seed 0
    python launch/reagent_v.py --data_dir=runs/reagent/data --out_dir=runs/reagent/smollm2 \\
        --backend=engine:"$(python -c 'from jaxmm.models.gguf import \\
        default_instruct_model as m; print(m())')",max_seq_len=2048,max_batch=8 --concurrency=4

`--data_dir` is generated (`--n` clips, `--seed`) when it has no `questions.jsonl`. Writes
`<out_dir>/input.jsonl`, `out.jsonl` (+ `.metrics.json`, `.manifest.json`, `.cache/`),
`train_data/{sft,dpo,grpo}.jsonl` and `table.md`. A rerun resumes and repeats no call.
Frames reach a text-only model as their captions (see jaxmm/pipelines/reagent_v.py).
`--similarity=siglip --siglip_dir=<folder>` scores frames against the question with a SigLIP
checkpoint (image and text towers) instead of the caption embeddings.
"""

import json
import os

from absl import flags

from jaxmm import cli
from jaxmm.data import reagent_synth
from jaxmm.data.video import SubtitleError, VideoError
from jaxmm.generate.backend_spec import backend_from_spec
from jaxmm.generate.backends import BackendError
from jaxmm.generate.params import GenerationParams
from jaxmm.io.jsonl import read_jsonl, write_jsonl
from jaxmm.pipelines import reagent_data, reagent_v
from jaxmm.pipelines.runtime import run_pipeline

_DATA = flags.DEFINE_string("data_dir", None, "Folder with questions.jsonl (made if missing).")
_OUT = flags.DEFINE_string("out_dir", None, "Output folder (resumed if it exists).")
_BACKEND = flags.DEFINE_string("backend", None, "engine:<model>[,...] or openai:<url>[,model=]")
_N = flags.DEFINE_integer("n", 10, "Clips to generate when data_dir has none (3 questions each).")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the generated clips.")
_MODES = flags.DEFINE_list("modes", list(reagent_v.MODES), f"Of {list(reagent_v.MODES)}.")
_MIN_FRAMES = flags.DEFINE_integer("min_frames", 32, "ECRS top-up target = baseline frames.")
_SIMILARITY = flags.DEFINE_enum(
    "similarity", "captions", list(reagent_v.SIMILARITIES), "ECRS frame-question similarity."
)
_SIGLIP_DIR = flags.DEFINE_string(
    "siglip_dir",
    None,
    "Hugging Face SigLIP folder (config.json, safetensors, tokenizer) for --similarity=siglip.",
)
_LIMIT = flags.DEFINE_integer("limit", None, "Only the first N questions.")
_MAX_TOKENS = flags.DEFINE_integer("max_tokens", 160, "Cap per call (each step has its own).")
_CONCURRENCY = flags.DEFINE_integer("concurrency", 4, "Records in flight.")
_PROGRESS = flags.DEFINE_bool("progress", True, "Show a progress bar.")


def table(m: dict[str, float]) -> str:
    rows = [
        "| mode | questions | accuracy | initial acc. | frames (mean) | reward initial / "
        "final (parsed) |",
        "|---|---|---|---|---|---|",
    ]
    for mode in reagent_v.MODES:
        p = f"{mode}/"
        if p + "records" not in m:
            continue
        fmt = lambda k, p=p: f"{m[p + k]:.3f}" if p + k in m else "-"
        rewards = (
            f"{fmt('reward_initial_mean')} ({m.get(p + 'reward_initial_parsed', 0):.0f}) / "
            f"{fmt('reward_final_mean')} ({m.get(p + 'reward_final_parsed', 0):.0f})"
            if mode == "reagent"
            else "-"
        )
        rows.append(
            f"| {mode} | {m[p + 'records']:.0f} | {fmt('accuracy')} | {fmt('initial_accuracy')}"
            f" | {m[p + 'frames_mean']:.1f} | {rewards} |"
        )
    errors = {k: v for k, v in m.items() if "/errors/" in k or "/merge/" in k}
    return "\n".join(rows) + "\n\n" + json.dumps(errors, indent=1, sort_keys=True) + "\n"


def key_frames_seen(records: list[dict], outputs: list[dict]) -> str:
    """Per mode, the fraction of questions whose key frames (`event_frames`, in generated
    records) include at least one shown frame: can the answer be seen at all?"""
    events = {r["id"]: set(r["event_frames"]) for r in records if "event_frames" in r}
    lines = []
    for mode in reagent_v.MODES:
        rows = [o for o in outputs if o["mode"] == mode and o["id"] in events]
        if rows:
            seen = sum(bool(events[o["id"]] & set(o["frames"])) for o in rows) / len(rows)
            lines.append(f"{mode}: key frame shown for {seen:.3f} of {len(rows)} questions")
    return "\n".join(lines) + "\n" if lines else ""


def main(argv) -> None:
    del argv
    questions = os.path.join(_DATA.value, "questions.jsonl")
    if not os.path.exists(questions):
        reagent_synth.write_dataset(_DATA.value, _N.value, _SEED.value)
    similarities = {"captions": reagent_v.caption_similarity}
    if _SIMILARITY.value == "siglip":
        if not _SIGLIP_DIR.value:
            raise ValueError("--similarity=siglip needs --siglip_dir=<SigLIP folder>")
        similarities["siglip"] = reagent_v.siglip_similarity(_SIGLIP_DIR.value)
    base = read_jsonl(questions)[: _LIMIT.value]
    for mode in _MODES.value:
        if mode not in reagent_v.MODES:
            raise ValueError(f"--modes: unknown mode {mode!r}; known: {list(reagent_v.MODES)}")
    records = [
        q
        | {
            "id": f"{q['id']}/{mode}",
            "mode": mode,
            "min_frames": _MIN_FRAMES.value,
            "similarity": _SIMILARITY.value,
        }
        for q in base
        for mode in _MODES.value
    ]
    os.makedirs(_OUT.value, exist_ok=True)
    inp = os.path.join(_OUT.value, "input.jsonl")
    write_jsonl(inp, records)
    backend = backend_from_spec(_BACKEND.value)
    out = os.path.join(_OUT.value, "out.jsonl")
    report = run_pipeline(
        reagent_v.make_pipeline(similarities),
        inp,
        out,
        backend,
        params=GenerationParams(max_tokens=_MAX_TOKENS.value, temperature=0.0),
        concurrency=_CONCURRENCY.value,
        progress=_PROGRESS.value,
    )
    counts = reagent_data.write_training_data(
        read_jsonl(out), os.path.join(_OUT.value, "train_data")
    )
    text = table(report.metrics) + key_frames_seen(records, read_jsonl(out))
    with open(os.path.join(_OUT.value, "table.md"), "w") as f:
        f.write(text)
    print(text)
    print(
        json.dumps(
            {
                "model_calls": report.calls,
                "cache_hits": report.cache_hits,
                "seconds": round(report.seconds, 1),
                "train_data": counts,
            }
        )
    )


if __name__ == "__main__":
    cli.run(
        main,
        config=False,
        required=["data_dir", "out_dir", "backend"],
        errors=(FileNotFoundError, ValueError, BackendError, VideoError, SubtitleError),
    )
