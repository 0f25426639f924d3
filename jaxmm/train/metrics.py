"""Metrics sinks: JSON lines (for scripts) and TensorBoard event files (for people).

Only process 0 writes. Values are converted to Python floats at log time, so a writer never
holds device arrays. Read metrics.jsonl back with `jaxmm.io.jsonl.read_jsonl`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

from jaxmm.io.jsonl import JsonlWriter


def to_floats(metrics: Mapping[str, Any]) -> dict[str, float]:
    return {k: float(np.asarray(v)) for k, v in metrics.items()}


class MetricWriter:
    """Appends `{"step": s, **metrics}` to metrics.jsonl and writes TensorBoard scalars."""

    def __init__(self, workdir: str, *, tensorboard: bool = True):
        self.enabled = jax.process_index() == 0
        self.path = os.path.join(workdir, "metrics.jsonl")
        self._tb = None
        if self.enabled:
            os.makedirs(workdir, exist_ok=True)
            self._jsonl = JsonlWriter(self.path)  # line-buffered: survives SIGKILL
            if tensorboard:
                from tensorboardX import SummaryWriter

                self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))

    def write(self, step: int, metrics: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
        values = {f"{prefix}{k}": v for k, v in to_floats(metrics).items()}
        if self.enabled:
            self._jsonl.write({"step": int(step), **values})
            if self._tb is not None:
                for k, v in values.items():
                    self._tb.add_scalar(k, v, int(step))
        return values

    def close(self) -> None:
        if self.enabled:
            self._jsonl.close()
            if self._tb is not None:
                self._tb.close()
