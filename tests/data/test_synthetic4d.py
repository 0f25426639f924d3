"""Procedural 4D scenes: determinism by index, independent input/target sampling, motion and
resumable iteration (their renderer, impl="dense", is tested in tests/gaussians/test_dense.py)."""

import grain
import numpy as np

from jaxmm.data import synthetic4d as syn
from jaxmm.data.pipeline import DataShard, batched

SPEC = syn.SceneSpec(image_size=16, num_input_views=2, num_target_views=3, points_per_primitive=16)


def test_record_fields_deterministic_and_in_range():
    src = syn.Synthetic4D(SPEC)
    a, b, c = src[5], src[5], src[6]
    assert a["input_images"].shape == (2, 16, 16, 3) and a["target_images"].shape == (3, 16, 16, 3)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    assert not np.array_equal(a["input_images"], c["input_images"])
    assert a["input_images"].min() >= 0 and a["input_images"].max() <= 1
    assert np.all(np.abs(a["target_times"]) <= 1)
    np.testing.assert_allclose(a["input_times"], 2 * a["input_frames"] / 23 - 1, atol=1e-6)
    # The object is in view: not every pixel is background white.
    assert np.mean(np.all(a["input_images"] > 0.99, axis=-1)) < 0.95


def test_scene_moves_over_time():
    scene = syn.Synthetic4D(SPEC).scene(0)
    m0, _ = scene.at(-1.0)
    m1, _ = scene.at(1.0)
    assert np.max(np.abs(m1 - m0)) > 0.05


def test_grain_iterator_resumes_exactly():
    shard = DataShard(index=0, count=1, per_process_batch=2, seed=0)
    ds = batched(syn.Synthetic4D(SPEC), shard, shuffle=False)
    it = iter(ds)
    next(it)
    state = it.get_state()
    want = next(it)
    it2 = iter(ds)
    it2.set_state(state)
    got = next(it2)
    np.testing.assert_array_equal(want["target_images"], got["target_images"])
    assert isinstance(ds, grain.IterDataset)
