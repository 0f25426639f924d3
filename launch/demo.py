"""`make demo`: the main job, end to end, on whatever machine runs it (CPU is fine).

Default (`--job=lrm4d`): trains `configs/lrm4d.py:tiny` on procedural 4D scenes, evaluates
held-out objects at novel view-time pairs under the paper's three camera setups next to two
baselines measured in the same run (nearest input view; mean colour; the model rendered with
the paper's inference filters) and writes metrics.json, a turntable/time-sweep GIF/MP4/PNG and
a PLY into the workdir (see docs/lrm4d.md). LPIPS is reported too when `--lpips_weights` names
its weights (see `jaxmm.eval.lpips`).

`--job=toy`: trains the toy config half-way, resumes from its checkpoint as a preempted job
would, finishes and prints the final metrics (about 20 s).

    python launch/demo.py --workdir runs/demo
"""

import json
import os
import shutil
import time

from absl import flags

from jaxmm import cli, lrm4d, tasks
from jaxmm.eval.lpips import as_metric
from jaxmm.train import trainer

_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_WORKDIR = flags.DEFINE_string("workdir", "runs/demo", "Where the demo writes its outputs.")
_JOB = flags.DEFINE_enum("job", "lrm4d", ["lrm4d", "toy"], "Which demo to run.")
_LPIPS = flags.DEFINE_string(
    "lpips_weights", "", "LPIPS weights file(s), comma-separated; reports LPIPS when given."
)


def _config(name: str):
    return cli.load_config(os.path.join(_REPO_ROOT, "configs", name), [])


def toy_demo(workdir: str) -> dict:
    run_dir = os.path.join(workdir, "toy")
    shutil.rmtree(run_dir, ignore_errors=True)  # the demo owns this folder: start fresh
    config = _config("toy.py:tiny")
    total = config.num_steps
    t0 = time.perf_counter()
    with config.unlocked():
        config.num_steps = total // 2
    first = trainer.train(config, run_dir, tasks.build(config))
    print(
        f"[demo] trained {total // 2} steps, checkpoints: "
        f"{sorted(os.listdir(os.path.join(run_dir, 'checkpoints')))}"
    )
    with config.unlocked():
        config.num_steps = total
    second = trainer.train(config, run_dir, tasks.build(config))
    print(f"[demo] resumed from step {second.resumed_from} and finished {total} steps")
    report = {
        "experiment": "toy",
        "steps": total,
        "resumed_from": second.resumed_from,
        "eval_after_first_half": first.eval_metrics,
        "eval_final": second.eval_metrics,
        "train_final": second.train_metrics,
        "seconds": time.perf_counter() - t0,
    }
    with open(os.path.join(workdir, "metrics.json"), "w") as f:
        json.dump(report, f, indent=2, sort_keys=True)
    return report


def lrm4d_demo(workdir: str, lpips_weights: str | None, num_scenes: int = 8) -> dict:
    """Trains the tiny 4D-LRM from scratch in `workdir/lrm4d`, then evaluates every setup."""
    lpips = as_metric(lpips_weights)  # a bad weights file fails now, not after training
    run_dir = os.path.join(workdir, "lrm4d")
    shutil.rmtree(run_dir, ignore_errors=True)
    config = _config("lrm4d.py:tiny")
    with config.unlocked():
        config.eval.num_scenes = 0  # evaluated below with all setups
    t0 = time.perf_counter()
    result = trainer.train(config, run_dir, tasks.build(config))
    train_s = time.perf_counter() - t0
    report = lrm4d.evaluate_workdir(
        run_dir,
        setups=lrm4d.SETUPS,
        num_scenes=num_scenes,
        out_dir=workdir,
        filters=True,
        lpips_weights=lpips,
    )
    report["train_seconds"] = train_s
    report["train_final"] = result.train_metrics
    report["beats_baselines"] = all(
        report[s][f"model/{m}"] > max(report[s][f"nearest_view/{m}"], report[s][f"mean_colour/{m}"])
        for s in lrm4d.SETUPS
        for m in ("psnr", "ssim")
    )
    with open(os.path.join(workdir, "metrics.json"), "w") as f:
        json.dump(report, f, indent=2, sort_keys=True)
    print(lrm4d.format_table(report))
    return report


def main(argv):
    del argv
    os.makedirs(_WORKDIR.value, exist_ok=True)
    if _JOB.value == "toy":
        report = toy_demo(_WORKDIR.value)
        print(json.dumps(report, indent=2, sort_keys=True))
    else:
        report = lrm4d_demo(_WORKDIR.value, _LPIPS.value or None)
        if not report["beats_baselines"]:
            print("[demo] WARNING: the model did not beat both baselines on every setup")
    print(f"[demo] metrics written to {os.path.join(_WORKDIR.value, 'metrics.json')}")


if __name__ == "__main__":
    cli.run(main, config=False)
