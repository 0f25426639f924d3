"""gs_fit: the 3DGS optimizer (SH degree schedule, frozen leaves, densification in the step)
and a short end-to-end fit of a tiny procedural D-NeRF folder through the shared trainer."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmm import config as config_lib
from jaxmm import gaussians as G
from jaxmm import tasks
from jaxmm.data import scenes
from jaxmm.gaussians import density
from jaxmm.tasks import gs_fit_optim


def _config(**overrides):
    c = config_lib.load_config_file("configs/gs_fit.py:runlocal")
    with c.unlocked():
        c.progress_bar = False
        c.checkpoint.async_save = False
        for k, v in overrides.items():
            config_lib.set_key(c, k, v)
    return c


def test_sh_degree_schedule():
    masks = [np.asarray(gs_fit_optim.sh_band_mask(jnp.int32(s), 100, 3, 15)) for s in
             (0, 99, 100, 250, 399, 10_000)]  # fmt: skip
    assert [int(m.sum()) for m in masks] == [0, 0, 3, 8, 15, 15]
    assert int(gs_fit_optim.sh_band_mask(jnp.int32(10_000), 100, 1, 15).sum()) == 3  # capped


def _tiny_params(cap=8, views=2):
    return {
        "means": jnp.zeros((cap, 3)),
        "log_scales": jnp.full((cap, 3), -3.0),
        "quats": jnp.tile(jnp.array([1.0, 0, 0, 0]), (cap, 1)),
        "opacity_logits": jnp.zeros((cap,)),
        "sh_dc": jnp.zeros((cap, 3)),
        "sh_rest": jnp.zeros((cap, 15, 3)),
        "alive": (jnp.arange(cap) < 4).astype(jnp.float32),
        "probe": jnp.zeros((views, cap, 2)),
    }


def test_optimizer_freezes_bands_alive_and_probe_then_densifies():
    c = _config()
    m = c.model
    with c.unlocked():
        m.sh_degree_every, m.densify.start, m.densify.every, m.densify.stop = 3, 0, 2, 100
        m.densify.grad_threshold = 1e-6
        m.densify.reset_every = 0
    rot = lambda p: G.quat_to_rotmat(p["quats"])  # noqa: E731
    tx = gs_fit_optim.make(m, num_steps=10, extent=1.0, rotation=rot, image_size=32,
                           views_per_step=2)  # fmt: skip
    params = _tiny_params()
    state = tx.init(params)
    grads = jax.tree.map(jnp.ones_like, params)
    grads["probe"] = jnp.ones_like(params["probe"]).at[:, 4:].set(0.0)  # alive ones seen
    step = jax.jit(tx.update)
    updates, state = step(grads, state, params)  # step 1: not a densification step
    params = jax.tree.map(jnp.add, params, updates)
    assert float(jnp.abs(params["sh_rest"]).max()) == 0.0  # degree 0 for 3 steps
    np.testing.assert_array_equal(params["probe"], 0.0)
    assert float(params["alive"].sum()) == 4
    updates, state = step(grads, state, params)  # step 2: densify (every 2)
    params = jax.tree.map(jnp.add, params, updates)
    assert float(params["alive"].sum()) == 8  # 4 clones into the 4 free slots
    for _ in range(2):  # steps 3, 4: band 1 active
        updates, state = step(grads, state, params)
        params = jax.tree.map(jnp.add, params, updates)
    rest = np.abs(np.asarray(params["sh_rest"]))
    assert rest[:, :3].max() > 0 and rest[:, 3:].max() == 0.0


@pytest.mark.slow  # ~1-2 min on a loaded 2-core CPU (two compilations of a grad step)
def test_fit_of_a_tiny_folder_raises_test_psnr(tmp_path):
    from jaxmm.train import trainer as trainer_lib

    data = tmp_path / "scene"
    scenes.write_procedural_scene(str(data), num_train=8, num_test=2, size=32)
    c = _config(**{"data.path": str(data), "num_steps": 40, "batch_size": 8,
                   "log_every_steps": 20, "evaluation.turntable_frames": 4,
                   "evaluation.mp4": False})  # fmt: skip
    task = tasks.build(c)
    before = task.evaluate(task.init(None), 0, "")["psnr_test"]
    result = trainer_lib.train(c, str(tmp_path / "run"), task)
    after = result.eval_metrics["eval/psnr_test"]
    assert after > before + 2.0, (before, after)
    assert np.isfinite(result.eval_metrics["eval/ssim_test"])
    run = tmp_path / "run"
    assert os.path.isfile(run / "renders" / "step_000040" / "contact_sheet.png")
    assert os.path.isfile(run / "turntable.gif")
    g = G.load_ply(run / "gaussians.ply")
    assert g.num == int(result.eval_metrics["eval/alive"]) > 0


def test_alive_mask_reaches_the_task_renderer():
    """The task's Gaussians give dead slots zero opacity (what the renderer culls)."""
    c = _config()
    task = tasks.build(c)
    params = task.init(None)
    g = task.gaussians(params)
    alive = np.asarray(params["alive"]) > 0.5
    assert (~alive).any() and alive.any()
    assert np.all(np.asarray(g.opacities)[~alive] == 0.0)
    assert np.all(np.asarray(g.opacities)[alive] > 0.0)
    np.testing.assert_array_equal(
        density.apply_alive(jnp.ones(3), jnp.array([1.0, 0.0, 1.0])), [1.0, 0.0, 1.0]
    )
