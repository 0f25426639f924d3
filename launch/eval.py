"""Evaluate the latest checkpoint of a run with its task's evaluators; prints JSON metrics.

python launch/eval.py --config=configs/toy.py:tiny --workdir=runs/toy
"""

import json
import os
import sys

# Repo root replaces this script's folder on sys.path: launch/profile.py must not shadow
# the standard library's `profile` module (cProfile imports it, e.g. under transformers).
sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from absl import flags  # noqa: E402

from jaxmm import cli  # noqa: E402

_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory holding checkpoints/.")
_OUT = flags.DEFINE_string("out", None, "Optional path of a JSON file for the metrics.")


def main(config, argv):
    del argv
    if not _WORKDIR.value:
        print("error: missing --workdir", file=sys.stderr)
        sys.exit(2)
    cli.maybe_initialize_distributed()
    cli.setup_logging()
    from jaxmm.train import evaluate

    try:
        step, metrics = evaluate.evaluate_latest(config, _WORKDIR.value)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    report = {"step": step, **metrics}
    print(json.dumps(report, indent=2, sort_keys=True))
    if _OUT.value:
        with open(_OUT.value, "w") as f:
            json.dump(report, f, indent=2, sort_keys=True)


if __name__ == "__main__":
    cli.run(main)
