"""Evaluate a run's latest checkpoint with its task's evaluators (used by launch/eval.py)."""

from __future__ import annotations

import os

import ml_collections

from jaxmm.train import checkpoint as ckpt_lib
from jaxmm.train.task import Task
from jaxmm.train.trainer import Trainer


def evaluate_latest(
    config: ml_collections.ConfigDict, workdir: str, task: Task
) -> tuple[int, dict]:
    """Restores the newest readable checkpoint's params and runs `task.evaluate`."""
    if not os.path.isdir(os.path.join(workdir, "checkpoints")):
        raise FileNotFoundError(f"no checkpoints in {workdir!r}: train first")
    trainer = Trainer(config, workdir, task)
    step, params = ckpt_lib.load_params(workdir, trainer.abstract_state.params)
    with trainer._context():
        metrics = trainer.task.evaluate(params, step, workdir)
    return step, {k: float(v) for k, v in metrics.items()}
