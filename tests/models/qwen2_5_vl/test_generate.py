"""Greedy decoding with the KV cache and M-RoPE (prefill with an image, then one token per
step at position cache length + rope delta) vs transformers' `generate`: the tokens and every
step's logits."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmm.models.llm import init_cache
from jaxmm.models.qwen2_5_vl.hf import load_hf
from jaxmm.models.qwen2_5_vl.model import Qwen25VL
from jaxmm.models.qwen2_5_vl.mrope import decode_positions, rope_index, token_types
from jaxmm.models.qwen2_5_vl.vision import vision_layout

from . import tiny

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

pytestmark = pytest.mark.torch

LOGIT_ATOL = 1e-4  # docs/testing.md model parity (fp32)
NEW_TOKENS = 12
GRID = (1, 6, 8)  # 12 merged tokens; after the image the position jumps by max(3, 4) = 4


def test_greedy_with_image_matches_transformers(tmp_path):
    model = tiny.torch_model(torch, transformers, seed=11)
    model.save_pretrained(tmp_path)
    config, params = load_hf(tmp_path)
    n = int(np.prod(GRID))
    prompt = [3, 17, tiny.VISION_START] + [tiny.IMAGE_TOKEN] * (n // 4) + [tiny.VISION_END, 42]
    tokens = np.asarray([prompt], np.int64)
    pixels = np.random.default_rng(2).normal(size=(n, config.vision.patch_dim)).astype(np.float32)
    positions, deltas = rope_index(
        tokens,
        image_token_id=config.image_token_id,
        video_token_id=config.video_token_id,
        spatial_merge_size=2,
        tokens_per_second=config.vision.tokens_per_second,
        image_grid_thw=[GRID],
    )
    assert deltas[0] < 0  # the image took fewer positions than tokens

    qwen = Qwen25VL(config)
    cache = init_cache(config.text, 1, len(prompt) + NEW_TOKENS, jnp.float32)
    layout = vision_layout([GRID], config.vision)

    @jax.jit
    def prefill(params, tokens, positions, pixels, layout, cache):
        logits, cache = qwen.apply(
            {"params": params},
            tokens,
            positions,
            pixel_values=pixels,
            image_layout=layout,
            cache=cache,
            last_logits_only=True,
        )
        return logits[:, -1], cache

    @jax.jit
    def step(params, token, cache, delta):
        positions = decode_positions(cache.lengths, delta)
        logits, cache = qwen.apply({"params": params}, token[:, None], positions, cache=cache)
        return logits[:, -1], cache

    logits, cache = prefill(params, tokens, positions, pixels, layout, cache)
    steps = [np.asarray(logits)]
    for _ in range(NEW_TOKENS - 1):
        token = jnp.argmax(logits, -1)
        logits, cache = step(params, token, cache, jnp.asarray(deltas))
        steps.append(np.asarray(logits))
    ours = [int(np.argmax(s[0])) for s in steps]

    with torch.no_grad():
        ref = model.generate(
            input_ids=torch.as_tensor(tokens),
            pixel_values=torch.as_tensor(pixels),
            image_grid_thw=torch.as_tensor([GRID]),
            mm_token_type_ids=torch.as_tensor(
                token_types(tokens, config.image_token_id, config.video_token_id)
            ),
            max_new_tokens=NEW_TOKENS,
            do_sample=False,
            pad_token_id=0,
            output_logits=True,
            return_dict_in_generate=True,
        )
    assert ours == ref.sequences[0, len(prompt) :].tolist()
    for ours_step, ref_step in zip(steps, ref.logits, strict=True):
        np.testing.assert_allclose(ours_step, ref_step.numpy(), atol=LOGIT_ATOL, rtol=0)
