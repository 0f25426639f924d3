"""How a run starts and ends: the workdir check before any device work, SIGTERM (preemption)
as a stop flag, the error after too many non-finite steps, and what a finished run returns."""

from __future__ import annotations

import dataclasses
import logging
import os
import signal

from jaxmm.train import state as state_lib

log = logging.getLogger(__name__)


class NonFiniteError(FloatingPointError):
    """Raised after `max_consecutive_nonfinite` skipped steps in a row."""


@dataclasses.dataclass
class TrainResult:
    state: state_lib.TrainState
    train_metrics: dict[str, float]  # averaged over the last logging window
    eval_metrics: dict[str, float]
    resumed_from: int | None
    stopped_early: bool  # True when a SIGTERM made the run save and stop
    out_of_time: bool = False  # True when config.max_train_minutes ended the run before num_steps


def check_workdir(workdir: str) -> None:
    """Fails before any device work when the workdir cannot be created or written."""
    try:
        os.makedirs(workdir, exist_ok=True)
    except OSError as e:
        raise PermissionError(f"workdir {workdir!r} cannot be created: {e.strerror}") from e
    probe = os.path.join(workdir, f".write_probe_{os.getpid()}")
    try:
        with open(probe, "w") as f:
            f.write("ok")
        os.remove(probe)
    except OSError as e:
        raise PermissionError(f"workdir {workdir!r} is not writable: {e.strerror}") from e


class StopFlag:
    """Turns SIGTERM (preemption) into a flag the loop checks after each step."""

    def __init__(self):
        self.raised = False
        self._previous = None

    def __enter__(self):
        try:
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        except ValueError:  # not the main thread: leave signals alone
            self._previous = None
        return self

    def _handle(self, signum, frame):
        log.warning("SIGTERM received: saving a checkpoint and stopping")
        self.raised = True

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
