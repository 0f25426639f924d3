"""The one training loop every jaxmm experiment runs.

The trainer imports no model. A Task (jaxmm/train/task.py) supplies init, loss, data and
evaluators; the trainer owns the mesh, sharded init, the jitted step (explicit in/out
shardings, donated state), gradient accumulation, the NaN/inf guard, orbax checkpoints with
the grain iterator state (so a killed run resumes bit-for-bit), metrics, progress, the
profiling window and periodic evaluation.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec

from jaxmm import config as config_lib
from jaxmm import sharding
from jaxmm.train import checkpoint as ckpt_lib
from jaxmm.train import optim
from jaxmm.train import state as state_lib
from jaxmm.train.lifecycle import NonFiniteError, StopFlag, TrainResult, check_workdir
from jaxmm.train.metrics import MetricWriter
from jaxmm.train.task import DataShard, Task

log = logging.getLogger(__name__)

# A Task.loss metric naming the loss's denominator (see _loss_and_grads).
LOSS_WEIGHT = "loss_weight"

__all__ = [
    "LOSS_WEIGHT",
    "NonFiniteError",
    "TrainResult",
    "Trainer",
    "check_workdir",
    "describe",
    "train",
]

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


class Trainer:
    """Builds everything from a config; `run()` trains. Split out so tests can inspect it."""

    def __init__(
        self,
        config: ml_collections.ConfigDict,
        workdir: str,
        task: Task,
        devices: Sequence[jax.Device] | None = None,
    ):
        devices = list(devices) if devices is not None else jax.devices()
        config_lib.validate(config, num_devices=len(devices))
        check_workdir(workdir)
        self.config = config
        self.workdir = workdir
        self.task = task
        self.mesh = sharding.make_mesh(config.mesh, devices)
        self.rules = tuple(config.logical_axis_rules)
        self._repl = NamedSharding(self.mesh, PartitionSpec())
        # Shapes and shardings are derived outside the mesh context: activation constraints
        # are no-ops there, so eval_shape needs no concrete shardings.
        with nn.logical_axis_rules(self.rules):
            self._build_state_fns()

    @contextlib.contextmanager
    def _context(self):
        with jax.set_mesh(self.mesh), nn.logical_axis_rules(self.rules):
            yield

    # ---- sharded init -------------------------------------------------------------------
    def _build_state_fns(self) -> None:
        cfg = self.config
        init_rng = jax.random.key(cfg.seed)
        boxed = jax.eval_shape(self.task.init, init_rng)
        self.param_shardings = sharding.params_shardings(boxed, self.mesh, self.rules)
        abstract_params = sharding.unbox(boxed)
        self.trainable = self.task.trainable_mask(abstract_params)
        own_tx = self.task.optimizer(cfg.num_steps)
        if own_tx is None:
            self.tx = optim.make_optimizer(
                cfg.optimizer, cfg.num_steps, self.trainable, abstract_params
            )
            self.schedule = optim.make_schedule(cfg.optimizer, cfg.num_steps)
        else:
            # config.optimizer's schedule does not drive a task's own optimizer: log the
            # task's (Task.learning_rate), or no train/learning_rate at all.
            self.tx = own_tx
            self.schedule = self.task.learning_rate(cfg.num_steps)
        param_dtype = DTYPES[cfg.precision.param_dtype]

        def init_state(rng):
            params_rng, state_rng = jax.random.split(rng)
            params = sharding.unbox(self.task.init(params_rng))
            params = jax.tree.map(
                lambda p: p.astype(param_dtype) if jnp.issubdtype(p.dtype, jnp.floating) else p,
                params,
            )
            return state_lib.create(params, self.tx.init(params), jax.random.key_data(state_rng))

        abstract_state = jax.eval_shape(init_state, init_rng)
        # Frozen leaves (Task.trainable_mask) hold an empty optax.MaskedNode in the state.
        masked = lambda x: isinstance(x, optax.MaskedNode)
        try:
            opt_shardings = optax.tree_map_params(
                self.tx,
                lambda p, s: p if masked(p) else s,
                abstract_state.opt_state,
                self.param_shardings,
                transform_non_params=lambda _: self._repl,
                is_leaf=masked,
            )
        except (TypeError, AttributeError, KeyError, IndexError):
            # A task's own optimizer (`Task.optimizer`) whose init needs the real params tree
            # cannot be mapped with optax's placeholder: its state is replicated.
            opt_shardings = jax.tree.map(lambda _: self._repl, abstract_state.opt_state)
        self.state_shardings = state_lib.TrainState(
            step=self._repl,
            params=self.param_shardings,
            opt_state=opt_shardings,
            rng=self._repl,
            nonfinite_consecutive=self._repl,
            nonfinite_total=self._repl,
        )
        self._init_fn = jax.jit(init_state, out_shardings=self.state_shardings)
        self._init_rng = init_rng
        self.abstract_state = jax.tree.map(
            lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
            abstract_state,
            self.state_shardings,
        )

    def init_state(self) -> state_lib.TrainState:
        with self._context():
            return self._init_fn(self._init_rng)

    # ---- the step ---------------------------------------------------------------------------
    def _loss_and_grads(self, params, batch, rng):
        accum = self.config.grad_accum_steps
        grad_fn = jax.value_and_grad(self.task.loss, has_aux=True)
        if accum == 1:
            (loss, metrics), grads = grad_fn(params, batch, rng)
            return loss, metrics, grads

        def split(x):  # [B, ...] -> [accum, B/accum, ...], micro-batch i = rows i::accum
            x = x.reshape((x.shape[0] // accum, accum) + x.shape[1:])
            return jnp.swapaxes(x, 0, 1)

        micro = jax.tree.map(split, batch)
        first = jax.tree.map(lambda x: x[0], micro)
        shapes = jax.eval_shape(lambda: grad_fn(params, first, rng))
        weighted = LOSS_WEIGHT in shapes[0][1]

        # A loss that reports `loss_weight` (its denominator, e.g. target tokens) is combined
        # as sum(loss_i * w_i) / sum(w_i): exactly the loss of the whole batch, not a mean of
        # micro-batch means. Other losses are averaged (w_i = 1).
        def body(carry, xs):
            mb, i = xs
            (loss, metrics), grads = grad_fn(params, mb, jax.random.fold_in(rng, i))
            w = metrics[LOSS_WEIGHT] if weighted else jnp.float32(1.0)
            scaled = jax.tree.map(lambda x: x * w, (loss, metrics, grads))
            return jax.tree.map(jnp.add, carry, (*scaled, w)), None

        (loss, metrics), grads = jax.tree.map(jnp.zeros_like, shapes)
        (loss, metrics, grads, w_sum), _ = jax.lax.scan(
            body, (loss, metrics, grads, jnp.float32(0.0)), (micro, jnp.arange(accum))
        )
        scale = jnp.where(w_sum > 0, 1.0 / w_sum, 0.0)
        metrics = jax.tree.map(lambda m: m * scale, metrics)
        if weighted:
            metrics[LOSS_WEIGHT] = w_sum
        return loss * scale, metrics, jax.tree.map(lambda g: g * scale, grads)

    def _train_step(self, state: state_lib.TrainState, batch):
        rng = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
        loss, metrics, grads = self._loss_and_grads(state.params, batch, rng)
        grads = jax.tree.map(lambda g, p: g.astype(p.dtype), grads, state.params)
        finite = jnp.isfinite(loss) & jnp.all(
            jnp.asarray([jnp.all(jnp.isfinite(g)) for g in jax.tree.leaves(grads)])
        )
        updates, new_opt = self.tx.update(grads, state.opt_state, state.params)
        new_params = optax.apply_updates(state.params, updates)
        keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)
        consecutive = jnp.where(finite, 0, state.nonfinite_consecutive + 1)
        new_state = state.replace(
            step=state.step + 1,
            params=keep(new_params, state.params),
            opt_state=keep(new_opt, state.opt_state),
            nonfinite_consecutive=consecutive,
            nonfinite_total=state.nonfinite_total + (~finite).astype(jnp.int32),
        )
        metrics = dict(metrics)
        metrics.update(
            loss=loss,
            grad_norm=optax.tree.norm(grads),
            nonfinite_consecutive=consecutive,
            nonfinite_total=new_state.nonfinite_total,
        )
        if self.schedule is not None:
            metrics["learning_rate"] = self.schedule(state.step)
        return new_state, metrics

    def compile_step(self, example_batch) -> Any:
        """jit of the train step with explicit shardings; returns (jitted, batch_shardings)."""
        axes = self.task.batch_logical_axes(example_batch)
        batch_shardings = jax.tree.map(
            lambda a: sharding.logical_sharding(self.mesh, a, self.rules),
            axes,
            is_leaf=lambda x: isinstance(x, tuple),
        )
        step = jax.jit(
            self._train_step,
            in_shardings=(self.state_shardings, batch_shardings),
            out_shardings=(self.state_shardings, self._repl),
            donate_argnums=0,
        )
        return step, axes

    # ---- data ---------------------------------------------------------------------------------
    def data_iterator(self):
        cfg = self.config
        per_process = cfg.batch_size // jax.process_count()
        shard = DataShard(
            index=jax.process_index(),
            count=jax.process_count(),
            per_process_batch=per_process,
            seed=cfg.seed,
        )
        return iter(self.task.train_dataset(shard))

    # ---- the loop -------------------------------------------------------------------------------
    def run(self) -> TrainResult:
        cfg = self.config
        ckpt = ckpt_lib.Checkpointer(
            os.path.join(self.workdir, "checkpoints"),
            keep=cfg.checkpoint.keep,
            async_save=cfg.checkpoint.async_save,
            every_steps=cfg.checkpoint.every_steps,
        )
        writer = MetricWriter(self.workdir)
        if jax.process_index() == 0:
            with open(os.path.join(self.workdir, "config.json"), "w") as f:
                f.write(cfg.to_json_best_effort(indent=2))
        self.task.prepare(self.workdir)
        data_iter = self.data_iterator()
        with self._context():
            restored = ckpt.restore_latest(self.abstract_state)
        # Outside the mesh context: a loader places tensors with its own shardings.
        pretrained = None
        if restored is None:
            pretrained = self.task.pretrained_params(self.abstract_state.params)
        with self._context():
            resumed_from = None
            if restored is not None:
                resumed_from, state, data_state = restored
                data_iter.set_state(data_state)
                log.info("resumed from step %d in %s", resumed_from, self.workdir)
            else:
                state = self.init_state()
                if pretrained is not None:
                    state = state.replace(params=_place(pretrained, self.abstract_state.params))
                    log.info("initialised params from the task's pretrained weights")
                if cfg.init_from:
                    src_step, params = ckpt_lib.load_params(
                        cfg.init_from, self.abstract_state.params
                    )
                    state = state.replace(params=params)
                    log.info("initialised params from %s (step %d)", cfg.init_from, src_step)
            try:
                result = self._loop(state, data_iter, ckpt, writer)
            finally:
                ckpt.close()
                writer.close()
        result.resumed_from = resumed_from
        return result

    def _loop(self, state, data_iter, ckpt, writer) -> TrainResult:
        cfg = self.config
        start = int(jax.device_get(state.step))
        step_fn = batch_axes = None
        window: list[dict] = []
        train_metrics: dict[str, float] = {}
        eval_metrics: dict[str, float] = {}
        prev_metrics = None
        profile = tuple(cfg.profile_steps)
        profiling = False
        bar = _progress(cfg, start)
        t_window = time.perf_counter()
        stopped = out_of_time = False
        budget_s = 60.0 * float(cfg.get("max_train_minutes", 0) or 0)
        t_start = time.perf_counter()
        with StopFlag() as stop:
            rollout = type(self.task).rollout is not Task.rollout
            for step in range(start, cfg.num_steps):
                batch = next(data_iter)
                if rollout:
                    batch = self.task.rollout(state.params, batch, step)
                if step_fn is None:
                    step_fn, batch_axes = self.compile_step(batch)
                if profile and step == profile[0] and not profiling:
                    jax.profiler.start_trace(os.path.join(self.workdir, "profile"))
                    profiling = True
                global_batch = sharding.shard_batch(batch, self.mesh, batch_axes, self.rules)
                with jax.profiler.StepTraceAnnotation("train", step_num=step):
                    state, metrics = step_fn(state, global_batch)
                done = step + 1
                if profiling and done >= profile[0] + profile[1]:
                    jax.block_until_ready(state)
                    jax.profiler.stop_trace()
                    profiling = False
                    log.info("profile trace written to %s", os.path.join(self.workdir, "profile"))
                if prev_metrics is not None:  # one-step lag keeps the device busy
                    self._check_finite(prev_metrics, done - 1)
                prev_metrics = metrics
                window.append(metrics)
                if done % cfg.log_every_steps == 0 or done == cfg.num_steps:
                    train_metrics = self._log_window(writer, window, done, t_window)
                    window, t_window = [], time.perf_counter()
                    if bar is not None:
                        bar.set_postfix(loss=f"{train_metrics['loss']:.4g}", refresh=False)
                if ckpt.should_save(done):
                    ckpt.save(done, state, data_iter.get_state())
                if (
                    cfg.eval_every_steps
                    and done % cfg.eval_every_steps == 0
                    and done < cfg.num_steps
                ):
                    eval_metrics = writer.write(
                        done, self.task.evaluate(state.params, done, self.workdir), "eval/"
                    )
                if bar is not None:
                    bar.update(1)
                if stop.raised:
                    ckpt.save(done, state, data_iter.get_state())
                    stopped = True
                    break
                if budget_s and done < cfg.num_steps and time.perf_counter() - t_start > budget_s:
                    log.warning(
                        "max_train_minutes=%g reached after step %d of %d: saving and evaluating",
                        cfg.max_train_minutes,
                        done,
                        cfg.num_steps,
                    )
                    out_of_time = True
                    break
            if profiling:
                jax.profiler.stop_trace()
            if prev_metrics is not None:
                self._check_finite(prev_metrics, int(jax.device_get(state.step)))
        final = int(jax.device_get(state.step))
        if not stopped:
            ckpt.save(final, state, data_iter.get_state())
            eval_metrics = writer.write(
                final, self.task.evaluate(state.params, final, self.workdir), "eval/"
            )
        ckpt.wait()
        if bar is not None:
            bar.close()
        return TrainResult(
            state=state,
            train_metrics=train_metrics,
            eval_metrics=eval_metrics,
            resumed_from=None,
            stopped_early=stopped,
            out_of_time=out_of_time,
        )

    def _check_finite(self, metrics, step: int) -> None:
        k = int(metrics["nonfinite_consecutive"])
        if k >= self.config.max_consecutive_nonfinite:
            raise NonFiniteError(
                f"{k} consecutive steps ending at step {step} had a non-finite loss or gradient "
                f"(each was skipped; limit config.max_consecutive_nonfinite="
                f"{self.config.max_consecutive_nonfinite}). Lower the learning rate or check the "
                f"data; the last checkpoint in {self.workdir}/checkpoints is intact."
            )

    def _log_window(self, writer, window, step, t0) -> dict[str, float]:
        window = jax.device_get(window)
        keys = window[-1].keys()
        avg = {k: float(np.mean([m[k] for m in window])) for k in keys}
        for k in ("nonfinite_total", "nonfinite_consecutive", "learning_rate"):
            if k in window[-1]:
                avg[k] = float(window[-1][k])
        dt = time.perf_counter() - t0
        avg["steps_per_sec"] = len(window) / max(dt, 1e-9)
        writer.write(step, avg, "train/")
        return avg


def _place(params, abstract_params):
    """Params onto the train state's shardings and dtypes (structure and shapes checked)."""
    want = jax.tree.map(lambda a: a.shape, abstract_params)
    got = jax.tree.map(lambda a: tuple(a.shape), params)
    if jax.tree.structure(want) != jax.tree.structure(got) or want != got:
        raise ValueError("Task.pretrained_params do not match the params of Task.init")
    return jax.tree.map(
        lambda p, a: jax.device_put(jnp.asarray(p, a.dtype), a.sharding), params, abstract_params
    )


def _progress(cfg, start: int):
    if not cfg.progress_bar or jax.process_index() != 0:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=cfg.num_steps, initial=start, desc="train", unit="step", dynamic_ncols=True)


def train(
    config: ml_collections.ConfigDict,
    workdir: str,
    task: Task,
    devices: Sequence[jax.Device] | None = None,
) -> TrainResult:
    """Trains `task` under `config` in `workdir`, resuming from its latest checkpoint if any."""
    return Trainer(config, workdir, task, devices=devices).run()


def describe(result: TrainResult) -> str:
    return json.dumps(
        {
            "train": result.train_metrics,
            "eval": result.eval_metrics,
            "resumed_from": result.resumed_from,
        },
        indent=2,
        sort_keys=True,
    )
