"""Compile a config's train step without running it; print its cost and memory analysis.

    python launch/profile.py --config=configs/toy.py:tiny
    python launch/profile.py --config=configs/toy.py:tiny --dump_dir=/tmp/hlo --json

For a runtime trace use `launch/train.py ... --config.profile_steps="(10,5)"` and open
`<workdir>/profile` in TensorBoard (profile plugin) or Perfetto.
"""

import json
import os
import sys

# Repo root replaces this script's folder on sys.path: launch/profile.py must not shadow
# the standard library's `profile` module (cProfile imports it, e.g. under transformers).
sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from absl import flags  # noqa: E402

from jaxmm import cli  # noqa: E402

_DUMP = flags.DEFINE_string("dump_dir", None, "Write the optimised HLO text here.")
_JSON = flags.DEFINE_bool("json", False, "Print the analysis as JSON.")


def main(config, argv):
    del argv
    cli.maybe_initialize_distributed()
    cli.setup_logging()
    import jax

    from jaxmm.train import profiling

    _, compiled = profiling.compile_train_step(config)
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
