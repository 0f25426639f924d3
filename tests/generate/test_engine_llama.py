"""The engine on the real jaxmm decoder: vs a no-cache greedy loop, and vs `transformers`."""

import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmm.generate.engine import Engine
from jaxmm.generate.params import GenerationParams
from tests.generate.fixtures import BOS, EOS, PAD

PROMPTS = [
    "The quick brown fox",
    "A language model",
    "Streaming servers send text deltas as soon as they are final.",
    "café",
]
MAX_NEW = 12


@pytest.fixture(scope="module")
def single(llama_dir):
    """Single-device engine and its greedy outputs for PROMPTS."""
    # prefill_chunk=8: every prompt is prefilled in >= 2 chunks (the TP engine uses 1).
    engine = Engine.from_pretrained(
        llama_dir, max_seq_len=64, max_batch=3, steps_per_call=4, prefill_chunk=8
    )
    return engine, engine.generate(PROMPTS, GenerationParams(max_tokens=MAX_NEW))


def test_engine_matches_no_cache_greedy_loop(llama_dir, single):
    from jaxmm.models.hf import load_hf
    from jaxmm.models.llm import LLM

    engine, got = single

    config, params = load_hf(llama_dir)
    model = LLM(config)
    length = 64

    @jax.jit
    def next_token(ids, n):
        # Full causal forward over a right-padded buffer, no cache; padding is after `n`.
        logits, _ = model.apply({"params": params}, ids[None])
        return jnp.argmax(logits[0, n - 1])

    for prompt, c in zip(PROMPTS, got, strict=True):
        ids = engine.encode(prompt)
        out = []
        for _ in range(MAX_NEW):
            buf = np.full(length, PAD, np.int32)
            buf[: len(ids)] = ids
            t = int(next_token(buf, len(ids)))
            if t == EOS:
                break
            out.append(t)
            ids.append(t)
        assert c.token_ids == out


@pytest.fixture(scope="module")
def torch_llama_dir(tmp_path_factory, tokenizer_dir, hf_tokenizer):
    import torch
    import transformers

    cfg = transformers.LlamaConfig(
        vocab_size=len(hf_tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        rope_theta=10000.0,
        bos_token_id=BOS,
        eos_token_id=EOS,
        pad_token_id=PAD,
        tie_word_embeddings=False,
    )
    model = transformers.LlamaForCausalLM(cfg)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():  # larger weights than the default init: peaked, tie-free logits
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            p.copy_(1.0 + 0.1 * noise if name.endswith("norm.weight") else 0.1 * noise)
    model.eval()
    folder = tmp_path_factory.mktemp("torch_llama")
    model.save_pretrained(folder)
    for name in os.listdir(tokenizer_dir):
        shutil.copy(os.path.join(tokenizer_dir, name), folder)
    return model, folder


@pytest.mark.torch
def test_engine_greedy_matches_transformers_generate(torch_llama_dir):
    import torch

    model, folder = torch_llama_dir
    engine = Engine.from_pretrained(folder, max_seq_len=64, max_batch=4, steps_per_call=5)
    got = engine.generate(PROMPTS, GenerationParams(max_tokens=MAX_NEW))
    for prompt, c in zip(PROMPTS, got, strict=True):
        ids = engine.encode(prompt)
        with torch.no_grad():
            out = model.generate(
                torch.tensor([ids]),
                attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                max_new_tokens=MAX_NEW,
                do_sample=False,
                eos_token_id=EOS,
                pad_token_id=PAD,
            )[0, len(ids) :].tolist()
        if EOS in out:
            out = out[: out.index(EOS)]
        assert c.token_ids == out, prompt


def test_tensor_parallel_engine_matches_single_device(llama_dir, single):
    """Params and KV cache sharded over 2 of the 8 fake CPU devices (kv_heads on `tensor`)."""
    from jaxmm.sharding import make_mesh

    mesh = make_mesh({"data": 1, "fsdp": 1, "tensor": 2}, jax.devices()[:2])
    sharded = Engine.from_pretrained(
        llama_dir, max_seq_len=64, max_batch=3, steps_per_call=4, mesh=mesh
    )
    assert sharded._runner.cache.k.sharding.spec[3] == "tensor"  # [L, B, S, kv_heads, D]
    got = sharded.generate(PROMPTS, GenerationParams(max_tokens=MAX_NEW))
    assert [c.token_ids for c in got] == [c.token_ids for c in single[1]]
