"""Parameter groups with their own learning-rate factor (`config.optimizer.lr_scale`)."""

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from jaxmm import config as config_lib
from jaxmm.train import optim


def _opt_cfg(name="adamw", **lr_scale):
    c = config_lib.base_config().optimizer
    with c.unlocked():
        c.name = name
        c.learning_rate = 1e-2
        c.schedule = "constant"
        c.clip_norm = 0.0
        c.lr_scale = ml_collections.ConfigDict(lr_scale)
    return c


PARAMS = {
    "backbone": {"frames": {"proj": jnp.ones((2, 3))}, "bert": {"w": jnp.ones((3,))}},
    "head": {"kernel": jnp.ones((3, 2))},
}


def _updates(cfg, trainable=None):
    tx = optim.make_optimizer(cfg, 10, trainable, PARAMS)
    grads = jax.tree.map(lambda p: 0.5 * jnp.ones_like(p), PARAMS)
    updates, _ = tx.update(grads, tx.init(PARAMS), PARAMS)
    return updates


@pytest.mark.parametrize("name", ["adamw", "sgd"])
def test_a_scaled_group_steps_by_its_factor_and_the_rest_by_the_base_lr(name):
    plain = _updates(_opt_cfg(name))
    scaled = _updates(_opt_cfg(name, frames=10.0))
    frames = ("backbone", "frames", "proj")
    for path in (frames, ("backbone", "bert", "w"), ("head", "kernel")):
        got, want = (
            functools.reduce(dict.get, path, scaled),
            functools.reduce(dict.get, path, plain),
        )
        factor = 10.0 if path == frames else 1.0
        np.testing.assert_allclose(np.asarray(got), factor * np.asarray(want), rtol=1e-6)
    assert float(jnp.abs(plain["head"]["kernel"]).max()) > 0  # the base group moves at all


def test_frozen_leaves_stay_frozen_inside_a_scaled_group():
    trainable = jax.tree.map(lambda _: True, PARAMS)
    trainable["backbone"]["frames"]["proj"] = False
    updates = _updates(_opt_cfg(frames=10.0), trainable)
    assert float(jnp.abs(updates["backbone"]["frames"]["proj"]).max()) == 0.0
    assert float(jnp.abs(updates["backbone"]["bert"]["w"]).max()) > 0.0


def test_lr_scale_errors_name_the_key():
    with pytest.raises(ValueError, match=r"lr_scale: \['framez'\] name no parameter module"):
        _updates(_opt_cfg(framez=10.0))
    with pytest.raises(ValueError, match=r"lr_scale.frames: must be > 0"):
        optim.make_optimizer(_opt_cfg(frames=0.0), 10, params=PARAMS)
    with pytest.raises(ValueError, match=r"lr_scale needs make_optimizer"):
        optim.make_optimizer(_opt_cfg(frames=10.0), 10)


def test_no_lr_scale_keeps_the_plain_optimizer_state():
    """Without groups the state tree is the one checkpoints of earlier runs hold."""
    cfg = _opt_cfg()
    state = optim.make_optimizer(cfg, 10).init(PARAMS)
    assert not isinstance(state, optax.MultiTransformState)
