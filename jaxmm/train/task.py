"""The contract between the one trainer and every experiment.

launch -> config -> task -> trainer. A config names its task (`config.task = "toy"`); the
registry `jaxmm.tasks.build(config)` builds it from `jaxmm.tasks.<name>` and the launch script
hands it to the trainer. The trainer imports no model and no task: it only calls the methods
below, inside its own mesh, jit, checkpointing and logging.

Parameters returned by `init` may carry Flax logical-axis metadata
(`nn.with_logical_partitioning`, `nn.LogicallyPartitioned`); the trainer turns those names
into shardings with `config.logical_axis_rules` and stores plain arrays in the train state.
"""

from __future__ import annotations

import abc
from typing import Any

import grain
import jax
import ml_collections
import optax

from jaxmm.data.pipeline import DataShard

__all__ = ["Batch", "DataShard", "Metrics", "PyTree", "Task"]

PyTree = Any
Batch = dict[str, Any]
Metrics = dict[str, jax.Array]


class Task(abc.ABC):
    """One kind of experiment: model init, loss, data and evaluators."""

    def __init__(self, config: ml_collections.ConfigDict):
        self.config = config

    @abc.abstractmethod
    def init(self, rng: jax.Array) -> PyTree:
        """Returns fresh parameters (possibly logically partitioned). Traced under jit."""

    @abc.abstractmethod
    def loss(self, params: PyTree, batch: Batch, rng: jax.Array) -> tuple[jax.Array, Metrics]:
        """Scalar loss to minimise and a dict of scalar metrics. Traced under jit."""

    @abc.abstractmethod
    def train_dataset(self, shard: DataShard) -> grain.IterDataset:
        """An endless grain dataset of this process's batches (numpy, leading dim = batch).

        Must be deterministic given `shard.seed` so that its iterator state (saved in every
        checkpoint) resumes the exact same stream.
        """

    def batch_logical_axes(self, batch: Batch) -> PyTree:
        """Logical axis names per batch leaf; by default the leading axis is `batch`."""
        return jax.tree.map(lambda x: ("batch",) + (None,) * (x.ndim - 1), batch)

    def trainable_mask(self, params: PyTree) -> PyTree | None:
        """Pytree of bools marking trainable leaves (e.g. LoRA); None trains everything."""
        return None

    def optimizer(self, num_steps: int) -> optax.GradientTransformation | None:
        """The task's own optimizer, or None for `config.optimizer` (the default).

        For optimizers that are part of the method, e.g. per-parameter learning rates and
        Gaussian densification (`jaxmm.tasks.gs_fit`); it runs inside the jitted step and its
        state is checkpointed with the train state."""
        del num_steps
        return None

    def evaluate(self, params: PyTree, step: int, workdir: str) -> dict[str, float]:
        """Host-side periodic evaluation; returns scalar metrics to log. Optional."""
        return {}
