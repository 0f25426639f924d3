"""Rotary embeddings: scaled frequencies vs transformers' own functions, rotation properties."""

import jax.numpy as jnp
import numpy as np
import pytest

from jaxmm.nn.rotary import RopeConfig, apply_rope, inverse_frequencies, rope_cos_sin

LLAMA3 = RopeConfig(
    theta=500000.0,
    rope_type="llama3",
    factor=8.0,
    low_freq_factor=1.0,
    high_freq_factor=4.0,
    original_max_positions=8192,
)


@pytest.mark.torch
@pytest.mark.parametrize(
    "rope",
    [RopeConfig(theta=10000.0), LLAMA3, RopeConfig(theta=1e6, rope_type="linear", factor=4.0)],
)
def test_frequencies_match_transformers(rope):
    pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    params = {"rope_type": rope.rope_type, "rope_theta": rope.theta}
    if rope.rope_type == "linear":
        params["factor"] = rope.factor
    if rope.rope_type == "llama3":
        params.update(
            factor=rope.factor,
            low_freq_factor=rope.low_freq_factor,
            high_freq_factor=rope.high_freq_factor,
            original_max_position_embeddings=rope.original_max_positions,
        )
    cfg = transformers.LlamaConfig(
        hidden_size=512,
        num_attention_heads=4,
        head_dim=128,
        rope_parameters=params,
        max_position_embeddings=131072,
    )
    if rope.rope_type == "default":
        from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

        want, scale = LlamaRotaryEmbedding.compute_default_rope_parameters(cfg)
    else:
        want, scale = ROPE_INIT_FUNCTIONS[rope.rope_type](cfg, "cpu")
    want = want.numpy()
    assert scale == 1.0  # no attention scaling for these types
    # Same float32 formula: equal to float32 rounding.
    np.testing.assert_allclose(inverse_frequencies(128, rope), want, rtol=1e-6)


def test_llama3_keeps_high_and_divides_low_frequencies():
    base = inverse_frequencies(128, RopeConfig(theta=500000.0))
    scaled = inverse_frequencies(128, LLAMA3)
    wavelen = 2 * np.pi / base
    high = wavelen < 8192 / 4.0
    low = wavelen > 8192 / 1.0
    assert high.any() and low.any() and (~high & ~low).any()
    np.testing.assert_array_equal(scaled[high], base[high])
    np.testing.assert_allclose(scaled[low], base[low] / 8.0, rtol=1e-6)
    mid = ~high & ~low
    assert np.all(scaled[mid] < base[mid]) and np.all(scaled[mid] > base[mid] / 8.0)


def test_rotation_preserves_norm_and_scores_depend_on_offset_only():
    rng = np.random.default_rng(0)
    q = jnp.asarray(rng.normal(size=(1, 1, 1, 16)), jnp.float32)
    k = jnp.asarray(rng.normal(size=(1, 1, 1, 16)), jnp.float32)
    rope = RopeConfig(theta=100.0)

    def rotated(x, pos):
        cos, sin = rope_cos_sin(jnp.array([[pos]]), 16, rope)
        return apply_rope(x, cos, sin)

    np.testing.assert_allclose(jnp.linalg.norm(rotated(q, 37)), jnp.linalg.norm(q), rtol=1e-5)
    s1 = float(jnp.sum(rotated(q, 10) * rotated(k, 3)))
    s2 = float(jnp.sum(rotated(q, 107) * rotated(k, 100)))
    s3 = float(jnp.sum(rotated(q, 10) * rotated(k, 4)))
    assert abs(s1 - s2) < 1e-4 and abs(s1 - s3) > 1e-3


def test_bad_rope_settings_raise():
    with pytest.raises(ValueError, match="yarn"):
        RopeConfig(rope_type="yarn")
    with pytest.raises(ValueError, match="even head_dim"):
        inverse_frequencies(7, RopeConfig())
