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
        """Scalar loss to minimise and a dict of scalar metrics. Traced under jit.

        A loss that is a ratio (e.g. summed token losses / target tokens) reports its
        denominator as the metric `loss_weight`: under gradient accumulation the trainer then
        combines micro-batches as sum(loss_i * w_i) / sum(w_i), the exact whole-batch value.
        """

    @abc.abstractmethod
    def train_dataset(self, shard: DataShard) -> grain.IterDataset:
        """An endless grain dataset of this process's batches (numpy, leading dim = batch).

        Must be deterministic given `shard.seed` so that its iterator state (saved in every
        checkpoint) resumes the exact same stream.
        """

    def prepare(self, workdir: str) -> None:
        """Host-side setup the trainer runs before reading data (e.g. generate a procedural
        corpus into the workdir). Optional."""
        del workdir

    def rollout(self, params: PyTree, batch: Batch, step: int) -> Batch:
        """Host side, between the data pipeline and the step, with the current params: e.g.
        on-policy samples for RL (`jaxmm.tasks.grpo`). Must be deterministic given (params,
        batch, step) for exact resume, and return the same shapes every step. The trainer
        calls it only when a task overrides it (it waits for the previous step)."""
        del params, step
        return batch

    def batch_logical_axes(self, batch: Batch) -> PyTree:
        """Logical axis names per batch leaf; by default the leading axis is `batch`."""
        return jax.tree.map(lambda x: ("batch",) + (None,) * (x.ndim - 1), batch)

    def trainable_mask(self, params: PyTree) -> PyTree | None:
        """Pytree of bools marking trainable leaves (e.g. LoRA); None trains everything."""
        return None

    def pretrained_params(self, abstract_params: PyTree) -> PyTree | None:
        """Weights that replace `init`'s in a fresh (not resumed) run, e.g. a Hugging Face
        checkpoint; None keeps `init`'s. `abstract_params` carry the target shardings, so a
        task can read each tensor straight into its shards. Called on the host, not traced."""
        del abstract_params
        return None

    def optimizer(self, num_steps: int) -> optax.GradientTransformation | None:
        """The task's own optimizer, or None for `config.optimizer` (the default).

        For optimizers that are part of the method, e.g. per-parameter learning rates and
        Gaussian densification (`jaxmm.tasks.gs_fit`); it runs inside the jitted step and its
        state is checkpointed with the train state."""
        del num_steps
        return None

    def learning_rate(self, num_steps: int) -> optax.Schedule | None:
        """With the task's own `optimizer`: the schedule the trainer logs as
        `train/learning_rate` (config.optimizer's does not drive that optimizer, so logging it
        would mislead); None logs no learning rate. Unused without an own optimizer."""
        del num_steps
        return None

    def evaluate(self, params: PyTree, step: int, workdir: str) -> dict[str, float]:
        """Host-side periodic evaluation; returns scalar metrics to log. Optional."""
        return {}
