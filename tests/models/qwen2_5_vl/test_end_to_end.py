"""From a uint8 image and a prompt with one placeholder to logits, through the steps
docs/clamr.md shows (processor, expand_placeholders, rope_index, vision_layout, Qwen25VL), vs
transformers' PIL image processor + model on the same image and prompt."""

import jax
import numpy as np
import pytest

from jaxmm.models.qwen2_5_vl.hf import load_hf
from jaxmm.models.qwen2_5_vl.model import Qwen25VL
from jaxmm.models.qwen2_5_vl.mrope import rope_index, token_types
from jaxmm.models.qwen2_5_vl.processor import Qwen25VLProcessor, expand_placeholders
from jaxmm.models.qwen2_5_vl.vision import vision_layout

from . import tiny

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

pytestmark = pytest.mark.torch

LOGIT_ATOL = 1e-4  # docs/testing.md model parity (fp32)
MAX_PIXELS = 28 * 28 * 20  # keeps the grid small: 130x170 px -> 84x140 -> 6x10 patches


def test_image_and_prompt_to_logits(tmp_path):
    model = tiny.torch_model(torch, transformers, seed=5)
    model.save_pretrained(tmp_path)
    config, params = load_hf(tmp_path)
    image = np.random.default_rng(0).integers(0, 256, (130, 170, 3), dtype=np.uint8)
    prompt = [5, 9, tiny.VISION_START, tiny.IMAGE_TOKEN, tiny.VISION_END, 7, 11]

    proc = Qwen25VLProcessor(max_pixels=MAX_PIXELS)
    pixels, grids = proc.images([image])
    ids = expand_placeholders(
        prompt,
        image_token_id=config.image_token_id,
        video_token_id=config.video_token_id,
        image_tokens=[proc.num_tokens(g) for g in grids],
    )
    tokens = np.asarray([ids])
    positions, _ = rope_index(
        tokens,
        image_token_id=config.image_token_id,
        video_token_id=config.video_token_id,
        spatial_merge_size=2,
        tokens_per_second=config.vision.tokens_per_second,
        image_grid_thw=grids,
    )
    logits, _ = jax.jit(Qwen25VL(config).apply)(
        {"params": params},
        tokens,
        positions,
        pixel_values=pixels,
        image_layout=vision_layout(grids, config.vision),
    )

    ref = transformers.Qwen2VLImageProcessorPil(max_pixels=MAX_PIXELS)(
        images=[image], return_tensors="pt"
    )
    n = int(ref["image_grid_thw"].prod()) // 4
    ref_ids = torch.as_tensor([prompt[:3] + [tiny.IMAGE_TOKEN] * n + prompt[4:]])
    assert ref_ids.tolist() == tokens.tolist() and grids == [(1, 6, 10)]
    with torch.no_grad():
        want = model(
            input_ids=ref_ids,
            pixel_values=ref["pixel_values"],
            image_grid_thw=ref["image_grid_thw"],
            mm_token_type_ids=torch.as_tensor(
                token_types(tokens, config.image_token_id, config.video_token_id)
            ),
        ).logits.numpy()
    np.testing.assert_allclose(np.asarray(logits), want, atol=LOGIT_ATOL, rtol=0)
