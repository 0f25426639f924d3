"""Public API: train -> save -> load -> reconstruct equality, render, evaluate, GIF and PLY."""

import os

import jax
import numpy as np
import pytest
from PIL import Image

from jaxmm import gaussians, lrm4d
from jaxmm.data.synthetic4d import SceneSpec
from jaxmm.models import lrm4d as lrm4d_model
from jaxmm.tasks.lrm4d import LRM4DTask


def test_load_reconstruct_equals_training_params(trained):
    workdir, config, params = trained
    model = lrm4d.load(workdir)
    clip = lrm4d.synthetic_eval_clips(
        SceneSpec.from_config(config), 1, "alternating_canonical", 2, 2
    )[0]
    g = model.reconstruct(
        clip["input_images"], lrm4d.clip_cameras(clip, "input"), clip["input_times"]
    )
    task = LRM4DTask(config)
    ref = lrm4d_model.reconstruct(
        task.model,
        params,
        clip["input_images"][None],
        clip["input_times"][None],
        jax.tree.map(lambda x: x[None], lrm4d.clip_cameras(clip, "input")),
    )
    # Same params; the reference runs op by op, load() runs one jitted program whose fusions
    # round fp32 differently: 1e-5 (values are O(1)).
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b[0], atol=1e-5, rtol=1e-5), g, ref)
    assert g.means.shape == (2 * 16 * 16, 4)
    frame = model.render(g, jax.tree.map(lambda x: x[0], lrm4d.clip_cameras(clip, "target")), 0.0)
    assert frame.rgb.shape == (16, 16, 3) and np.all(np.isfinite(frame.rgb))
    with pytest.raises(ValueError, match="one time per image"):
        model.reconstruct(clip["input_images"], lrm4d.clip_cameras(clip, "input"), [0.0])


def test_filters_drop_gaussians_far_in_time(trained):
    workdir, _, _ = trained
    model = lrm4d.load(workdir)
    clip = lrm4d.synthetic_eval_clips(
        SceneSpec.from_config(model.config), 1, "alternating_canonical", 2, 1
    )[0]
    g = model.reconstruct(
        clip["input_images"], lrm4d.clip_cameras(clip, "input"), clip["input_times"]
    )
    identity = np.tile(np.array([1.0, 0.0, 0.0, 0.0], np.float32), (g.num, 1))
    g = g.replace(  # no space-time rotation, so Σtt = scale_t²
        means=np.asarray(g.means).copy(),
        scales=np.asarray(g.scales).copy(),
        q_left=identity,
        q_right=identity,
        opacities=np.full(g.num, 0.9, np.float32),
    )
    g.means[:, 3] = np.where(np.arange(g.num) % 2 == 0, -1.0, 1.0)
    g.scales[:, 3] = 0.1
    keep = np.asarray(lrm4d.keep_mask(g, -1.0))
    # p(t) = exp(-0.5 (2 / 0.1)^2) ~ 0 for the Gaussians centred at t = +1.
    np.testing.assert_array_equal(keep, np.arange(g.num) % 2 == 0)


def test_setups_follow_the_paper():
    alt = lrm4d.setup_views("alternating_canonical", 8)
    assert [a for a, _ in alt[:5]] == [0.0, 90.0, 180.0, 270.0, 0.0]
    assert [f for _, f in alt] == list(range(8))
    interp = lrm4d.setup_views("frame_interpolation", 8)
    assert sorted({f for _, f in interp}) == [0, 2, 4, 6] and len(interp) == 8
    rot = lrm4d.setup_views("two_rotating", 8)
    assert rot[0] == (0.0, 0) and rot[1] == (225.0, 1)
    assert len(lrm4d.setup_views("alternating_canonical", 24, num_inputs=4)) == 4
    with pytest.raises(ValueError, match="unknown setup"):
        lrm4d.setup_views("orbit", 8)


def test_novel_times_hold_out_every_input_frame(trained):
    _, config, _ = trained
    spec = SceneSpec.from_config(config)
    for novel in (False, True):
        clips = lrm4d.synthetic_eval_clips(
            spec, 2, "frame_interpolation", num_inputs=None, num_targets=16, novel_times=novel
        )
        seen = [set(c["input_frames"].tolist()) & set(c["target_frames"].tolist()) for c in clips]
        assert (not any(seen)) if novel else any(seen)  # 16 random frames of 24, half of them seen
    with pytest.raises(ValueError, match="sees every one"):
        lrm4d.synthetic_eval_clips(spec, 1, "alternating_canonical", novel_times=True)


@pytest.mark.filterwarnings("ignore:os.fork:RuntimeWarning")  # the MP4 writer spawns ffmpeg
def test_evaluate_workdir_writes_metrics_gif_mp4_png_ply(trained):
    workdir, _, _ = trained
    out = lrm4d.evaluate_workdir(workdir, num_scenes=1, gif_frames=4)
    m = out["alternating_canonical"]
    for key in ("model/psnr", "model/ssim", "nearest_view/psnr", "mean_colour/ssim"):
        assert np.isfinite(m[key])
    assert os.path.getsize(out["gif"]) > 0 and os.path.getsize(out["mp4"]) > 0
    assert Image.open(out["png"]).size == (6 * (4 * 16 + 2), 2 * (4 * 16 + 2))  # 6 cols, 2 rows
    ply = gaussians.load_ply(out["ply"])  # standard 3DGS layout, read back by our loader
    assert isinstance(ply, gaussians.Gaussians3D) and ply.num == out["ply_gaussians"] > 0
    assert os.path.isfile(os.path.join(workdir, "eval", "metrics.json"))


def test_evaluate_reports_lpips_when_weights_are_given(trained, tmp_path):
    from safetensors.numpy import save_file

    from jaxmm.eval.lpips import random_state_dict

    workdir, config, _ = trained
    model = lrm4d.load(workdir)
    path = str(tmp_path / "lpips_vgg.safetensors")
    save_file(random_state_dict("vgg"), path)
    m = lrm4d.evaluate(
        model, SceneSpec.from_config(config), num_scenes=1, num_targets=2, lpips_weights=path
    )
    for name in ("model", "nearest_view", "mean_colour"):
        assert np.isfinite(m[f"{name}/lpips"]) and m[f"{name}/lpips"] > 0
    assert "model/lpips" not in lrm4d.evaluate(model, SceneSpec.from_config(config), num_scenes=1)
    with pytest.raises(FileNotFoundError, match="LPIPS weights file"):
        lrm4d.evaluate_workdir(workdir, lpips_weights=str(tmp_path / "missing.safetensors"))
