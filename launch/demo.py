"""`make demo`: the main job, end to end, on whatever machine runs it (CPU is fine).

Trains the toy config for half its steps, stops, resumes from the checkpoint (as a
preempted job would), finishes and prints the final metrics. When the 4D-LRM task is
present this script runs the 4D-LRM demo instead (see docs/lrm4d.md).

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
    report = toy_demo(_WORKDIR.value)
    print(json.dumps(report, indent=2, sort_keys=True))
    print(f"[demo] metrics written to {os.path.join(_WORKDIR.value, 'metrics.json')}")


if __name__ == "__main__":
    app.run(main)
