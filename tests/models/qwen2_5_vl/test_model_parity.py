"""Qwen2.5-VL with image and video inputs vs transformers (fp32, CPU): the M-RoPE positions
(`rope_index` vs `get_rope_index`) and the logits."""

import jax
import numpy as np
import pytest

from jaxmm.models.qwen2_5_vl.hf import load_hf
from jaxmm.models.qwen2_5_vl.model import Qwen25VL
from jaxmm.models.qwen2_5_vl.mrope import rope_index, token_types
from jaxmm.models.qwen2_5_vl.vision import vision_layout

from . import tiny

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

pytestmark = pytest.mark.torch

LOGIT_ATOL = 1e-4  # docs/testing.md model parity (fp32)


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    model = tiny.torch_model(torch, transformers, seed=4)
    folder = tmp_path_factory.mktemp("qwen25vl_model")
    model.save_pretrained(folder)
    config, params = load_hf(folder)
    return model, config, params


def _row(parts, seed):
    """parts: ints = that many random text tokens; ("image"|"video", n) = a vision run."""
    rng = np.random.default_rng(seed)
    out = []
    for p in parts:
        if isinstance(p, int):
            out += rng.integers(0, 240, p).tolist()
        else:
            token = tiny.IMAGE_TOKEN if p[0] == "image" else tiny.VIDEO_TOKEN
            out += [tiny.VISION_START] + [token] * p[1] + [tiny.VISION_END]
    return out


def _tokens(rows):
    width = max(len(r) for r in rows)
    tokens = np.zeros((len(rows), width), np.int64)
    mask = np.zeros((len(rows), width), np.int64)
    for i, r in enumerate(rows):
        tokens[i, : len(r)], mask[i, : len(r)] = r, 1
    return tokens, mask


def _n(grid):
    return grid[0] * grid[1] * grid[2] // 4


CASES = {
    # two images in two rows of equal length
    "images": dict(
        rows=[[5, ("image", _n((1, 6, 10))), 7], [3, ("image", _n((1, 4, 4))), 20]],
        images=[(1, 6, 10), (1, 4, 4)],
    ),
    # a video whose time steps are 2 tokens/s x 0.75 s = 1.5 positions apart (truncated)
    "video": dict(rows=[[4, ("video", _n((3, 4, 8))), 6]], videos=[(3, 4, 8)], seconds=[0.75]),
    # image + video in one row, a padded second row (attention_mask)
    "mixed_padded": dict(
        rows=[
            [2, ("image", _n((1, 4, 6))), 3, ("video", _n((2, 6, 4))), 5],
            [6, ("video", _n((2, 4, 4))), 2],
        ],
        images=[(1, 4, 6)],
        videos=[(2, 6, 4), (2, 4, 4)],
        seconds=[1.0, 2.0],
        mask=True,
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_positions_and_logits_match_transformers(loaded, case):
    model, config, params = loaded
    spec = CASES[case]
    rows = [_row(r, seed=i) for i, r in enumerate(spec["rows"])]
    tokens, mask = _tokens(rows)
    images, videos = spec.get("images"), spec.get("videos")
    seconds = spec.get("seconds")
    attention_mask = mask if spec.get("mask") else None
    rng = np.random.default_rng(9)
    patch_dim = config.vision.patch_dim
    pixels = rng.normal(size=(sum(np.prod(g) for g in images or []), patch_dim)).astype(np.float32)
    pixels_v = rng.normal(size=(sum(np.prod(g) for g in videos or []), patch_dim)).astype(
        np.float32
    )

    positions, deltas = rope_index(
        tokens,
        image_token_id=config.image_token_id,
        video_token_id=config.video_token_id,
        spatial_merge_size=config.vision.spatial_merge_size,
        tokens_per_second=config.vision.tokens_per_second,
        image_grid_thw=images,
        video_grid_thw=videos,
        second_per_grid_ts=seconds,
        attention_mask=attention_mask,
    )
    types = token_types(tokens, config.image_token_id, config.video_token_id)
    kw = dict(
        input_ids=torch.as_tensor(tokens),
        mm_token_type_ids=torch.as_tensor(types),
        image_grid_thw=None if images is None else torch.as_tensor(images),
        video_grid_thw=None if videos is None else torch.as_tensor(videos),
        second_per_grid_ts=None if seconds is None else torch.as_tensor(seconds),
        attention_mask=None if attention_mask is None else torch.as_tensor(attention_mask),
    )
    want_pos, want_deltas = model.model.get_rope_index(**kw)
    np.testing.assert_array_equal(positions, want_pos.numpy())
    np.testing.assert_array_equal(deltas, want_deltas.numpy()[:, 0])

    with torch.no_grad():
        want = model(
            **kw,
            pixel_values=None if images is None else torch.as_tensor(pixels),
            pixel_values_videos=None if videos is None else torch.as_tensor(pixels_v),
        ).logits.numpy()
    inputs = {}
    if images:
        inputs.update(pixel_values=pixels, image_layout=vision_layout(images, config.vision))
    if videos:
        inputs.update(
            pixel_values_videos=pixels_v, video_layout=vision_layout(videos, config.vision)
        )
    logits, _ = jax.jit(Qwen25VL(config).apply)(
        {"params": params}, tokens, positions, attention_mask=attention_mask, **inputs
    )
    logits = np.asarray(logits)
    real = mask.astype(bool)  # padded positions hold garbage in both
    assert np.abs(want[real]).max() > 0.5
    np.testing.assert_allclose(logits[real], want[real], atol=LOGIT_ATOL, rtol=0)
    # The vision features and 3-D positions matter: plain text positions change the logits.
    flat = np.broadcast_to(np.arange(tokens.shape[1]), tokens.shape)
    plain, _ = jax.jit(Qwen25VL(config).apply)(
        {"params": params}, tokens, flat, attention_mask=attention_mask, **inputs
    )
    assert np.abs(np.asarray(plain)[real] - want[real]).max() > 1e-2
