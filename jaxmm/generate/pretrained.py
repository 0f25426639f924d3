"""`Engine.from_pretrained`: a Hugging Face folder, a llama.cpp `.gguf` file or a LLaVA folder
becomes an engine (model, weights, tokenizer, EOS ids, optional vision tower). Kept apart from
the engine so the scheduler does not depend on every checkpoint format."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, TypeVar

import jax

from jaxmm.generate import model_folder
from jaxmm.generate import vision as gen_vision
from jaxmm.models import gguf, hf, llava_hf, llm

# The default cache length cap: 2 * layers * max_batch * max_seq_len * kv_heads * head_dim
# cache elements at Llama 3.1's 128K context would not fit next to the weights.
DEFAULT_MAX_SEQ_LEN = 8192
E = TypeVar("E")


def from_pretrained(
    cls: type[E],
    model_dir: str | os.PathLike,
    *,
    max_seq_len: int | None = None,
    max_batch: int = 8,
    dtype: str = "float32",
    param_dtype: str | None = None,
    steps_per_call: int = 8,
    prefill_chunk: int = 512,
    model_name: str | None = None,
    mesh: jax.sharding.Mesh | None = None,
    rules: Sequence[tuple[str, Any]] | None = None,
    vision: str | None = None,
) -> E:
    """Load a Hugging Face folder (config.json + safetensors + tokenizer files), or a
    llama.cpp `.gguf` file (converted once into a cached HF folder: `jaxmm.models.gguf`).

    `vision="tiny_random"` adds a random SigLIP-style tower + projector
    (`jaxmm.generate.vision.tiny_random_encoder`) so the engine takes images: for testing
    orchestration only, the tower has learnt nothing. A LLaVA folder (`model_type:
    llava`, SigLIP tower: `jaxmm.models.llava_hf`) loads with its own tower and projector.

    `dtype` is the compute and KV-cache dtype ("bfloat16" on GPU). `max_seq_len`
    defaults to the model's `max_position_embeddings` capped at DEFAULT_MAX_SEQ_LEN.
    """
    model_dir = os.fspath(model_dir)
    if model_dir.endswith(".gguf"):
        model_name = model_name or os.path.splitext(os.path.basename(model_dir))[0]
        model_dir = gguf.ensure_hf_folder(model_dir)
    if not os.path.exists(os.path.join(model_dir, "config.json")):
        raise FileNotFoundError(f"model_dir {model_dir!r} has no config.json")
    if llava_hf.is_llava_folder(model_dir):
        if mesh is not None or vision is not None:
            raise ValueError("a LLaVA folder loads on one device with its own vision tower")
        return _from_llava(
            cls, model_dir, max_seq_len, max_batch, dtype, steps_per_call, prefill_chunk, model_name
        )
    # The tokenizer first: a folder without one fails before minutes of weight loading.
    vocab_size = llm.LLMConfig.from_hf(model_dir).vocab_size
    tokenizer = model_folder.load_tokenizer(model_dir, vocab_size)
    config, params = hf.load_hf(
        model_dir, mesh=mesh, rules=rules, dtype=dtype, param_dtype=param_dtype or dtype
    )
    model = llm.LLM(config)
    max_seq_len = max_seq_len or min(config.max_position_embeddings, DEFAULT_MAX_SEQ_LEN)
    eos = set(config.eos_token_ids) | set(model_folder.eos_from_folder(model_dir, tokenizer))
    image_encoder = None
    if vision == "tiny_random":
        image_encoder = gen_vision.tiny_random_encoder(
            config, gen_vision.placeholder_token(tokenizer)
        )
    elif vision is not None:
        raise ValueError(f"vision={vision!r}: the only vision tower option is 'tiny_random'")
    return cls(
        model.apply,
        params,
        tokenizer,
        lambda b, n: llm.init_cache(config, b, n, dtype),
        max_seq_len=max_seq_len,
        max_batch=max_batch,
        eos_token_ids=sorted(eos),
        steps_per_call=steps_per_call,
        prefill_chunk=prefill_chunk,
        model_name=model_name or os.path.basename(os.path.normpath(model_dir)),
        mesh=mesh,
        rules=rules,
        cache_logical_axes=llm.KVCache.logical_axes() if mesh is not None else None,
        vocab_size=config.vocab_size,
        image_encoder=image_encoder,
    )


def _from_llava(
    cls, model_dir, max_seq_len, max_batch, dtype, steps_per_call, prefill_chunk, model_name
):
    """A LLaVA folder: its LM, with its vision tower + projector as the image encoder
    (single device)."""
    loaded = llava_hf.load_llava(model_dir, dtype=dtype)
    config = loaded.lm_config
    tokenizer = model_folder.load_tokenizer(model_dir, config.vocab_size)
    eos = set(config.eos_token_ids) | set(model_folder.eos_from_folder(model_dir, tokenizer))
    return cls(
        llm.LLM(config).apply,
        loaded.lm_params,
        tokenizer,
        lambda b, n: llm.init_cache(config, b, n, dtype),
        max_seq_len=max_seq_len or min(config.max_position_embeddings, DEFAULT_MAX_SEQ_LEN),
        max_batch=max_batch,
        eos_token_ids=sorted(eos),
        steps_per_call=steps_per_call,
        prefill_chunk=prefill_chunk,
        model_name=model_name or os.path.basename(os.path.normpath(model_dir)),
        vocab_size=config.vocab_size,
        image_encoder=gen_vision.llava_encoder(model_dir, loaded),
    )
