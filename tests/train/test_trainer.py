"""The shared trainer on the toy task: outputs, accumulation, NaN guard, profiling, resume."""

import glob
import json
import os

import jax
import numpy as np
import optax
import pytest

from jaxmm import config as config_lib
from jaxmm import tasks
from jaxmm.io.jsonl import read_jsonl
from jaxmm.tasks.toy import ToySource, ToyTask
from jaxmm.train import checkpoint as ckpt_lib
from jaxmm.train import optim as optim_lib
from jaxmm.train import trainer as trainer_lib


def _train(config, workdir):
    return trainer_lib.train(config, workdir, tasks.build(config))


def toy_config(**overrides):
    c = config_lib.load_config_file("configs/toy.py:runlocal")
    with c.unlocked():
        c.progress_bar = False
        c.optimizer.warmup_steps = 0
        c.checkpoint.async_save = False
        for k, v in overrides.items():
            config_lib.set_key(c, k, v)
    return c


def test_run_writes_metrics_tensorboard_checkpoints(tmp_path):
    c = toy_config(
        num_steps=20, log_every_steps=5, eval_every_steps=10, **{"checkpoint.every_steps": 10}
    )
    result = trainer_lib.train(c, str(tmp_path), tasks.build(c))
    rows = read_jsonl(str(tmp_path / "metrics.jsonl"))
    train_steps = [r["step"] for r in rows if "train/loss" in r]
    assert train_steps == [5, 10, 15, 20]
    assert [r["step"] for r in rows if "eval/mse" in r] == [10, 20]
    first, last = rows[0]["train/loss"], [r for r in rows if "train/loss" in r][-1]["train/loss"]
    assert last < first  # it learns
    assert glob.glob(str(tmp_path / "tensorboard" / "events.out.tfevents.*"))
    assert json.load(open(tmp_path / "config.json"))["task"] == "toy"
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["10", "20"]
    assert int(result.state.step) == 20 and result.resumed_from is None


def test_grad_accumulation_matches_full_batch(tmp_path):
    # SGD: the update is linear in the gradient. (Adam's first steps are ~lr·sign(g), so an
    # fp32 summation-order difference in a near-zero gradient entry moves that parameter by up
    # to lr: seen on one of 8192 entries on some CPUs, with accumulation working.)
    sgd = {"optimizer.name": "sgd", "optimizer.learning_rate": 0.5, "optimizer.clip_norm": 0.0}
    one = _train(toy_config(num_steps=2, **sgd), str(tmp_path / "a"))
    two = _train(toy_config(num_steps=2, grad_accum_steps=4, **sgd), str(tmp_path / "b"))
    for a, b in zip(
        jax.tree.leaves(one.state.params), jax.tree.leaves(two.state.params), strict=True
    ):
        # Mean of 4 equal-size micro-batch means == full-batch mean; fp32 summation order only.
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)


class PoisonedSource(ToySource):
    """Records whose index is a multiple of `every` carry NaN inputs."""

    every = 97

    def __getitem__(self, i):
        r = super().__getitem__(i)
        if i % self.every == 0:
            r["x"] = np.full_like(r["x"], np.nan)
        return r


class PoisonedTask(ToyTask):
    def train_dataset(self, shard):
        from jaxmm.data.pipeline import batched

        d = self.config.data
        return batched(PoisonedSource(d.train_size, d.d_in, d.d_out, d.seed), shard)


def test_nonfinite_steps_are_skipped_and_counted(tmp_path):
    c = toy_config(num_steps=30)
    trainer = trainer_lib.Trainer(c, str(tmp_path), PoisonedTask(c))
    # Count poisoned batches independently, from the same deterministic stream.
    it = trainer.data_iterator()
    expected = sum(bool(np.isnan(next(it)["x"]).any()) for _ in range(30))
    assert expected > 0
    result = trainer.run()
    assert int(result.state.nonfinite_total) == expected
    assert all(np.isfinite(np.asarray(p)).all() for p in jax.tree.leaves(result.state.params))


class AlwaysNaNTask(ToyTask):
    def loss(self, params, batch, rng):
        loss, metrics = super().loss(params, batch, rng)
        return loss * np.nan, metrics


def test_consecutive_nonfinite_stops_with_clear_error(tmp_path):
    c = toy_config(num_steps=20, max_consecutive_nonfinite=3)
    trainer = trainer_lib.Trainer(c, str(tmp_path), AlwaysNaNTask(c))
    with pytest.raises(trainer_lib.NonFiniteError, match="3 consecutive steps"):
        trainer.run()


def test_profile_window_writes_a_trace(tmp_path):
    _train(toy_config(num_steps=6, profile_steps=(2, 2)), str(tmp_path))
    assert glob.glob(str(tmp_path / "profile" / "**" / "*.xplane.pb"), recursive=True)


def test_corrupt_latest_checkpoint_falls_back_and_keeps_files(tmp_path):
    c = toy_config(num_steps=20, **{"checkpoint.every_steps": 10})
    trainer_lib.train(c, str(tmp_path), tasks.build(c))
    state_dir = tmp_path / "checkpoints" / "20" / "state"
    corrupted = [f for f in glob.glob(str(state_dir / "**"), recursive=True) if os.path.isfile(f)]
    for f in corrupted:
        with open(f, "wb") as fh:
            fh.write(b"garbage")
    c = toy_config(num_steps=30, **{"checkpoint.every_steps": 10})
    with pytest.warns(RuntimeWarning, match="checkpoint step 20 .* failed to restore"):
        result = trainer_lib.train(c, str(tmp_path), tasks.build(c))
    assert result.resumed_from == 10
    kept = glob.glob(str(tmp_path / "checkpoints" / "corrupt_20_*"))
    assert len(kept) == 1 and os.path.isdir(os.path.join(kept[0], "state"))
    assert sorted(d for d in os.listdir(tmp_path / "checkpoints") if d.isdigit()) == [
        "10",
        "20",
        "30",
    ]


def test_init_from_loads_params_of_another_run(tmp_path):
    first = _train(toy_config(num_steps=5), str(tmp_path / "a"))
    c = toy_config(num_steps=1, init_from=str(tmp_path / "a"), seed=123)
    with c.unlocked():
        c.optimizer.learning_rate = 1e-30
    second = trainer_lib.train(c, str(tmp_path / "b"), tasks.build(c))
    for a, b in zip(
        jax.tree.leaves(first.state.params), jax.tree.leaves(second.state.params), strict=True
    ):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-12)


def test_workdir_that_cannot_be_created(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(PermissionError, match="cannot be created"):
        trainer_lib.Trainer(toy_config(), str(blocker / "run"), tasks.build(toy_config()))


def test_load_params_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint directory"):
        ckpt_lib.load_params(str(tmp_path / "missing"), None)


def test_keep_n_checkpoints(tmp_path):
    c = toy_config(num_steps=20, **{"checkpoint.every_steps": 5, "checkpoint.keep": 2})
    trainer_lib.train(c, str(tmp_path), tasks.build(c))
    assert sorted(os.listdir(tmp_path / "checkpoints"), key=int) == ["15", "20"]


def test_mixed_precision_keeps_fp32_master_params(tmp_path):
    c = toy_config(num_steps=3, **{"precision.compute_dtype": "bfloat16"})
    result = trainer_lib.train(c, str(tmp_path), tasks.build(c))
    assert {p.dtype for p in jax.tree.leaves(result.state.params)} == {np.dtype("float32")}
    assert np.isfinite(result.train_metrics["loss"])


def test_load_params_accepts_a_relative_workdir(tmp_path, monkeypatch):
    # `make demo` evaluates runs/demo/... by a relative path; orbax only takes absolute ones.
    first = _train(toy_config(num_steps=2), str(tmp_path / "run"))
    monkeypatch.chdir(tmp_path)
    abstract = jax.tree.map(
        lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=a.sharding), first.state.params
    )
    step, params = ckpt_lib.load_params("run", abstract)
    assert step == 2
    for a, b in zip(jax.tree.leaves(first.state.params), jax.tree.leaves(params), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_time_budget_saves_evaluates_and_resumes(tmp_path):
    # A budget far below one step's time: the run ends after its first step, with a checkpoint
    # and the final evaluation, and a later run with more time continues from there.
    c = toy_config(num_steps=20, max_train_minutes=1e-6, **{"checkpoint.every_steps": 100})
    result = trainer_lib.train(c, str(tmp_path), tasks.build(c))
    assert result.out_of_time and not result.stopped_early
    assert int(result.state.step) == 1 and "eval/mse" in result.eval_metrics
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["1"]
    again = _train(toy_config(num_steps=20), str(tmp_path))
    assert again.resumed_from == 1 and int(again.state.step) == 20 and not again.out_of_time
    with pytest.raises(ValueError, match="config.max_train_minutes"):
        config_lib.validate(toy_config(max_train_minutes=-1.0))


@jax.custom_vjp
def _nan_gradient(x):
    """Identity whose gradient is NaN: a finite loss with a non-finite gradient."""
    return x


_nan_gradient.defvjp(lambda x: (x, None), lambda _, g: (g * np.nan,))


class NaNGradientTask(ToyTask):
    """Loss finite at every step (the toy MSE), gradient NaN at every step."""

    def loss(self, params, batch, rng):
        params = jax.tree.map(_nan_gradient, params)
        return super().loss(params, batch, rng)


def test_finite_loss_with_nonfinite_gradient_is_skipped_and_counted(tmp_path):
    """README: a step whose loss *or gradient* is non-finite is skipped and counted. A guard
    that checks only the loss would apply the NaN update here."""
    c = toy_config(num_steps=4, max_consecutive_nonfinite=100)
    task = NaNGradientTask(c)
    result = trainer_lib.Trainer(c, str(tmp_path), task).run()
    assert int(result.state.nonfinite_total) == 4
    assert all(np.isfinite(np.asarray(p)).all() for p in jax.tree.leaves(result.state.params))
    c = toy_config(num_steps=10, max_consecutive_nonfinite=3)
    with pytest.raises(trainer_lib.NonFiniteError, match="3 consecutive steps"):
        trainer_lib.Trainer(c, str(tmp_path / "b"), NaNGradientTask(c)).run()


class OwnOptimizerTask(ToyTask):
    """A task with its own optimizer and schedule (as gs_fit has), unlike config.optimizer's."""

    @staticmethod
    def schedule(num_steps):
        return optax.linear_schedule(0.02, 0.0, num_steps)

    def optimizer(self, num_steps):
        return optax.sgd(self.schedule(num_steps))

    def learning_rate(self, num_steps):
        return self.schedule(num_steps)


class OwnOptimizerWithoutScheduleTask(OwnOptimizerTask):
    def learning_rate(self, num_steps):
        return None


def test_learning_rate_logged_is_the_one_that_drives_the_optimizer(tmp_path):
    c = toy_config(num_steps=10, log_every_steps=5)  # config: cosine from 3e-3
    logged = lambda d: {  # noqa: E731
        r["step"]: r["train/learning_rate"]
        for r in read_jsonl(str(d / "metrics.jsonl"))
        if "train/learning_rate" in r
    }
    trainer_lib.train(c, str(tmp_path / "own"), OwnOptimizerTask(c))
    # Logged at step s: the rate of the update that produced step s (state.step = s - 1).
    own = {s: float(OwnOptimizerTask.schedule(10)(s - 1)) for s in (5, 10)}
    # rel 1e-5: float32 schedules evaluated inside the jitted step vs eagerly here.
    assert logged(tmp_path / "own") == pytest.approx(own, rel=1e-5)
    trainer_lib.train(c, str(tmp_path / "none"), OwnOptimizerWithoutScheduleTask(c))
    rows = read_jsonl(str(tmp_path / "none" / "metrics.jsonl"))
    assert any("train/loss" in r for r in rows) and not logged(tmp_path / "none")
    trainer_lib.train(c, str(tmp_path / "config"), ToyTask(c))  # config.optimizer's schedule
    default = optim_lib.make_schedule(c.optimizer, 10)
    assert logged(tmp_path / "config") == pytest.approx(
        {s: float(default(s - 1)) for s in (5, 10)}, rel=1e-5
    )
