"""The Qwen2.5-VL vision tower vs transformers' (fp32, CPU): merged features for an image
grid, a video grid, and both packed in one call; the window layout against transformers'
`get_vision_window_index`."""

import jax
import numpy as np
import pytest

from jaxmm.models.qwen2_5_vl.hf import load_hf
from jaxmm.models.qwen2_5_vl.vision import VisionTower, vision_layout

from . import tiny

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

pytestmark = pytest.mark.torch

# fp32 parity: features are O(1); reduction order differs by ~1e-6 (docs/testing.md: 1e-4).
FEATURE_ATOL = 1e-4
# (t, h, w) patch grids. 56 px windows = 2x2 merged tokens: the 6x10 image (3x5 merged) has
# ragged edge windows, the video has 3 frames (full-attention layers stay within a frame).
IMAGE = (1, 6, 10)
VIDEO = (3, 4, 8)


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    model = tiny.torch_model(torch, transformers, seed=0)
    folder = tmp_path_factory.mktemp("qwen25vl_vision")
    model.save_pretrained(folder)
    config, params = load_hf(folder)
    return model, config, params


def _pixels(grids, patch_dim, seed):
    n = sum(t * h * w for t, h, w in grids)
    return np.random.default_rng(seed).normal(size=(n, patch_dim)).astype(np.float32)


def _torch_features(model, pixels, grids):
    with torch.no_grad():
        out = model.model.visual(torch.as_tensor(pixels), grid_thw=torch.as_tensor(grids))
    return out.pooler_output.numpy()


GRIDS = {"image": [IMAGE], "video": [VIDEO], "both": [IMAGE, VIDEO]}


@pytest.mark.parametrize("grids", list(GRIDS.values()), ids=list(GRIDS))
def test_features_match_transformers(loaded, grids):
    model, config, params = loaded
    pixels = _pixels(grids, config.vision.patch_dim, seed=len(grids))
    layout = vision_layout(grids, config.vision)
    ours = jax.jit(VisionTower(config.vision).apply)({"params": params["visual"]}, pixels, layout)
    want = _torch_features(model, pixels, grids)
    assert ours.shape == want.shape == (len(pixels) // 4, config.text.hidden_size)
    assert np.abs(want).max() > 0.5
    np.testing.assert_allclose(np.asarray(ours), want, atol=FEATURE_ATOL, rtol=0)


def test_window_layout_matches_transformers(loaded):
    from transformers.vision_utils import get_vision_cu_seqlens, get_vision_window_index

    _, config, _ = loaded
    v = config.vision
    grids = [IMAGE, VIDEO, (2, 8, 8)]
    layout = vision_layout(grids, v)
    index, cu = get_vision_window_index(
        torch.as_tensor(grids), v.spatial_merge_size, v.window_size, v.patch_size
    )
    np.testing.assert_array_equal(layout.window_index, index.numpy())
    # Segment boundaries = transformers' cumulative window lengths (in patches).
    starts = np.flatnonzero(np.diff(layout.window_segments, prepend=-1)).tolist()
    assert starts + [len(layout.window_segments)] == cu.numpy().tolist()
    frames = get_vision_cu_seqlens(torch.as_tensor(grids)).numpy().tolist()
    starts = np.flatnonzero(np.diff(layout.frame_segments, prepend=-1)).tolist()
    assert starts + [len(layout.frame_segments)] == frames


def test_bad_inputs_named(loaded):
    _, config, params = loaded
    with pytest.raises(ValueError, match="multiples of spatial_merge_size"):
        vision_layout([(1, 5, 4)], config.vision)
    layout = vision_layout([IMAGE], config.vision)
    with pytest.raises(ValueError, match="patches but the layout"):
        VisionTower(config.vision).apply(
            {"params": params["visual"]}, np.zeros((4, config.vision.patch_dim)), layout
        )
