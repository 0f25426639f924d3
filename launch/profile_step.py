"""Compile a config's train step without running it; print its cost and memory analysis.

    python launch/profile_step.py --config=configs/toy.py:tiny
    python launch/profile_step.py --config=configs/toy.py:tiny --dump_dir=/tmp/hlo --json

For a runtime trace use `launch/train.py ... --config.profile_steps="(10,5)"` and open
`<workdir>/profile` in TensorBoard (profile plugin) or Perfetto. (Not named `profile.py`: a
script's folder comes first on sys.path, and that name would shadow the standard library's
`profile`, which cProfile imports.)
"""

import json

import jax
from absl import flags

from jaxmm import cli, tasks
from jaxmm.train import profiling

_DUMP = flags.DEFINE_string("dump_dir", None, "Write the optimised HLO text here.")
_JSON = flags.DEFINE_bool("json", False, "Print the analysis as JSON.")


def main(config, argv):
    del argv
    _, compiled = profiling.compile_train_step(config, tasks.build(config))
    stats = profiling.analyse(compiled)
    if _DUMP.value:
        stats["hlo_path"] = profiling.dump_hlo(compiled, _DUMP.value)
    if _JSON.value:
        print(json.dumps(stats, indent=2, sort_keys=True))
    else:
        print(profiling.format_report(stats, jax.device_count()))
        if _DUMP.value:
            print(f"HLO written to {stats['hlo_path']}")


if __name__ == "__main__":
    cli.run(main)
