"""Orbax checkpoints of the train state plus the grain iterator state.

Each step directory holds two items: `state` (the TrainState pytree, restored straight into
its sharding) and `data` (the data iterator's JSON state), so a resumed run reads exactly
the batches the uninterrupted run would have read. Orbax writes into a temporary directory
and renames it on commit, so a crash mid-save never corrupts an earlier checkpoint.

A checkpoint that fails to restore is moved aside to `corrupt_<step>_<time>` (never deleted)
with a warning, and the previous one is used.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import jax
import orbax.checkpoint as ocp

log = logging.getLogger(__name__)


class Checkpointer:
    """Thin policy layer over `ocp.CheckpointManager` (keep N, async, fallback on corruption)."""

    def __init__(self, directory: str, *, keep: int, async_save: bool, every_steps: int):
        self.directory = os.path.abspath(directory)
        self.every_steps = every_steps
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(
                max_to_keep=keep,
                enable_async_checkpointing=async_save,
                create=True,
            ),
            item_names=("state", "data"),
        )

    def all_steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def latest_step(self) -> int | None:
        steps = self.all_steps()
        return steps[-1] if steps else None

    def should_save(self, step: int) -> bool:
        return self.every_steps > 0 and step % self.every_steps == 0

    def save(self, step: int, state: Any, data_state: dict | None) -> None:
        if step in self._manager.all_steps():
            return  # already saved at this step (e.g. final save right after a periodic one)
        args = ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            data=ocp.args.JsonSave(data_state or {}),
        )
        self._manager.save(step, args=args, force=True)

    def restore(self, step: int, abstract_state: Any) -> tuple[Any, dict]:
        args = ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state),
            data=ocp.args.JsonRestore(),
        )
        restored = self._manager.restore(step, args=args)
        return restored.state, dict(restored.data or {})

    def restore_latest(self, abstract_state: Any) -> tuple[int, Any, dict] | None:
        """Newest checkpoint that restores; broken ones are moved aside with a warning."""
        for step in reversed(self.all_steps()):
            try:
                state, data = self.restore(step, abstract_state)
                return step, state, data
            except Exception as e:  # noqa: BLE001 - any failure to read means "corrupt"
                self._move_aside(step, e)
        return None

    def _move_aside(self, step: int, error: Exception) -> None:
        src = os.path.join(self.directory, str(step))
        dst = os.path.join(self.directory, f"corrupt_{step}_{int(time.time())}")
        msg = (
            f"checkpoint step {step} in {self.directory} failed to restore "
            f"({type(error).__name__}: {str(error)[:300]}); falling back to the previous one"
        )
        log.warning(msg)
        import warnings

        warnings.warn(msg, RuntimeWarning, stacklevel=3)
        if jax.process_index() == 0 and os.path.isdir(src):
            os.rename(src, dst)
            log.warning("kept the unreadable checkpoint as %s", dst)
        self._manager.reload()

    def wait(self) -> None:
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()


def find_checkpoint_dir(path: str) -> str:
    """Accepts a workdir (uses workdir/checkpoints) or a checkpoints dir itself."""
    sub = os.path.join(path, "checkpoints")
    if os.path.isdir(sub):
        return sub
    if os.path.isdir(path):
        return path
    raise FileNotFoundError(f"no checkpoint directory at {path!r} (expected {sub!r})")


def load_params(path: str, abstract_params: Any) -> tuple[int, Any]:
    """Restores only the params of the newest readable checkpoint under `path` (for init_from)."""
    directory = os.path.abspath(find_checkpoint_dir(path))  # orbax needs absolute paths
    mgr = ocp.CheckpointManager(directory, item_names=("state", "data"))
    steps = sorted(mgr.all_steps())
    if not steps:
        raise FileNotFoundError(f"no checkpoints in {directory!r}")
    step = steps[-1]
    restored = mgr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
    mgr.close()
    params = restored.state["params"]
    shapes = jax.tree.map(lambda a: a.shape, abstract_params)
    got = jax.tree.map(lambda a: a.shape, params)
    if jax.tree.structure(shapes) != jax.tree.structure(got) or shapes != got:
        raise ValueError(f"init_from={path!r}: checkpoint params do not match the model's params")
    params = jax.tree.map(
        lambda a, ab: jax.device_put(a, ab.sharding).astype(ab.dtype), params, abstract_params
    )
    return step, params
