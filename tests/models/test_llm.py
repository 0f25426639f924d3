"""jaxmm LLM behaviour without torch: config parsing, cache == full forward, packing, padding,
logical axes."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmm.models.llm import LLM, LLMConfig, init_cache
from jaxmm.nn.rotary import RopeConfig

# fp32 on CPU: the same math in a different association order (cached vs full keys, packed vs
# separate sequences) differs by float32 rounding only; 1e-5 is docs/testing.md's kernel tolerance.
ATOL = 1e-5

TINY = LLMConfig(
    vocab_size=97,
    hidden_size=32,
    intermediate_size=64,
    num_layers=2,
    num_heads=4,
    num_kv_heads=2,
    head_dim=8,
    qkv_bias=True,
    attention_impl="reference",
)

HF_LLAMA = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "vocab_size": 128,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "rms_norm_eps": 1e-5,
    "max_position_embeddings": 1024,
    "eos_token_id": [5, 6],
}
LLAMA3_SCALING = {
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 64,
}


@pytest.fixture(scope="module")
def params():
    tokens = jnp.zeros((1, 4), jnp.int32)
    variables = jax.jit(LLM(TINY).init)(jax.random.key(0, impl="rbg"), tokens, tokens)
    return nn.meta.unbox(variables["params"])


@jax.jit
def _apply(params, tokens, positions, cache=None, segment_ids=None, attention_mask=None):
    return LLM(TINY).apply(
        {"params": params},
        tokens,
        positions,
        cache=cache,
        segment_ids=segment_ids,
        attention_mask=attention_mask,
    )


def _tokens(shape, seed):
    return np.random.default_rng(seed).integers(0, TINY.vocab_size, shape, dtype=np.int32)


def test_rope_old_and_new_config_forms_agree():
    old = {
        **HF_LLAMA,
        "rope_theta": 500000.0,
        "rope_scaling": {"rope_type": "llama3", **LLAMA3_SCALING},
    }
    new = {
        **HF_LLAMA,
        "rope_parameters": {"rope_type": "llama3", "rope_theta": 500000.0, **LLAMA3_SCALING},
    }
    legacy_key = {
        **HF_LLAMA,
        "rope_theta": 500000.0,
        "rope_scaling": {"type": "llama3", **LLAMA3_SCALING},
    }
    a, b, c = (LLMConfig.from_hf(x) for x in (old, new, legacy_key))
    assert a == b == c
    assert a.rope == RopeConfig(500000.0, "llama3", 8.0, 1.0, 4.0, 64)
    assert a.head_dim == 16 and a.eos_token_ids == (5, 6) and not a.qkv_bias


def test_rope_linear_and_default_forms():
    lin = LLMConfig.from_hf({**HF_LLAMA, "rope_scaling": {"type": "linear", "factor": 2.0}})
    assert lin.rope == RopeConfig(10000.0, "linear", 2.0)
    assert LLMConfig.from_hf(HF_LLAMA).rope == RopeConfig()
    per_layer = {
        **HF_LLAMA,
        "rope_parameters": {"full_attention": {"rope_type": "default", "rope_theta": 7.0}},
    }
    assert LLMConfig.from_hf(per_layer).rope == RopeConfig(7.0)


def test_qwen2_config_and_roundtrip_through_to_hf(tmp_path):
    hf = {
        **HF_LLAMA,
        "model_type": "qwen2",
        "architectures": ["Qwen2ForCausalLM"],
        "tie_word_embeddings": True,
        "rope_parameters": {"rope_theta": 1e6},
    }
    cfg = LLMConfig.from_hf(hf)
    assert cfg.qkv_bias and cfg.tie_embeddings and cfg.rope.theta == 1e6
    import json

    (tmp_path / "config.json").write_text(json.dumps(cfg.to_hf()))
    assert LLMConfig.from_hf(tmp_path) == cfg


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"model_type": "mistral", "architectures": ["MistralForCausalLM"]}, "mistral"),
        ({"architectures": ["LlamaForSequenceClassification"]}, "LlamaForSequenceClassification"),
        ({"rope_scaling": {"rope_type": "yarn", "factor": 4.0}}, "yarn"),
        ({"rope_scaling": {"rope_type": "llama3", "factor": 8.0}}, "low_freq_factor"),
        ({"num_key_value_heads": 3}, "num_kv_heads"),
        ({"hidden_act": "gelu"}, "hidden_act"),
    ],
)
def test_config_errors_name_the_problem(change, match):
    with pytest.raises(ValueError, match=match):
        LLMConfig.from_hf({**HF_LLAMA, **change})


def test_config_missing_field_and_file(tmp_path):
    bad = dict(HF_LLAMA)
    del bad["hidden_size"]
    with pytest.raises(ValueError, match="hidden_size"):
        LLMConfig.from_hf(bad)
    with pytest.raises(FileNotFoundError, match="config.json"):
        LLMConfig.from_hf(tmp_path)


def test_params_carry_logical_axes():
    tokens = jnp.zeros((1, 4), jnp.int32)
    boxed = jax.eval_shape(lambda: LLM(TINY).init(jax.random.key(0), tokens, tokens))["params"]
    specs = nn.get_partition_spec(boxed)
    attn = specs["layers_0"]["self_attn"]
    assert tuple(attn["q_proj"]["kernel"]) == ("embed", "heads", "head_dim")
    assert tuple(attn["q_proj"]["bias"]) == ("heads", "head_dim")
    assert tuple(attn["k_proj"]["kernel"]) == ("embed", "kv_heads", "head_dim")
    assert tuple(attn["o_proj"]["kernel"]) == ("heads", "head_dim", "embed")
    assert tuple(specs["layers_1"]["mlp"]["down_proj"]["kernel"]) == ("mlp", "embed")
    assert tuple(specs["embed_tokens"]["embedding"]) == ("vocab", "embed")
    assert tuple(specs["lm_head"]["kernel"]) == ("embed", "vocab")
    n_params = sum(x.size for x in jax.tree.leaves(nn.meta.unbox(boxed)))
    assert n_params == TINY.num_params


def test_cached_prefill_and_decode_match_full_forward(params):
    """Rows of different lengths: right-padded prefill, then token-by-token decode."""
    lens, total = (3, 6), 9
    seqs = _tokens((2, total), seed=1)
    full, _ = _apply(params, seqs, np.broadcast_to(np.arange(total), (2, total)))

    width = max(lens)
    prompt = np.where(np.arange(width)[None] < np.array(lens)[:, None], seqs[:, :width], 0)
    mask = (np.arange(width)[None] < np.array(lens)[:, None]).astype(np.int32)
    cache = init_cache(TINY, 2, 16, jnp.float32)
    logits, cache = _apply(params, prompt, None, cache=cache, attention_mask=mask)
    np.testing.assert_array_equal(cache.lengths, lens)
    for row, n in enumerate(lens):
        np.testing.assert_allclose(logits[row, :n], full[row, :n], atol=ATOL)

    step = lambda p, t, c: _apply(p, t, None, cache=c)
    for _ in range(total - max(lens)):
        lengths = np.asarray(cache.lengths)
        nxt = seqs[np.arange(2), lengths][:, None]
        logits, cache = step(params, nxt, cache)
        for row in range(2):
            np.testing.assert_allclose(logits[row, 0], full[row, lengths[row]], atol=ATOL)
    np.testing.assert_array_equal(cache.lengths, np.array(lens) + total - max(lens))


def test_multi_token_chunk_into_nonempty_cache(params):
    seqs = _tokens((1, 8), seed=2)
    full, _ = _apply(params, seqs, np.arange(8)[None])
    cache = init_cache(TINY, 1, 8, jnp.float32)
    _, cache = _apply(params, seqs[:, :5], None, cache=cache)
    logits, cache = _apply(params, seqs[:, 5:], None, cache=cache)
    np.testing.assert_allclose(logits, full[:, 5:], atol=ATOL)
    assert int(cache.lengths[0]) == 8


def test_packed_segments_equal_separate_sequences(params):
    a, b = _tokens((1, 5), seed=3), _tokens((1, 4), seed=4)
    packed = np.concatenate([a, b], axis=1)
    segment_ids = np.array([[1] * 5 + [2] * 4])
    positions = np.array([list(range(5)) + list(range(4))])
    logits, _ = _apply(params, packed, positions, segment_ids=segment_ids)
    alone_a, _ = _apply(params, a, np.arange(5)[None])
    alone_b, _ = _apply(params, b, np.arange(4)[None])
    np.testing.assert_allclose(logits[:, :5], alone_a, atol=ATOL)
    np.testing.assert_allclose(logits[:, 5:], alone_b, atol=ATOL)
    # Without segment ids the second sequence would see the first: the test can fail.
    mixed, _ = _apply(params, packed, positions)
    assert np.abs(mixed[:, 5:] - alone_b).max() > 1e-3


def test_padding_mask_ignores_padded_keys(params):
    real = _tokens((1, 4), seed=5)
    padded = np.concatenate([np.zeros((1, 3), np.int32), real], axis=1)  # left padding
    mask = np.array([[0, 0, 0, 1, 1, 1, 1]])
    positions = np.array([[0, 0, 0, 0, 1, 2, 3]])
    logits, _ = _apply(params, padded, positions, attention_mask=mask)
    alone, _ = _apply(params, real, np.arange(4)[None])
    np.testing.assert_allclose(logits[:, 3:], alone, atol=ATOL)
    assert np.isfinite(np.asarray(logits)).all()


def test_bad_shapes_raise_clear_errors(params):
    tokens = _tokens((2, 4), seed=6)
    with pytest.raises(ValueError, match="positions"):
        _apply(params, tokens, np.zeros((2, 5), np.int32))
    with pytest.raises(ValueError, match="cache"):
        _apply(params, tokens, None, cache=init_cache(TINY, 3, 8))
    with pytest.raises(ValueError, match="segment_ids"):
        _apply(params, tokens, None, cache=init_cache(TINY, 2, 8), segment_ids=tokens)


def test_remat_policies_keep_gradients(params):
    tokens = _tokens((2, 6), seed=7)
    positions = np.broadcast_to(np.arange(6), (2, 6))

    def grads(remat):
        model = LLM(TINY.replace(remat=remat))

        def loss(p):
            logits, _ = model.apply({"params": p}, tokens, positions)
            return jnp.mean(jax.nn.logsumexp(logits, -1) - logits[..., 0])

        return jax.jit(jax.grad(loss))(params)

    base = grads("none")
    for remat in ("full", "dots"):
        for a, b in zip(jax.tree.leaves(grads(remat)), jax.tree.leaves(base), strict=True):
            np.testing.assert_allclose(a, b, atol=1e-6)  # recomputation is bit-identical math


def test_bfloat16_compute_tracks_float32(params):
    tokens = _tokens((2, 6), seed=8)
    positions = np.broadcast_to(np.arange(6), (2, 6))
    # Weights x5 so logits are O(1) and the comparison means something.
    params = jax.tree_util.tree_map_with_path(
        lambda p, x: x if p[-1].key == "scale" else 5 * x, params
    )
    want, _ = _apply(params, tokens, positions)
    bf16 = TINY.replace(dtype="bfloat16")  # fp32 params, bf16 compute (mixed precision)
    got, _ = jax.jit(LLM(bf16).apply)({"params": params}, tokens, positions)
    assert got.dtype == jnp.float32  # logits_dtype
    # bf16 keeps 8 mantissa bits (4e-3 relative per rounding); through two layers and the
    # head the logits drift by ~1-2% of their scale, so allow 3% of the largest logit. The
    # error must also be non-zero: the compute really ran in bf16.
    err, scale = np.abs(got - want).max(), np.abs(want).max()
    assert 1e-4 < err < 0.03 * scale, (err, scale)


def test_last_logits_only_picks_each_rows_last_real_token(params):
    tokens = _tokens((2, 5), seed=9)
    mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], np.int32)  # right-padded prefill
    model = LLM(TINY)
    run = jax.jit(model.apply, static_argnames="last_logits_only")
    full, _ = run({"params": params}, tokens, None, init_cache(TINY, 2, 8), attention_mask=mask)
    last, cache = run(
        {"params": params},
        tokens,
        None,
        init_cache(TINY, 2, 8),
        attention_mask=mask,
        last_logits_only=True,
    )
    assert last.shape == (2, 1, TINY.vocab_size)
    np.testing.assert_allclose(last[:, 0], full[[0, 1], [2, 4]], atol=ATOL)
    np.testing.assert_array_equal(cache.lengths, [3, 5])
    left = np.array([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]], np.int32)  # left padding, no cache
    full, _ = run({"params": params}, tokens, None, attention_mask=left)
    last, _ = run({"params": params}, tokens, None, attention_mask=left, last_logits_only=True)
    np.testing.assert_allclose(last[:, 0], full[:, 4], atol=ATOL)


def _stack_layers(params, num_layers):
    """Unrolled params (layers_0, layers_1, ...) -> scanned params (layers: [L, ...])."""
    per_layer = [params[f"layers_{i}"] for i in range(num_layers)]
    rest = {k: v for k, v in params.items() if not k.startswith("layers_")}
    return {**rest, "layers": jax.tree.map(lambda *xs: jnp.stack(xs), *per_layer)}


def test_scan_layers_equal_unrolled_with_and_without_cache(params):
    scan_cfg = TINY.replace(scan_layers=True)
    shapes = jax.eval_shape(LLM(scan_cfg).init, jax.random.key(0), *(jnp.zeros((1, 2), int),) * 2)
    axes = nn.get_partition_spec(shapes["params"])["layers"]["self_attn"]["q_proj"]["kernel"]
    assert tuple(axes) == ("layers", "embed", "heads", "head_dim")
    stacked = _stack_layers(params, TINY.num_layers)
    assert jax.tree.structure(stacked) == jax.tree.structure(nn.meta.unbox(shapes["params"]))

    tokens = _tokens((2, 6), seed=10)
    positions = np.broadcast_to(np.arange(6), (2, 6))
    run = jax.jit(LLM(scan_cfg).apply)
    want, _ = _apply(params, tokens, positions)
    got, _ = run({"params": stacked}, tokens, positions)
    np.testing.assert_allclose(got, want, atol=ATOL)
    mask = np.array([[1, 1, 1, 1, 0, 0], [1] * 6], np.int32)
    want_c, want_cache = _apply(params, tokens, None, init_cache(TINY, 2, 9), attention_mask=mask)
    got_c, got_cache = run(
        {"params": stacked}, tokens, None, init_cache(TINY, 2, 9), attention_mask=mask
    )
    np.testing.assert_allclose(got_c, want_c, atol=ATOL)
    np.testing.assert_allclose(got_cache.k, want_cache.k, atol=ATOL)
    np.testing.assert_array_equal(got_cache.lengths, want_cache.lengths)
