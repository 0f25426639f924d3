"""Vision encoder, projector, frame budget, placeholder splice, VLM forward; SigLIP parity."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmm.models.llm import LLMConfig, init_cache
from jaxmm.models.vision import (
    VLM,
    VisionConfig,
    VisionEncoder,
    expand_image_placeholders,
    sample_frame_indices,
    siglip_params_from_hf,
    splice_image_features,
)

VISION = VisionConfig(
    image_size=16,
    patch_size=4,
    hidden_size=32,
    intermediate_size=64,
    num_layers=2,
    num_heads=4,
    attention_impl="reference",
)
LM = LLMConfig(
    vocab_size=50,
    hidden_size=24,
    intermediate_size=48,
    num_layers=1,
    num_heads=2,
    num_kv_heads=1,
    head_dim=12,
    attention_impl="reference",
)
IMAGE_TOKEN = 49


def test_frame_budget_sampling():
    np.testing.assert_array_equal(sample_frame_indices(5, 8), np.arange(5))
    idx = sample_frame_indices(100, 8)
    np.testing.assert_array_equal(idx, [6, 18, 31, 43, 56, 68, 81, 93])
    assert len(set(sample_frame_indices(9, 8).tolist())) == 8
    for n, k in [(17, 4), (1000, 7), (9, 8)]:
        idx = sample_frame_indices(n, k)
        # Frame i comes from the i-th of k equal time segments [i n/k, (i+1) n/k).
        lo, hi = np.floor(np.arange(k) * n / k), np.ceil(np.arange(1, k + 1) * n / k)
        assert np.all(np.diff(idx) > 0) and np.all((idx >= lo) & (idx < hi))
    with pytest.raises(ValueError, match="budget"):
        sample_frame_indices(10, 0)


def test_splice_puts_features_exactly_at_placeholders():
    ids = [3, IMAGE_TOKEN, 4, IMAGE_TOKEN, 5]
    row0 = expand_image_placeholders(ids, IMAGE_TOKEN, 2)
    assert row0 == [3, 49, 49, 4, 49, 49, 5]
    row1 = [49, 49, 49, 49, 7, 8, 9]
    tokens = jnp.array([row0, row1])
    text = jnp.arange(2 * 7 * 3, dtype=jnp.float32).reshape(2, 7, 3)
    feats = -1.0 - jnp.arange(2 * 4 * 3, dtype=jnp.float32).reshape(2, 4, 3)
    out = np.asarray(splice_image_features(tokens, text, feats, IMAGE_TOKEN))
    for b, positions in enumerate([[1, 2, 4, 5], [0, 1, 2, 3]]):
        np.testing.assert_array_equal(out[b, positions], feats[b])  # k-th placeholder = k-th
        rest = [t for t in range(7) if t not in positions]
        np.testing.assert_array_equal(out[b, rest], np.asarray(text)[b, rest])


@pytest.fixture(scope="module")
def vlm_and_params():
    model = VLM(LM, VISION, IMAGE_TOKEN)
    n_tok = 2 * VISION.num_patches + 3
    tokens = jnp.zeros((1, n_tok), jnp.int32)
    images = jnp.zeros((1, 2, 16, 16, 3))
    params = jax.jit(model.init)(jax.random.key(0, impl="rbg"), tokens, None, images)["params"]
    return model, nn.meta.unbox(params)


def test_vlm_shapes_logical_axes_and_image_dependence(vlm_and_params):
    model, params = vlm_and_params
    patches = VISION.num_patches  # 16
    prompt = expand_image_placeholders([1, IMAGE_TOKEN, IMAGE_TOKEN, 2, 3], IMAGE_TOKEN, patches)
    tokens = jnp.array([prompt, prompt])
    rng = np.random.default_rng(0)
    frames = rng.standard_normal((40, 16, 16, 3)).astype(np.float32)
    video = frames[sample_frame_indices(40, 2)]  # a video under a budget of 2 frames
    images = jnp.stack([video, frames[:2]])  # [B=2, N_img=2, 16, 16, 3]
    apply = jax.jit(model.apply)
    logits, _ = apply({"params": params}, tokens, None, images)
    assert logits.shape == (2, len(prompt), LM.vocab_size)
    # Rows share the text but not the images: logits differ after the first placeholder only.
    np.testing.assert_allclose(logits[0, :1], logits[1, :1], atol=1e-6)
    assert np.abs(logits[0, 1:] - logits[1, 1:]).max() > 1e-4
    feats = model.apply({"params": params}, images, method=VLM.encode_images)
    assert feats.shape == (2, 2 * patches, LM.hidden_size)
    # Cached prefill with images gives the same logits as the plain forward.
    cache = init_cache(LM, 2, len(prompt) + 4, jnp.float32)
    cached, cache = apply({"params": params}, tokens, None, images, cache)
    np.testing.assert_allclose(cached, logits, atol=1e-5)
    assert cache.lengths.tolist() == [len(prompt)] * 2


def test_encoder_rejects_wrong_image_size(vlm_and_params):
    _, params = vlm_and_params
    with pytest.raises(ValueError, match="NHWC"):
        VisionEncoder(VISION).apply({"params": params["vision"]}, jnp.zeros((1, 3, 16, 16)))
    with pytest.raises(ValueError, match="multiple of patch_size"):
        VisionConfig(image_size=15, patch_size=4)


@pytest.mark.torch
def test_matches_transformers_siglip_vision_model():
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    hf_cfg = transformers.SiglipVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=16,
        patch_size=4,
        vision_use_head=False,
    )
    torch.manual_seed(0)
    hf_model = transformers.SiglipVisionModel(hf_cfg).eval()
    with torch.no_grad():  # randomise norms/biases too so every tensor's layout is checked
        for p in hf_model.parameters():
            p.add_(0.1 * torch.randn(p.shape))
    config = VisionConfig.from_hf(hf_cfg.to_dict(), attention_impl="reference")
    assert config == VISION
    state = {k: v.numpy() for k, v in hf_model.state_dict().items()}
    params = siglip_params_from_hf(state, config)
    pixels = np.random.default_rng(1).standard_normal((2, 3, 16, 16)).astype(np.float32)
    with torch.no_grad():
        want = hf_model(pixel_values=torch.as_tensor(pixels)).last_hidden_state.numpy()
    got = VisionEncoder(config).apply({"params": params}, pixels.transpose(0, 2, 3, 1))
    # fp32 CPU model parity, docs/testing.md tolerance.
    np.testing.assert_allclose(np.asarray(got), want, atol=1e-4)
