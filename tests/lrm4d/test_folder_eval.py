"""4D-LRM evaluation on D-NeRF folders: setup-following view choice, resolution contract, media."""

import math
import os

import numpy as np
import pytest

from jaxmm import lrm4d
from jaxmm.data import synthetic4d as syn
from jaxmm.data.dnerf import load_split
from jaxmm.data.synthetic_dnerf import write_dnerf_scene
from jaxmm.eval.image_metrics import psnr


def _grid_capture(frames=8, azimuths=8, offset_deg=30.0):
    """Every (azimuth, frame) pair of a grid, shuffled: exact matches exist for every setup."""
    rng = np.random.default_rng(0)
    pairs = [(a, f) for f in range(frames) for a in range(azimuths)]
    rng.shuffle(pairs)
    c2w = np.stack(
        [
            syn.orbit_c2w(math.radians(offset_deg + 360.0 * a / azimuths),
                          math.radians(rng.uniform(-10, 40)), rng.uniform(2.4, 2.8))
            for a, _ in pairs
        ]
    )  # fmt: skip
    # OpenGL look-at -> the OpenCV c2w convention the folders use
    times = np.array([f / (frames - 1) for _, f in pairs], np.float32)
    return c2w.astype(np.float32), times, pairs


def test_camera_azimuths_recover_the_orbit():
    c2w, _, pairs = _grid_capture()
    az = lrm4d.camera_azimuths(c2w)
    want = (np.array([a for a, _ in pairs]) - pairs[0][0]) * 45.0 % 360.0
    gap = np.abs(az - want) % 360.0
    np.testing.assert_allclose(np.minimum(gap, 360 - gap), 0.0, atol=1e-3)


@pytest.mark.parametrize("setup", lrm4d.SETUPS)
def test_selection_follows_each_setup_exactly_when_it_can(setup):
    c2w, times, pairs = _grid_capture()
    idx, stats = lrm4d.select_input_views(c2w, times, setup, 8)
    assert stats["input_azimuth_gap_deg"] < 1e-3 and stats["input_time_gap_frames"] < 1e-3
    assert len(set(idx.tolist())) == 8
    first = pairs[int(np.argmin(times))][0]  # azimuths are relative to the earliest view
    got = [((pairs[i][0] - first) * 45.0 % 360.0, pairs[i][1]) for i in idx]
    want = [(a % 360.0, f) for a, f in lrm4d.setup_views(setup, 8)]
    assert got == want


def test_selection_rejects_more_inputs_than_views():
    c2w, times, _ = _grid_capture(frames=2, azimuths=2)
    with pytest.raises(ValueError, match=r"num_inputs=5 must be in \[1, 4\]"):
        lrm4d.select_input_views(c2w, times, "alternating_canonical", 5)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("dnerf_synth")
    spec = syn.SceneSpec(image_size=32, points_per_primitive=16, stream=1)
    write_dnerf_scene(root, spec, 0, num_train=24, num_test=4)
    return str(root), spec


def test_exported_folder_round_trips_and_keeps_alpha(folder):
    root, spec = folder
    split = load_split(root, "test")
    rgb, alpha = syn.render_scene(
        syn.Synthetic4D(spec).scene(0), split.c2w, split.model_times(), spec
    )
    assert float(np.min(psnr(split.images, rgb))) > 40.0  # only 8-bit rounding is lost
    np.testing.assert_allclose(split.alphas, alpha, atol=1 / 255 + 1e-6)
    black = load_split(root, "test", background="black")
    empty = split.alphas < 1e-6
    assert empty.any() and np.all(black.images[empty] == 0) and np.all(split.images[empty] == 1)
    rand = load_split(root, "test", background="random", seed=3)
    bg = rand.images[0][empty[0]]
    assert np.ptp(bg, axis=0).max() < 1e-6 and not np.allclose(bg[0], 1.0)  # one colour/image
    with pytest.raises(ValueError, match="background must be one of"):
        load_split(root, "test", background="grey")


def test_folder_evaluation_follows_the_setup(trained, folder):
    workdir, config, _ = trained
    root, _ = folder
    model = lrm4d.load(workdir)
    picks, results = {}, {}
    for setup in lrm4d.SETUPS:
        clip = lrm4d.dnerf_eval_clip(root, setup, 2, 16)
        picks[setup] = tuple(clip["input_indices"].tolist())
        results[setup] = lrm4d.evaluate(model, root, setup)
        assert results[setup]["num_inputs"] == config.data.num_input_views == 2
        assert results[setup]["image_size"] == 16  # the 32² folder is resized to the model's
        assert results[setup]["num_targets"] == 4
    assert len(set(picks.values())) == 3  # every setup sees other views ...
    assert len({r["model/psnr"] for r in results.values()}) == 3  # ... and scores differently
    with pytest.raises(ValueError, match="trained at 16x16"):
        lrm4d.evaluate(model, root, image_size=32)


@pytest.mark.filterwarnings("ignore:os.fork:RuntimeWarning")  # the MP4 writer spawns ffmpeg
def test_evaluate_workdir_on_a_folder_writes_its_views(trained, folder, tmp_path):
    workdir, _, _ = trained
    root, _ = folder
    out = lrm4d.evaluate_workdir(
        workdir, dnerf_root=root, setups=("two_rotating",), out_dir=str(tmp_path)
    )
    assert out["media_source"] == root
    assert os.path.basename(out["gif"]) == "test_views.gif" and os.path.getsize(out["mp4"]) > 0
    assert out["two_rotating"]["input_azimuth_gap_deg"] >= 0
