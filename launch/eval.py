"""Evaluate the latest checkpoint of a run with its task's evaluators; prints JSON metrics.

python launch/eval.py --config=configs/toy.py:tiny --workdir=runs/toy
"""

import json

from absl import flags

from jaxmm import cli, tasks
from jaxmm.train import evaluate

_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory holding checkpoints/.")
_OUT = flags.DEFINE_string("out", None, "Optional path of a JSON file for the metrics.")


def main(config, argv):
    del argv
    step, metrics = evaluate.evaluate_latest(config, _WORKDIR.value, tasks.build(config))
    report = {"step": step, **metrics}
    print(json.dumps(report, indent=2, sort_keys=True))
    if _OUT.value:
        with open(_OUT.value, "w") as f:
            json.dump(report, f, indent=2, sort_keys=True)


if __name__ == "__main__":
    cli.run(main, required=["workdir"], errors=(FileNotFoundError,))
