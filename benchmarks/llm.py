"""LLM benchmark: training tokens/s + MFU, and decode tokens/s vs transformers (same GPU, same
random weights, same batch).

GPU (one H100):   python benchmarks/llm.py
CPU smoke test:   python benchmarks/llm.py --smoke

Training: a Llama-3.2-1B-shaped model (bf16 compute, fp32 params and AdamW state), params
sharded with the FSDP rules over all local devices, one jitted value_and_grad + optax.adamw
step with donated state. MFU = achieved model FLOP/s / peak bf16 FLOP/s, counting
6 * (matmul params) + 12 * layers * seq * (heads * head_dim) FLOPs per token (PaLM appendix B,
no causal discount). Decode: greedy, preallocated KV cache, one jitted step per token (what
the engine does); transformers runs `generate(do_sample=False)` on the weights jaxmm exports
with `save_hf`. Decode time = time(prompt + N tokens) - time(prompt + 1 token) on both sides.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxmm.models.llm import LLM, LLMConfig, init_cache
from jaxmm.sharding import DEFAULT_RULES, make_mesh, params_shardings

# Llama-3.2-1B shapes (tied embeddings, GQA 32/8, llama3 rope scaling).
LLAMA_1B = dict(
    vocab_size=128256,
    hidden_size=2048,
    intermediate_size=8192,
    num_layers=16,
    num_heads=32,
    num_kv_heads=8,
    head_dim=64,
    tie_embeddings=True,
    rms_norm_eps=1e-5,
    max_position_embeddings=131072,
)
TINY = dict(
    vocab_size=512,
    hidden_size=64,
    intermediate_size=128,
    num_layers=2,
    num_heads=4,
    num_kv_heads=2,
    head_dim=16,
    tie_embeddings=True,
)
# Dense bf16 peak FLOP/s by device kind (vendor datasheets, SXM parts).
PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "B200": 2250e12}


def peak_flops(device, override_tflops: float | None) -> float | None:
    if override_tflops:
        return override_tflops * 1e12
    kind = getattr(device, "device_kind", "")
    return next((v for k, v in PEAK_BF16.items() if k in kind), None)


def train_flops_per_token(cfg: LLMConfig, seq: int) -> float:
    matmul_params = cfg.num_params - cfg.vocab_size * cfg.hidden_size  # lookup is not a matmul
    if cfg.tie_embeddings:
        matmul_params += cfg.vocab_size * cfg.hidden_size  # ... but the tied lm head is
    return 6 * matmul_params + 12 * cfg.num_layers * seq * cfg.num_heads * cfg.head_dim


def bench_train(cfg: LLMConfig, batch: int, seq: int, steps: int, peak: float | None) -> None:
    mesh = make_mesh({"data": 1, "fsdp": -1, "tensor": 1})
    model = LLM(cfg)
    tokens = jnp.zeros((batch, seq), jnp.int32)
    positions = jnp.broadcast_to(jnp.arange(seq, dtype=jnp.int32), (batch, seq))
    opt = optax.adamw(1e-4, weight_decay=0.1)

    boxed = jax.eval_shape(model.init, jax.random.key(0), tokens, positions)["params"]
    p_shard = params_shardings(boxed, mesh, DEFAULT_RULES)
    init = lambda key: nn.meta.unbox(model.init(key, tokens, positions)["params"])
    with jax.set_mesh(mesh), nn.logical_axis_rules(DEFAULT_RULES):
        params = jax.jit(init, out_shardings=p_shard)(jax.random.key(0))
        opt_state = jax.jit(opt.init)(params)  # moments inherit their param's sharding

        def loss_fn(params, batch_tokens):
            logits, _ = model.apply({"params": params}, batch_tokens[:, :-1], positions)
            return optax.softmax_cross_entropy_with_integer_labels(
                logits.astype(jnp.float32), batch_tokens[:, 1:]
            ).mean()

        def step(params, opt_state, batch_tokens):
            loss, grads = jax.value_and_grad(loss_fn)(params, batch_tokens)
            updates, opt_state = opt.update(grads, opt_state, params)
            return optax.apply_updates(params, updates), opt_state, loss

        step = jax.jit(step, donate_argnums=(0, 1))
        rng = np.random.default_rng(0)
        data = [
            jnp.asarray(rng.integers(0, cfg.vocab_size, (batch, seq + 1), dtype=np.int32))
            for _ in range(2)
        ]
        t0 = time.perf_counter()
        params, opt_state, loss = step(params, opt_state, data[0])
        loss.block_until_ready()
        print(f"train: compile + first step {time.perf_counter() - t0:.1f} s, loss {loss:.3f}")
        t0 = time.perf_counter()
        for i in range(steps):
            params, opt_state, loss = step(params, opt_state, data[i % 2])
        loss.block_until_ready()
        dt = (time.perf_counter() - t0) / steps
    tok_s = batch * seq / dt
    flops = train_flops_per_token(cfg, seq) * tok_s
    line = (
        f"train: {cfg.num_params / 1e6:,.1f}M params, batch {batch} x seq {seq}, "
        f"{dt * 1e3:.1f} ms/step, {tok_s:,.0f} tokens/s, {flops / 1e12:.1f} TFLOP/s"
    )
    if peak:
        line += f", MFU {100 * flops / peak:.1f}% (peak {peak / 1e12:.0f} TFLOP/s)"
    print(line)


def _best_of(repeats: int, fn, *args) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(*args)
        best = min(best, time.perf_counter() - t0)
    return best


def jaxmm_decode_seconds(cfg, params, prompts: np.ndarray, new_tokens: int) -> float:
    model = LLM(cfg)
    batch, plen = prompts.shape

    @jax.jit
    def prefill(params, tokens, cache):
        logits, cache = model.apply({"params": params}, tokens, None, cache=cache)
        return jnp.argmax(logits[:, -1], -1).astype(jnp.int32), cache

    @jax.jit
    def step(params, token, cache):
        logits, cache = model.apply({"params": params}, token[:, None], None, cache=cache)
        return jnp.argmax(logits[:, -1], -1).astype(jnp.int32), cache

    step = jax.jit(step, donate_argnums=(2,))
    prefill = jax.jit(prefill, donate_argnums=(2,))

    def run(n):
        cache = init_cache(cfg, batch, plen + new_tokens, cfg.dtype)
        token, cache = prefill(params, prompts, cache)
        for _ in range(n - 1):
            token, cache = step(params, token, cache)
        return token.block_until_ready()

    run(3)  # compile both functions
    timings = [_best_of(3, run, n) for n in (1, new_tokens)]
    return timings[1] - timings[0]


def torch_decode_seconds(folder, prompts: np.ndarray, new_tokens: int, attn: str) -> float:
    import torch
    import transformers

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    model = (
        transformers.AutoModelForCausalLM.from_pretrained(
            folder, dtype=dtype, attn_implementation=attn
        )
        .to(device)
        .eval()
    )
    ids = torch.as_tensor(prompts, device=device)

    def run(n):
        with torch.no_grad():
            model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                do_sample=False,
                max_new_tokens=n,
                min_new_tokens=n,
                pad_token_id=0,
            )
        if device == "cuda":
            torch.cuda.synchronize()

    run(3)
    timings = [_best_of(3, run, n) for n in (1, new_tokens)]
    return timings[1] - timings[0]


def bench_decode(cfg: LLMConfig, batches, prompt_len: int, new_tokens: int, torch_attn: str):
    from jaxmm.models.hf import save_hf

    cfg = cfg.replace(param_dtype=cfg.dtype, remat="none")
    tokens = jnp.zeros((1, 1), jnp.int32)
    params = nn.meta.unbox(jax.jit(LLM(cfg).init)(jax.random.key(1), tokens, tokens)["params"])
    folder = None
    if torch_attn != "none":
        try:
            import torch  # noqa: F401
            import transformers  # noqa: F401

            folder = tempfile.mkdtemp(prefix="jaxmm_bench_")
            save_hf(params, cfg, folder)
        except ImportError:
            print("decode: torch/transformers not installed, skipping the reference")
    rng = np.random.default_rng(0)
    for batch in batches:
        prompts = rng.integers(0, cfg.vocab_size, (batch, prompt_len), dtype=np.int32)
        ours = jaxmm_decode_seconds(cfg, params, prompts, new_tokens)
        ours_tps = batch * (new_tokens - 1) / ours
        line = f"decode: batch {batch:3d}, jaxmm {ours_tps:10,.0f} tokens/s"
        if folder:
            ref = torch_decode_seconds(folder, prompts, new_tokens, torch_attn)
            ref_tps = batch * (new_tokens - 1) / ref
            line += (
                f" | transformers ({torch_attn}) {ref_tps:10,.0f} tokens/s | "
                f"ratio {ours_tps / ref_tps:.2f}x"
            )
        print(line)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--smoke", action="store_true", help="tiny shapes, runs on CPU")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=2048)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--remat", default="none", choices=["none", "full", "dots"])
    ap.add_argument("--scan", action="store_true", help="scan over layers (stacked params)")
    ap.add_argument("--attention", default="auto", choices=["auto", "xla", "cudnn", "reference"])
    ap.add_argument("--decode-batches", default="1,32")
    ap.add_argument("--prompt-len", type=int, default=128)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--torch-attn", default="eager", choices=["eager", "sdpa", "none"])
    ap.add_argument("--peak-tflops", type=float, default=None)
    ap.add_argument("--skip-train", action="store_true")
    ap.add_argument("--skip-decode", action="store_true")
    args = ap.parse_args(argv)
    if jax.default_backend() != "gpu" and not args.smoke:
        # `make bench` runs every benchmark bare: on CPU that means the smoke shapes.
        print("no GPU: running --smoke (tiny shapes; the 1B figures need a GPU)")
        args.smoke = True

    shape = TINY if args.smoke else LLAMA_1B
    if args.smoke:
        args.batch, args.seq, args.steps = 2, 64, 2
        args.prompt_len, args.new_tokens, args.decode_batches = 8, 24, "1,4"
    dtype = "float32" if args.smoke else "bfloat16"
    cfg = LLMConfig(
        **shape,
        dtype=dtype,
        param_dtype="float32",
        logits_dtype=dtype,
        remat=args.remat,
        attention_impl=args.attention,
        scan_layers=args.scan,
    )
    device = jax.devices()[0]
    print(f"device: {device.device_kind} x{jax.device_count()}, jax {jax.__version__}")
    if not args.skip_train:
        bench_train(cfg, args.batch, args.seq, args.steps, peak_flops(device, args.peak_tflops))
    if not args.skip_decode:
        batches = [int(b) for b in args.decode_batches.split(",")]
        bench_decode(cfg, batches, args.prompt_len, args.new_tokens, args.torch_attn)


if __name__ == "__main__":
    main()
