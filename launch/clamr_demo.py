"""CLaMR demo: generate the procedural corpus, train each retriever variant for the same step
budget with the shared trainer, evaluate on the test split, print one table.

    python launch/clamr_demo.py --workdir=runs/clamr_demo --steps=200
    python launch/clamr_demo.py --workdir=runs/clamr_demo_clean --steps=200 --corpus=clean

Rows: the full method (joint encoding + modality-max + modality-aware loss); each single
modality (the full model scored on that modality's tokens only); the non-contextualised
ablation (one encoder pass per modality); plain token-max MaxSim; a mean-pooled single-vector
retriever; contrastive-only training. Re-running in the same workdir resumes / re-evaluates.
"""

from __future__ import annotations

import json
import os
import time

from absl import flags

from jaxmm import cli
from jaxmm.data import clamr_synth
from jaxmm.data.multivent import MODALITIES
from jaxmm.tasks.clamr import ClamrTask
from jaxmm.train import trainer

_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_CONFIG = os.path.join(_REPO_ROOT, "configs", "clamr.py:tiny")
_WORKDIR = flags.DEFINE_string("workdir", "runs/clamr_demo", "Output folder.")
_STEPS = flags.DEFINE_integer("steps", 200, "Training steps per variant (tiny's num_steps).")
_ROWS = flags.DEFINE_list("rows", [], "Subset of variants to train (default: all).")
_CORPUS = flags.DEFINE_enum(
    "corpus", "noisy", ["noisy", "clean"], "Procedural corpus: noisy (default) or the clean one."
)

# --corpus=clean: the corpus without clutter / distractors and its smaller token budgets (the
# settings of the demo table measured before the noisy corpus existed).
CLEAN = {
    "data.synth_noise": False,
    "data.budget_ocr": 8,
    "data.budget_asr": 20,
    "data.budget_description": 16,
}

# name -> config overrides (on top of configs/clamr.py:tiny).
VARIANTS: dict[str, dict[str, object]] = {
    "full": {"loss.objective": "modality_aware", "data.eval_per_modality": True},
    "non_contextualised": {"model.contextualized": False},
    "token_max": {"loss.scoring": "token_max", "loss.objective": "contrastive"},
    "mean_pooled": {
        "model.pooling": "mean",
        "loss.scoring": "token_max",
        "loss.objective": "contrastive",
    },
    "contrastive_only": {"loss.objective": "contrastive"},
}
COLUMNS = ("ndcg@10", "recall@1", "recall@5", "recall@10", "modality_acc")


def _base_config():
    c = cli.load_config(_CONFIG, [])
    for key, value in (CLEAN if _CORPUS.value == "clean" else {}).items():
        section, field = key.split(".")
        c[section][field] = value
    return c


def _config(name: str, data_dir: str, steps: int):
    c = _base_config()
    c.num_steps = steps
    c.optimizer.warmup_steps = min(c.optimizer.warmup_steps, steps)
    c.data.data_dir = data_dir
    c.checkpoint.every_steps = steps
    for key, value in VARIANTS[name].items():
        section, field = key.split(".")
        c[section][field] = value
    return c


def _row(label: str, metrics: dict[str, float], prefix: str = "eval/") -> str:
    cells = []
    for col in COLUMNS:
        value = metrics.get(prefix + col)
        cells.append("–" if value is None else f"{100 * value:.1f}")
    return f"| {label} | " + " | ".join(cells) + " |"


def main(argv) -> None:
    del argv
    t0 = time.time()
    workdir = _WORKDIR.value
    data_dir = os.path.join(workdir, "data")
    if not os.path.isfile(os.path.join(data_dir, "test.jsonl")):
        base = _base_config().data
        clamr_synth.generate(
            data_dir,
            splits={"train": base.train_groups, "test": base.test_groups},
            seed=base.seed,
            n_frames=base.num_frames,
            frame_size=base.synth_frame_size,
            noise=base.synth_noise,
        )
    results: dict[str, dict[str, float]] = {}
    timings: dict[str, float] = {}
    for name in _ROWS.value or list(VARIANTS):
        t = time.time()
        cfg = _config(name, data_dir, _STEPS.value)
        result = trainer.train(cfg, os.path.join(workdir, name), ClamrTask(cfg))
        results[name] = result.eval_metrics
        timings[name] = time.time() - t
        print(f"[{name}] {timings[name]:.0f}s", json.dumps(result.eval_metrics), flush=True)

    header = "| retriever | nDCG@10 | R@1 | R@5 | R@10 | modality acc |"
    lines = [header, "|---|---|---|---|---|---|"]
    labels = {
        "full": "CLaMR full (joint + modality-max + modality-aware loss)",
        "non_contextualised": "non-contextualised (one pass per modality, concatenated)",
        "token_max": "plain token-max MaxSim (contrastive)",
        "mean_pooled": "mean-pooled single vector (contrastive)",
        "contrastive_only": "joint + modality-max, contrastive loss only",
    }
    for name, metrics in results.items():
        lines.append(_row(labels[name], metrics))
        if name == "full":
            for m in MODALITIES:
                lines.append(_row(f"single modality: {m} only", metrics, f"eval/only_{m}/"))
    table = "\n".join(lines)
    print(table)
    with open(os.path.join(workdir, "table.md"), "w") as f:
        f.write(table + "\n")
    with open(os.path.join(workdir, "results.json"), "w") as f:
        json.dump({"metrics": results, "seconds": timings}, f, indent=2)
    print(
        f"total wall time {time.time() - t0:.0f}s; steps per variant {_STEPS.value}; "
        f"corpus {_CORPUS.value}"
    )


if __name__ == "__main__":
    cli.run(main, config=False)
