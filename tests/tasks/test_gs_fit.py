"""gs_fit task: the loss trains with plain optax, and the shared trainer runs it end to end."""

import glob
import os

import jax
import numpy as np
import optax
import pytest

from jaxmm import config as config_lib
from jaxmm import gaussians as G
from jaxmm import tasks
from jaxmm.tasks import gs_fit


def _config(**overrides):
    c = config_lib.load_config_file("configs/gs_fit.py:runlocal")
    with c.unlocked():
        c.progress_bar = False
        c.checkpoint.async_save = False
        for k, v in overrides.items():
            config_lib.set_key(c, k, v)
    return c


@pytest.mark.slow  # ~2 min on a loaded 2-core CPU (ground-truth renders + a jitted grad step)
def test_loss_decreases_with_a_few_adam_steps():
    c = _config(**{"data.num_train_views": 4})
    task = gs_fit.build(c)
    images = task.images("train")
    assert images.shape == (4, 32, 32, 3) and 0.0 <= images.min() and images.max() <= 1.0
    assert images.std() > 0.1  # the scene is visible, not a blank background
    cams = gs_fit.camera_arrays(task.train_cams)
    batch = {"image": images[:4], "c2w": cams["c2w"][:4], "intrinsics": cams["intrinsics"][:4]}
    params = task.init(jax.random.PRNGKey(0))
    tx = optax.adam(1e-2)
    opt = tx.init(params)

    @jax.jit
    def step(params, opt):
        (loss, metrics), grads = jax.value_and_grad(task.loss, has_aux=True)(params, batch, None)
        updates, opt = tx.update(grads, opt, params)
        return optax.apply_updates(params, updates), opt, loss, metrics

    losses = []
    for _ in range(6):
        params, opt, loss, metrics = step(params, opt)
        losses.append(float(loss))
    # Adam at 1e-2 from a random init: every step improves, ~1% each.
    assert all(b < a for a, b in zip(losses, losses[1:], strict=False)), losses
    assert losses[-1] < 0.97 * losses[0], losses
    assert float(metrics["overflow"]) == 0.0


@pytest.mark.slow
def test_trainer_runs_gs_fit_and_writes_renders_and_ply(tmp_path):
    from jaxmm.train import trainer as trainer_lib

    c = _config(num_steps=20, eval_every_steps=20, log_every_steps=10, batch_size=8)  # 8 devices
    result = trainer_lib.train(c, str(tmp_path), tasks.build(c))
    assert np.isfinite(result.eval_metrics["eval/psnr_test"])
    assert len(glob.glob(str(tmp_path / "renders" / "step_000020" / "test_*.png"))) == 8
    g = G.load_ply(os.path.join(tmp_path, "gaussians.ply"))
    assert g.means.shape == (c.model.num_gaussians, 3)
