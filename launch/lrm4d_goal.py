"""The 4D-LRM quality-in-time check: train for a wall-clock budget, then compare to baselines.

    python launch/lrm4d_goal.py --config=configs/lrm4d.py:small --workdir=runs/lrm4d_goal
    python launch/lrm4d_goal.py --config=configs/lrm4d.py:tiny --workdir=runs/goal_cpu \
        --minutes=5 --num_scenes=8          # the same check on CPU

Issue goal (GPU): `small`, trained ≤ 25 minutes on procedural data, beats the nearest-view
baseline by ≥ 3 dB PSNR on held-out objects at held-out times (targets: random cameras on the
sphere at frames no input view sees). A short probe run
(not counted) measures steps/s and the compile/setup overhead so that the cosine schedule
spans the budget (`num_steps` = 0.95 · (minutes · 60 − overhead) · steps/s);
`config.max_train_minutes` then guards the budget (compile included). Writes
`<workdir>/goal.json` and prints the table with margins.
"""

import json
import os
import shutil
import time

from absl import flags

from jaxmm import cli, lrm4d, tasks
from jaxmm.io.jsonl import read_jsonl
from jaxmm.train import trainer

_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (replaced: the check starts fresh).")
_MINUTES = flags.DEFINE_float("minutes", 25.0, "Training wall-clock budget, compile included.")
_MARGIN = flags.DEFINE_float("margin_db", 3.0, "PSNR margin over the nearest view to pass.")
_SCENES = flags.DEFINE_integer("num_scenes", 64, "Held-out objects per camera setup.")
_PROBE = flags.DEFINE_integer("probe_steps", 30, "Steps of the speed probe (not counted).")


def probe(config, workdir: str, steps: int) -> tuple[float, float]:
    """(steps/s of the last logging window, seconds of the run not spent in steps: compile,
    setup, checkpoint) of a short run: the budget pays that overhead once as well."""
    probe = config.copy_and_resolve_references()
    with probe.unlocked():
        probe.num_steps = steps
        probe.log_every_steps = max(1, steps // 3)
        probe.eval.num_scenes = 0
        probe.checkpoint.every_steps = 10 * steps
        probe.max_train_minutes = 0.0
    shutil.rmtree(workdir, ignore_errors=True)
    t0 = time.perf_counter()
    trainer.train(probe, workdir, tasks.build(probe))
    wall = time.perf_counter() - t0
    rows = [r for r in read_jsonl(os.path.join(workdir, "metrics.jsonl")) if "train/loss" in r]
    sps = float(rows[-1]["train/steps_per_sec"])
    return sps, max(0.0, wall - steps / sps)


def main(config, argv):
    del argv
    if config.task != "lrm4d":
        raise cli.UsageError(f"--config must be a 4D-LRM config, got task {config.task!r}")
    workdir = _WORKDIR.value
    sps, overhead_s = probe(config, os.path.join(workdir, "probe"), _PROBE.value)
    with config.unlocked():
        config.num_steps = max(10, int(0.95 * (_MINUTES.value * 60 - overhead_s) * sps))
        config.optimizer.warmup_steps = min(config.optimizer.warmup_steps, config.num_steps // 10)
        config.max_train_minutes = _MINUTES.value
        config.eval.num_scenes = 0  # evaluated below, all setups
    print(
        f"[goal] probe: {sps:.2f} steps/s, {overhead_s:.0f} s compile/setup -> "
        f"{config.num_steps} steps in {_MINUTES.value} min"
    )
    run_dir = os.path.join(workdir, "run")
    shutil.rmtree(run_dir, ignore_errors=True)
    result = trainer.train(config, run_dir, tasks.build(config))
    report = lrm4d.evaluate_workdir(
        run_dir, setups=lrm4d.SETUPS, num_scenes=_SCENES.value, out_dir=workdir, novel_times=True
    )
    margins = {s: report[s]["model/psnr"] - report[s]["nearest_view/psnr"] for s in lrm4d.SETUPS}
    report |= {
        "steps": int(result.state.step),
        "out_of_time": result.out_of_time,
        "probe_steps_per_sec": sps,
        "probe_overhead_s": overhead_s,
        "minutes": _MINUTES.value,
        "psnr_margin_over_nearest_view": margins,
        "passes": all(m >= _MARGIN.value for m in margins.values()),
    }
    with open(os.path.join(workdir, "goal.json"), "w") as f:
        json.dump(report, f, indent=2, sort_keys=True)
    print(lrm4d.format_table(report))
    for s, m in margins.items():
        print(f"[goal] {s:24s} model - nearest view: {m:+.2f} dB (need >= {_MARGIN.value})")
    print(f"[goal] {'PASS' if report['passes'] else 'FAIL'}; written {workdir}/goal.json")


if __name__ == "__main__":
    cli.run(main, required=["workdir"])
