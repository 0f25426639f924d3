"""Train any jaxmm experiment; running it again in the same workdir resumes.

    python launch/train.py --config=configs/toy.py:tiny --workdir=runs/toy
    python launch/train.py --config=configs/toy.py:tiny --workdir=runs/toy --config.num_steps=500

Multi-host: the same command under launch/slurm.sbatch or launch/tpu_vm.sh; processes find
each other through JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID or Slurm.
"""

import jax
from absl import flags

from jaxmm import cli, tasks
from jaxmm.train import trainer

_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics, traces.")


def main(config, argv):
    del argv
    result = trainer.train(config, _WORKDIR.value, tasks.build(config))
    if jax.process_index() == 0:
        print(trainer.describe(result))


if __name__ == "__main__":
    cli.run(main, required=["workdir"], errors=(PermissionError, trainer.NonFiniteError))
