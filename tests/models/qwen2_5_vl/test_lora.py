"""LoRA on Qwen2.5-VL's language model (the CLaMR paper's adapters: q/k/v/o/gate/up/down),
through the shared `jaxmm.nn.lora` machinery: factors only on the text side, the model starts
equal to the base, the factors get gradients, merging gives the unmerged logits."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmm.models.qwen2_5_vl.config import Qwen25VLConfig
from jaxmm.models.qwen2_5_vl.hf import abstract_params
from jaxmm.models.qwen2_5_vl.model import Qwen25VL
from jaxmm.models.qwen2_5_vl.mrope import rope_index
from jaxmm.models.qwen2_5_vl.vision import vision_layout
from jaxmm.nn.lora import LoRAConfig, add_lora, merge_lora, trainable_mask

from .test_config import V5

TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
GRID = (1, 4, 4)


def _inputs(config):
    tokens = np.asarray([[5, 9, 252, 250, 250, 250, 250, 253, 7]])
    pixels = np.random.default_rng(0).normal(size=(16, config.vision.patch_dim))
    positions, _ = rope_index(
        tokens,
        image_token_id=250,
        video_token_id=251,
        spatial_merge_size=2,
        tokens_per_second=2,
        image_grid_thw=[GRID],
    )
    return (
        tokens,
        positions,
        dict(
            pixel_values=pixels.astype(np.float32),
            image_layout=vision_layout([GRID], config.vision),
        ),
    )


@pytest.mark.slow  # ~70 s on the shared 2-core CPU: three compiles incl. the backward pass
def test_lora_on_the_language_model_only():
    config = Qwen25VLConfig.from_hf(V5)
    tokens, positions, vision = _inputs(config)
    init = jax.jit(lambda key: Qwen25VL(config).init(key, tokens, positions, **vision))
    base = init(jax.random.key(0))["params"]
    lora = LoRAConfig(rank=4, alpha=8.0, targets=TARGETS)
    lora_config = config.with_lora(lora)
    params = add_lora(base, abstract_params(lora_config), jax.random.key(1))

    mask = trainable_mask(params)
    paths = ["/".join(k.key for k in p) for p, m in jax.tree_util.tree_leaves_with_path(mask) if m]
    assert paths and all(p.startswith("lm/") for p in paths)
    assert len(paths) == 2 * len(TARGETS) * config.text.num_layers  # lora_a + lora_b each

    apply = jax.jit(Qwen25VL(lora_config).apply)
    base_apply = jax.jit(Qwen25VL(config).apply)
    base_logits, _ = base_apply({"params": base}, tokens, positions, **vision)
    logits, _ = apply({"params": params}, tokens, positions, **vision)
    np.testing.assert_array_equal(np.asarray(logits), np.asarray(base_logits))  # B = 0

    def loss(p):
        return jnp.mean(apply({"params": p}, tokens, positions, **vision)[0] ** 2)

    grads = jax.jit(jax.grad(loss))(params)
    b_grad = grads["lm"]["layers_1"]["mlp"]["down_proj"]["lora_b"]
    assert float(jnp.abs(b_grad).max()) > 0

    # A trained-looking adapter: merged into the kernels it gives the unmerged logits.
    params = jax.tree_util.tree_map_with_path(
        lambda p, x: x + 0.05 if p[-1].key == "lora_b" else x, params
    )
    tuned, _ = apply({"params": params}, tokens, positions, **vision)
    assert np.abs(np.asarray(tuned) - np.asarray(base_logits)).max() > 1e-3
    merged, _ = base_apply({"params": merge_lora(params, lora)}, tokens, positions, **vision)
    np.testing.assert_allclose(np.asarray(merged), np.asarray(tuned), atol=1e-5, rtol=0)
