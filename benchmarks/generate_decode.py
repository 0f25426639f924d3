"""Decode throughput of the jaxmm engine vs `transformers` generate on the same model and batch.

    python benchmarks/generate_decode.py                 # GPU: Llama-3.2-1B-shaped, bf16
    python benchmarks/generate_decode.py --smoke         # CPU: tiny model, checks it runs

Both sides get the same random weights (saved once by transformers, loaded by jaxmm), the
same prompts (token ids), greedy decoding and exactly `--new_tokens` tokens per row (no EOS).
Reported: generated tokens/s for each (compile / warm-up excluded), and the ratio.
"""

from __future__ import annotations

import tempfile
import time

from absl import app, flags

_SMOKE = flags.DEFINE_bool("smoke", False, "Tiny model on CPU, few tokens.")
_BATCH = flags.DEFINE_integer("batch", 16, "Requests decoded together.")
_PROMPT = flags.DEFINE_integer("prompt_len", 128, "Prompt tokens per request.")
_NEW = flags.DEFINE_integer("new_tokens", 256, "Generated tokens per request.")
_DTYPE = flags.DEFINE_enum("dtype", "bfloat16", ["float32", "bfloat16"], "Weights and compute.")
_STEPS = flags.DEFINE_integer("steps_per_call", 32, "Engine decode steps per jitted call.")

LLAMA_1B = dict(
    vocab_size=128256,
    hidden_size=2048,
    intermediate_size=8192,
    num_hidden_layers=16,
    num_attention_heads=32,
    num_key_value_heads=8,
    head_dim=64,
    max_position_embeddings=4096,
    rope_theta=500000.0,
    tie_word_embeddings=True,
)
TINY = dict(
    vocab_size=512,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=16,
    max_position_embeddings=256,
    tie_word_embeddings=False,
)


def _word_tokenizer(vocab: int):
    """A real `tokenizers` WordLevel tokenizer over ids "t0".."t{vocab-1}" (no EOS)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({f"t{i}": i for i in range(vocab)}, unk_token="t0"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok)


def main(argv):
    del argv
    import jax
    import numpy as np
    import torch
    import transformers

    from jaxmm.generate.engine import Engine
    from jaxmm.generate.params import GenerationParams
    from jaxmm.models import hf, llm

    smoke = _SMOKE.value
    batch, prompt_len, new = (2, 8, 8) if smoke else (_BATCH.value, _PROMPT.value, _NEW.value)
    dtype = "float32" if smoke else _DTYPE.value
    device = "cuda" if torch.cuda.is_available() and not smoke else "cpu"
    shape = TINY if smoke else LLAMA_1B
    torch_dtype = getattr(torch, dtype)

    with tempfile.TemporaryDirectory() as folder:
        torch.manual_seed(0)
        cfg = transformers.LlamaConfig(**shape, bos_token_id=None, eos_token_id=None)
        tmodel = transformers.LlamaForCausalLM(cfg).to(torch_dtype)
        tmodel.save_pretrained(folder)
        tmodel = tmodel.to(device).eval()
        config, params = hf.load_hf(folder, dtype=dtype, param_dtype=dtype)

    tokenizer = _word_tokenizer(config.vocab_size)
    max_len = prompt_len + new
    engine = Engine(
        llm.LLM(config).apply,
        params,
        tokenizer,
        lambda b, n: llm.init_cache(config, b, n, dtype),
        max_seq_len=max_len,
        max_batch=batch,
        eos_token_ids=(),
        steps_per_call=_STEPS.value,
    )
    prompts = np.random.default_rng(0).integers(1, config.vocab_size, (batch, prompt_len))
    params_gen = GenerationParams(max_tokens=new)

    def run_jax():
        outs = engine.generate([p.tolist() for p in prompts], params_gen)
        assert all(len(o.token_ids) == new for o in outs)
        return outs

    def run_torch():
        with torch.no_grad():
            ids = torch.as_tensor(prompts, device=device)
            out = tmodel.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=new,
                min_new_tokens=new,
                do_sample=False,
                pad_token_id=0,
            )
        if device == "cuda":
            torch.cuda.synchronize()
        return out

    def timed(fn, reps=1 if smoke else 3):
        fn()  # warm-up: compile / cuDNN autotune
        t0 = time.perf_counter()
        for _ in range(reps):
            fn()
        return (time.perf_counter() - t0) / reps

    # Sanity: same greedy tokens (near-ties in a random model may flip a few in bf16).
    jax_tokens = np.array([o.token_ids for o in run_jax()])
    torch_tokens = run_torch()[:, prompt_len:].cpu().numpy()
    agree = float((jax_tokens == torch_tokens).all(axis=1).mean())

    t_jax = timed(run_jax)
    t_torch = timed(run_torch)
    tokens = batch * new
    print(f"devices: jax={jax.devices()[0].platform} torch={device}; dtype={dtype}")
    print(
        f"model: {config.num_layers} layers, hidden {config.hidden_size}, "
        f"{config.num_params / 1e6:.1f}M params; batch {batch}, prompt {prompt_len}, "
        f"new {new}"
    )
    print(f"jaxmm engine : {t_jax * 1e3:9.1f} ms  {tokens / t_jax:10.1f} tok/s")
    print(f"transformers : {t_torch * 1e3:9.1f} ms  {tokens / t_torch:10.1f} tok/s")
    print(f"rows with identical greedy tokens: {agree:.0%}")
    print(f"speedup (jaxmm / transformers tok/s): {t_torch / t_jax:.2f}x")


if __name__ == "__main__":
    app.run(main)
