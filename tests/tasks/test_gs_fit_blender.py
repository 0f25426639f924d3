"""gs_fit on a scene from an independent renderer: Blender's Cycles (tests/fixtures/
blender_scene, made by tools/make_blender_fixture.py, NeRF-synthetic layout).

Every other scene in the tests is drawn by jaxmm's own renderer and written by jaxmm's own
writer, so a wrong pose convention in the reader would cancel out there. Here the poses are
Blender's camera world matrices, so held-out views are predicted only if the reader turns
them into the renderer's cameras correctly.
"""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmm import config as config_lib
from jaxmm import tasks
from jaxmm.data import scenes
from jaxmm.eval import image_metrics

FIXTURE = os.path.join(os.path.dirname(os.path.dirname(__file__)), "fixtures", "blender_scene")


def _on_white(views) -> np.ndarray:
    """The task keeps images premultiplied (on black): composite them on white."""
    return views.images + (1.0 - views.alphas[..., None])


def test_fixture_is_a_nerf_synthetic_folder_with_alpha():
    train = scenes.load_scene(FIXTURE, "train")
    test = scenes.load_scene(FIXTURE, "test")
    assert (train.num, test.num) == (40, 8)
    assert train.images.shape[1:] == (96, 96, 3) and train.times is None  # static: no `time`
    # Transparent film: the background is transparent, the object opaque.
    assert 0.1 < float(train.alphas.mean()) < 0.6
    assert float(train.alphas[:, 0, 0].max()) == 0.0
    # Every camera looks at the scene (OpenCV +z toward the origin) from radius 4.
    centres, forward = train.c2w[:, :3, 3], train.c2w[:, :3, 2]
    np.testing.assert_allclose(np.linalg.norm(centres, axis=-1), 4.0, atol=1e-4)
    np.testing.assert_allclose(np.sum(forward * -centres / 4.0, -1), 1.0, atol=1e-5)


@pytest.mark.slow  # ~2 min on a loaded 2-core CPU (one grad-step compilation, 120 steps)
def test_short_fit_predicts_held_out_blender_views(tmp_path):
    from jaxmm.train import trainer as trainer_lib

    c = config_lib.load_config_file("configs/gs_fit.py:runlocal")
    with c.unlocked():
        for k, v in {"data.path": FIXTURE, "data.downscale": 2, "num_steps": 120,
                     "batch_size": 4, "log_every_steps": 40, "model.capacity": 1024,
                     "model.num_init": 500, "model.densify.start": 40, "model.densify.every": 40,
                     "model.densify.stop": 100, "model.sh_degree_every": 40,
                     "evaluation.turntable_frames": 0, "progress_bar": False,
                     "checkpoint.async_save": False}.items():  # fmt: skip
            config_lib.set_key(c, k, v)
    task = tasks.build(c)
    assert (task.height, task.width) == (48, 48)
    # Baseline that knows the data but not the geometry: every test view predicted by the
    # mean training image (the object sits near the centre of every view).
    gt = _on_white(task.test)
    mean_image = np.broadcast_to(_on_white(task.train).mean(0), gt.shape)
    baseline = float(jnp.mean(image_metrics.psnr(jnp.asarray(mean_image), jnp.asarray(gt))))
    before = task.evaluate(task.init(None), 0, "")["psnr_test"]
    # One device: 4 views per step (the render is not sharded across fake CPU devices).
    result = trainer_lib.train(c, str(tmp_path / "run"), task, devices=jax.devices()[:1])
    assert not result.stopped_early and int(result.state.step) == 120
    after = result.eval_metrics["eval/psnr_test"]
    print(f"test PSNR: mean-image baseline {baseline:.2f}, initial {before:.2f}, fit {after:.2f}")
    assert after > max(baseline, before) + 4.0, (baseline, before, after)
    assert result.eval_metrics["eval/psnr_test_min"] > baseline, result.eval_metrics
    # The logged rate is the task's position schedule at the last step (not config.optimizer's).
    position_lr = float(task.learning_rate(120)(119))
    assert result.train_metrics["learning_rate"] == pytest.approx(position_lr, rel=1e-5)
