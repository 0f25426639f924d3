"""Shared plumbing for `launch/*.py`: config + overrides, multi-host init, logging.

`--config=configs/x.py:variant` names the experiment; `--config.a.b=value` overrides any
field, failing with the closest valid keys when the field does not exist. Overrides are
parsed here (not by absl) so every error names the field before any device work.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Sequence

import ml_collections

from jaxmm import config as config_lib


class UsageError(ValueError):
    """A command-line mistake; launch scripts print it without a traceback."""


def split_config_args(argv: Sequence[str]) -> tuple[str | None, list[str], list[str]]:
    """Returns (config spec, ['a.b=v', ...] overrides, remaining argv for absl)."""
    spec, overrides, rest = None, [], [argv[0]]
    it = iter(argv[1:])
    for arg in it:
        if arg.startswith("--config="):
            spec = arg.split("=", 1)[1]
        elif arg == "--config":
            spec = next(it, None)
            if spec is None:
                raise UsageError("--config needs a value: --config=configs/x.py:variant")
        elif arg.startswith("--config."):
            body = arg[len("--config.") :]
            if "=" not in body:
                value = next(it, None)
                if value is None or value.startswith("--"):
                    raise UsageError(f"{arg} needs a value: {arg}=VALUE")
                body = f"{body}={value}"
            overrides.append(body)
        else:
            rest.append(arg)
    return spec, overrides, rest


def load_config(spec: str | None, overrides: Sequence[str]) -> ml_collections.ConfigDict:
    """Loads, overrides and validates a config; raises UsageError with a clear message."""
    if not spec:
        raise UsageError("missing --config=configs/<experiment>.py:<variant>")
    try:
        config = config_lib.load_config_file(spec)
        config_lib.apply_overrides(config, overrides)
        config_lib.validate(config)
    except (FileNotFoundError, KeyError, ValueError, TypeError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        raise UsageError(msg) from None
    return config


def maybe_initialize_distributed() -> None:
    """Calls `jax.distributed.initialize()` when the environment describes several processes.

    Explicit: JAX_COORDINATOR_ADDRESS + JAX_NUM_PROCESSES + JAX_PROCESS_ID. Clusters that JAX
    auto-detects: Slurm with more than one task, multi-host TPU VMs (MEGASCALE/TPU envs).
    """
    import jax

    env = os.environ
    if env.get("JAX_COORDINATOR_ADDRESS") and env.get("JAX_NUM_PROCESSES"):
        num = int(env["JAX_NUM_PROCESSES"])
        if num > 1:
            if env.get("JAX_PLATFORMS", "") == "cpu":
                jax.config.update("jax_cpu_collectives_implementation", "gloo")
            jax.distributed.initialize(
                coordinator_address=env["JAX_COORDINATOR_ADDRESS"],
                num_processes=num,
                process_id=int(env["JAX_PROCESS_ID"]),
            )
    elif int(env.get("SLURM_NTASKS", "1")) > 1 or env.get("TPU_WORKER_HOSTNAMES", "").count(","):
        jax.distributed.initialize()


def setup_logging() -> None:
    import jax

    level = logging.INFO if jax.process_index() == 0 else logging.WARNING
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("absl", "jax._src", "orbax", "tensorflow"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def run(
    main: Callable[..., None],
    argv: Sequence[str] | None = None,
    *,
    config: bool = True,
    required: Sequence[str] = (),
    errors: tuple[type[BaseException], ...] = (),
) -> None:
    """The one entry of every `launch/*.py`: `cli.run(main, ...)` under `__main__`.

    With `config=True` it reads `--config=...:variant` and `--config.a.b=v` overrides (errors
    exit 2 and name the field), initialises multi-host JAX when the environment asks for it and
    calls `main(config, argv)`; otherwise `main(argv)`. Flags named in `required` must be given
    (exit 2 otherwise), and `main` may raise `UsageError` (exit 2). Exceptions of the types in
    `errors` (bad files, folders, shapes: the
    user's input) print `error: ...` without a traceback and exit 1.
    """
    from absl import app, flags

    argv = list(sys.argv if argv is None else argv)
    spec, overrides, rest = None, [], argv
    if config:
        try:
            spec, overrides, rest = split_config_args(argv)
        except UsageError as e:
            _exit(e, 2)

    def _main(rest_argv):
        for name in required:
            if not flags.FLAGS[name].value:
                _exit(f"missing --{name}", 2)
        args = [rest_argv]
        if config:
            try:
                args = [load_config(spec, overrides), rest_argv]
            except UsageError as e:
                _exit(e, 2)
            maybe_initialize_distributed()
        setup_logging()
        try:
            main(*args)
        except UsageError as e:
            _exit(e, 2)
        except errors as e:
            _exit(e, 1)

    app.run(_main, argv=rest)


def _exit(message: object, code: int) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(code)
