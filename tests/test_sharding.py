"""Mesh creation and logical-axis rules on 8 fake CPU devices; DP, FSDP and TP agree."""

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from jaxmm import config as config_lib
from jaxmm import sharding, tasks
from jaxmm.train.trainer import Trainer


def test_resolve_mesh_shape():
    assert sharding.resolve_mesh_shape({"data": -1, "fsdp": 2, "tensor": 1}, 8) == {
        "data": 4,
        "fsdp": 2,
        "tensor": 1,
    }
    with pytest.raises(ValueError, match="multiply to 4"):
        sharding.resolve_mesh_shape({"data": 2, "fsdp": 2, "tensor": 1}, 8)


def test_logical_rules_never_reuse_a_mesh_axis():
    rules = sharding.DEFAULT_RULES
    assert sharding.logical_to_spec(("batch", "embed"), rules) == P(("data", "fsdp"), None)
    assert sharding.logical_to_spec(("embed", "mlp"), rules) == P("fsdp", "tensor")


MESHES = {
    "dp": dict(data=-1, fsdp=1, tensor=1),
    "fsdp": dict(data=2, fsdp=4, tensor=1),
    "tp": dict(data=4, fsdp=1, tensor=2),
}


def _toy(mesh, steps=3):
    c = config_lib.load_config_file("configs/toy.py:runlocal")
    with c.unlocked():
        c.num_steps = steps
        c.optimizer.warmup_steps = 0
        c.progress_bar = False
        for k, v in mesh.items():
            c.mesh[k] = v
    return c


def _run_steps(config, tmp_path, devices):
    trainer = Trainer(config, str(tmp_path), tasks.build(config), devices=devices)
    state = trainer.init_state()
    data = trainer.data_iterator()
    losses = []
    step_fn = axes = None
    for _ in range(config.num_steps):
        batch = next(data)
        if step_fn is None:
            step_fn, axes = trainer.compile_step(batch)
        with trainer._context():
            state, metrics = step_fn(
                state, sharding.shard_batch(batch, trainer.mesh, axes, trainer.rules)
            )
        losses.append(float(metrics["loss"]))
    return trainer, state, np.array(losses)


@pytest.fixture(scope="module")
def single_device_losses(tmp_path_factory):
    cfg = _toy(dict(data=1, fsdp=1, tensor=1))
    _, _, losses = _run_steps(cfg, tmp_path_factory.mktemp("one"), jax.devices()[:1])
    return losses


@pytest.mark.parametrize("name", list(MESHES))
def test_strategies_match_one_device(name, tmp_path, single_device_losses):
    trainer, state, losses = _run_steps(_toy(MESHES[name]), tmp_path, jax.devices())
    # Same math, different reduction order across devices: fp32 rounding only.
    np.testing.assert_allclose(losses, single_device_losses, rtol=2e-5, atol=1e-6)
    kernel = state.params["up_0"]["kernel"]  # logical axes (embed, mlp)
    mu = state.opt_state  # optimizer moments must follow the params' sharding
    mu_kernel = [x for x in jax.tree.leaves(mu) if getattr(x, "shape", None) == kernel.shape]
    # Per-device block of the [features=64, hidden=128] kernel: replicated for DP, split on
    # `embed` over fsdp=4 for FSDP, split on `mlp` over tensor=2 for TP.
    expected = {"dp": (64, 128), "fsdp": (16, 128), "tp": (64, 64)}[name]
    assert kernel.sharding.shard_shape(kernel.shape) == expected
    assert mu_kernel and all(m.sharding.shard_shape(m.shape) == expected for m in mu_kernel)
    assert kernel.sharding.is_fully_replicated == (name == "dp")
