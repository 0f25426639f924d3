"""`make demo`: the main job, end to end, on whatever machine runs it (CPU is fine).

Default (`--job=lrm4d`): trains the tiny 4D-LRM on procedural 4D scenes, evaluates held-out
objects at novel view-time pairs under the paper's three camera setups next to two baselines
measured in the same run (nearest input view; mean colour), and writes metrics.json, a
turntable/time-sweep GIF and a PLY into the workdir (see docs/lrm4d.md).

`--job=toy`: trains the toy config half-way, resumes from its checkpoint as a preempted job
would, finishes and prints the final metrics (about 20 s).

    python launch/demo.py --workdir runs/demo
"""

import json
import os
import shutil
import sys
import time

# Repo root replaces this script's folder on sys.path: launch/profile.py must not shadow
# the standard library's `profile` module (cProfile imports it, e.g. under transformers).
sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from absl import app, flags  # noqa: E402

_WORKDIR = flags.DEFINE_string("workdir", "runs/demo", "Where the demo writes its outputs.")
_JOB = flags.DEFINE_enum("job", "lrm4d", ["lrm4d", "toy"], "Which demo to run.")
_LPIPS = flags.DEFINE_string(
    "lpips_weights", "", "LPIPS weights file(s), comma-separated; reports LPIPS when given."
)


def toy_demo(workdir: str) -> dict:
    from jaxmm import cli
    from jaxmm.train import trainer

    run_dir = os.path.join(workdir, "toy")
    shutil.rmtree(run_dir, ignore_errors=True)  # the demo owns this folder: start fresh
    config = cli.load_config("configs/toy.py:tiny", [])
    total = config.num_steps
    t0 = time.perf_counter()
    with config.unlocked():
        config.num_steps = total // 2
    first = trainer.train(config, run_dir)
    print(
        f"[demo] trained {total // 2} steps, checkpoints: "
        f"{sorted(os.listdir(os.path.join(run_dir, 'checkpoints')))}"
    )
    with config.unlocked():
        config.num_steps = total
    second = trainer.train(config, run_dir)
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


def main(argv):
    del argv
    from jaxmm import cli

    cli.setup_logging()
    os.makedirs(_WORKDIR.value, exist_ok=True)
    if _JOB.value == "toy":
        report = toy_demo(_WORKDIR.value)
        print(json.dumps(report, indent=2, sort_keys=True))
    else:
        from jaxmm import lrm4d

        report = lrm4d.run_demo(_WORKDIR.value, lpips_weights=_LPIPS.value or None)
        if not report.get("beats_baselines", False):
            print("[demo] WARNING: the model did not beat both baselines on every setup")
    print(f"[demo] metrics written to {os.path.join(_WORKDIR.value, 'metrics.json')}")


if __name__ == "__main__":
    app.run(main)
