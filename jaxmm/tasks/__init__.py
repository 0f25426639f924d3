"""The task registry: `config.task = "<name>"` names the module `jaxmm.tasks.<name>`, whose
`build(config)` returns the `jaxmm.train.task.Task` the launch script hands to the trainer.

    from jaxmm import tasks
    from jaxmm.train import trainer
    trainer.train(config, workdir, tasks.build(config))
"""

from __future__ import annotations

import importlib
import pkgutil

import ml_collections

from jaxmm.train.task import Task


def names() -> list[str]:
    """The task modules in jaxmm/tasks/: those with a `build` (helpers such as `grpo_loss`
    or `rewards` have none). Imports every module, so only error paths call it."""
    return sorted(
        m.name
        for m in pkgutil.iter_modules(__path__)
        if hasattr(importlib.import_module(f"{__name__}.{m.name}"), "build")
    )


def build(config: ml_collections.ConfigDict) -> Task:
    """Imports `jaxmm.tasks.<config.task>` and calls its `build(config)`."""
    name = config.task
    try:
        module = importlib.import_module(f"{__name__}.{name}")
    except ModuleNotFoundError as e:
        if e.name != f"{__name__}.{name}":
            raise
        raise ValueError(
            f"config.task={name!r} names no module in jaxmm/tasks/; known: {names()}"
        ) from None
    return module.build(config)
