"""Parity with the transformers PyTorch implementation (random tiny Llama 3 / Qwen2, fp32).

Each model is built in transformers with random weights (norm scales and biases randomised
too, so a layout mistake in any tensor shows), saved with `save_pretrained`, loaded by
`jaxmm.models.hf.load_hf`, and compared on logits, greedy generation and re-export.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmm.models.hf import load_hf, save_hf
from jaxmm.models.llm import LLM, init_cache

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

pytestmark = pytest.mark.torch

# fp32 on CPU; the two implementations order their float reductions differently, which moves
# logits of magnitude ~5 by ~1e-6. docs/testing.md tolerance for model parity: 1e-4.
LOGIT_ATOL = 1e-4
NEW_TOKENS = 32
VOCAB = 256

COMMON = dict(
    vocab_size=VOCAB,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    rms_norm_eps=1e-5,
    max_position_embeddings=512,
)


def _randomise(model, seed: int):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.1 * noise)
            else:
                p.copy_(0.08 * noise)
    return model.eval()


def _llama():
    cfg = transformers.LlamaConfig(
        **COMMON,
        rope_theta=50000.0,
        rope_scaling={
            "rope_type": "llama3",
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 32,
        },
        tie_word_embeddings=False,
    )
    return _randomise(transformers.LlamaForCausalLM(cfg), 0)


def _qwen2():
    cfg = transformers.Qwen2Config(**COMMON, rope_theta=10000.0, tie_word_embeddings=True)
    return _randomise(transformers.Qwen2ForCausalLM(cfg), 1)


@pytest.fixture(scope="module", params=["llama_sharded", "qwen2"])
def family(request, tmp_path_factory):
    """(name, torch model, checkpoint folder); Llama is saved sharded to exercise the index."""
    name = request.param
    model = _llama() if name.startswith("llama") else _qwen2()
    folder = tmp_path_factory.mktemp(name)
    if name == "llama_sharded":
        model.save_pretrained(folder, max_shard_size="40KB")
        assert (folder / "model.safetensors.index.json").exists()
    else:
        model.save_pretrained(folder)
    return name, model, folder


def _torch_logits(model, tokens: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.as_tensor(tokens)).logits.numpy()


def _tokens(batch: int, length: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, VOCAB, (batch, length), dtype=np.int32)


def test_logits_match_transformers(family):
    name, torch_model, folder = family
    config, params = load_hf(folder)
    assert config.model_type == ("llama" if name.startswith("llama") else "qwen2")
    tokens = _tokens(2, 40, seed=3)  # 40 > original_max_positions=32: llama3 scaling matters
    positions = np.broadcast_to(np.arange(40, dtype=np.int32), tokens.shape)
    logits, cache = jax.jit(LLM(config).apply)({"params": params}, tokens, positions)
    assert cache is None
    want = _torch_logits(torch_model, tokens)
    assert np.abs(want).max() > 1.0  # the comparison is not between near-zero numbers
    np.testing.assert_allclose(np.asarray(logits), want, atol=LOGIT_ATOL, rtol=0)


def _greedy_with_cache(config, params, prompts: list[np.ndarray], new_tokens: int):
    """Batched greedy decoding with the KV cache: right-padded prefill, then 1 token/step."""
    model = LLM(config)
    batch, width = len(prompts), max(len(p) for p in prompts)
    tokens = np.zeros((batch, width), np.int32)
    mask = np.zeros((batch, width), np.int32)
    for i, p in enumerate(prompts):
        tokens[i, : len(p)] = p
        mask[i, : len(p)] = 1
    cache = init_cache(config, batch, width + new_tokens, jnp.float32)

    @jax.jit
    def prefill(params, tokens, mask, cache):
        logits, cache = model.apply(
            {"params": params}, tokens, None, cache=cache, attention_mask=mask
        )
        last = jnp.take_along_axis(logits, (cache.lengths - 1)[:, None, None], axis=1)[:, 0]
        return jnp.argmax(last, -1).astype(jnp.int32), cache

    @jax.jit
    def step(params, token, cache):
        positions = cache.lengths[:, None]
        logits, cache = model.apply({"params": params}, token[:, None], positions, cache=cache)
        return jnp.argmax(logits[:, -1], -1).astype(jnp.int32), cache

    token, cache = prefill(params, tokens, mask, cache)
    np.testing.assert_array_equal(np.asarray(cache.lengths), [len(p) for p in prompts])
    out = [token]
    for _ in range(new_tokens - 1):
        token, cache = step(params, token, cache)
        out.append(token)
    return np.stack([np.asarray(t) for t in out], axis=1)


def test_greedy_generation_matches_transformers(family):
    _, torch_model, folder = family
    config, params = load_hf(folder)
    prompts = [_tokens(1, 5, seed=7)[0], _tokens(1, 11, seed=8)[0]]
    ours = _greedy_with_cache(config, params, prompts, NEW_TOKENS)
    for i, prompt in enumerate(prompts):
        with torch.no_grad():
            ref = torch_model.generate(
                torch.as_tensor(prompt[None]),
                do_sample=False,
                max_new_tokens=NEW_TOKENS,
                min_new_tokens=NEW_TOKENS,
                pad_token_id=0,
                eos_token_id=None,
            )[0, len(prompt) :].numpy()
        np.testing.assert_array_equal(ours[i], ref, err_msg=f"prompt {i}")


def test_save_hf_reloads_in_transformers(family, tmp_path):
    _, torch_model, folder = family
    config, params = load_hf(folder)
    save_hf(params, config, tmp_path, max_shard_bytes=60_000)
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    tokens = _tokens(1, 17, seed=11)
    np.testing.assert_array_equal(
        _torch_logits(reloaded, tokens), _torch_logits(torch_model, tokens)
    )


def test_scan_layers_load_match_and_export(family, tmp_path):
    """Stacked (scanned) layers read the same checkpoint and write it back."""
    _, torch_model, folder = family
    config, params = load_hf(folder, scan_layers=True)
    assert params["layers"]["mlp"]["up_proj"]["kernel"].shape[0] == config.num_layers
    tokens = _tokens(2, 9, seed=12)
    positions = np.broadcast_to(np.arange(9, dtype=np.int32), tokens.shape)
    logits, _ = jax.jit(LLM(config).apply)({"params": params}, tokens, positions)
    np.testing.assert_allclose(
        np.asarray(logits), _torch_logits(torch_model, tokens), atol=LOGIT_ATOL, rtol=0
    )
    save_hf(params, config, tmp_path)
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    np.testing.assert_array_equal(
        _torch_logits(reloaded, tokens), _torch_logits(torch_model, tokens)
    )
