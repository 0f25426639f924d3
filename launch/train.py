"""Train any jaxmm experiment; running it again in the same workdir resumes.

    python launch/train.py --config=configs/toy.py:tiny --workdir=runs/toy
    python launch/train.py --config=configs/toy.py:tiny --workdir=runs/toy --config.num_steps=500

Multi-host: the same command under launch/slurm.sbatch or launch/tpu_vm.sh; processes find
each other through JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID or Slurm.
"""

import os
import sys

# Repo root replaces this script's folder on sys.path: launch/profile.py must not shadow
# the standard library's `profile` module (cProfile imports it, e.g. under transformers).
sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from absl import flags  # noqa: E402

from jaxmm import cli  # noqa: E402

_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics, traces.")


def main(config, argv):
    del argv
    if not _WORKDIR.value:
        print("error: missing --workdir", file=sys.stderr)
        sys.exit(2)
    cli.maybe_initialize_distributed()
    cli.setup_logging()
    from jaxmm.train import trainer

    try:
        result = trainer.train(config, _WORKDIR.value)
    except (PermissionError, trainer.NonFiniteError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    import jax

    if jax.process_index() == 0:
        print(trainer.describe(result))


if __name__ == "__main__":
    cli.run(main)
