"""LLM benchmark: training tokens/s + MFU, packed SFT training (4K and 16K, chunked loss), and
decode tokens/s vs transformers (same GPU, same random weights, same batch).

GPU (one H100):   python benchmarks/llm.py
CPU smoke test:   python benchmarks/llm.py --smoke

Training: a Llama-3.2-1B-shaped model (bf16 compute, fp32 params and AdamW state), params
sharded with the FSDP rules over all local devices, one jitted value_and_grad + optax.adamw
step with donated state. MFU = achieved model FLOP/s / peak bf16 FLOP/s, counting
6 * (matmul params) + 12 * layers * seq * (heads * head_dim) FLOPs per token (PaLM appendix B,
no causal discount). Packed SFT: the SFT task's loss (`jaxmm.tasks.sft.llm_loss_sum`: segment
ids, loss mask, token-normalised cross-entropy) on rows packed by `jaxmm.data.packing` from
synthetic examples of log-normal length, `--sft-tokens` tokens per step, at each of
`--sft-seqs`; with `--chunk-tokens` (the chunked cross-entropy) and, up to
`--full-logits-max-seq`, also with the full [B, T, vocab] logits, printing the ratio of the two
step times. Tokens/s and MFU are given for all row tokens and for real (non-padding) tokens
(same per-token FLOPs, so the attention term is an upper bound for packed short examples); the
packing fill is printed. Decode: greedy, preallocated KV cache, one jitted step per token (what
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

from jaxmm.data.packing import make_row, pack
from jaxmm.data.sft_records import Example
from jaxmm.models.llm import LLM, LLMConfig, init_cache
from jaxmm.perf import peak_bf16_flops
from jaxmm.sharding import DEFAULT_RULES, make_mesh, params_shardings
from jaxmm.tasks.sft import llm_loss_sum

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


def train_flops_per_token(cfg: LLMConfig, seq: int) -> float:
    matmul_params = cfg.num_params - cfg.vocab_size * cfg.hidden_size  # lookup is not a matmul
    if cfg.tie_embeddings:
        matmul_params += cfg.vocab_size * cfg.hidden_size  # ... but the tied lm head is
    return 6 * matmul_params + 12 * cfg.num_layers * seq * cfg.num_heads * cfg.head_dim


def _timed_train(cfg: LLMConfig, loss_fn, data: list, steps: int, label: str):
    """Sharded params + AdamW, one jitted donated step of `loss_fn(model, params, batch)`;
    returns (seconds per step over `steps` steps cycling `data`, XLA's temp bytes or None)."""
    mesh = make_mesh({"data": 1, "fsdp": -1, "tensor": 1})
    model = LLM(cfg)
    tokens = jnp.zeros((1, 8), jnp.int32)
    opt = optax.adamw(1e-4, weight_decay=0.1)

    boxed = jax.eval_shape(model.init, jax.random.key(0), tokens)["params"]
    p_shard = params_shardings(boxed, mesh, DEFAULT_RULES)
    init = lambda key: nn.meta.unbox(model.init(key, tokens)["params"])
    with jax.set_mesh(mesh), nn.logical_axis_rules(DEFAULT_RULES):
        params = jax.jit(init, out_shardings=p_shard)(jax.random.key(0))
        opt_state = jax.jit(opt.init)(params)  # moments inherit their param's sharding

        def step(params, opt_state, batch):
            loss, grads = jax.value_and_grad(lambda p: loss_fn(model, p, batch))(params)
            updates, opt_state = opt.update(grads, opt_state, params)
            return optax.apply_updates(params, updates), opt_state, loss

        t0 = time.perf_counter()
        step = jax.jit(step, donate_argnums=(0, 1)).lower(params, opt_state, data[0]).compile()
        memory = step.memory_analysis()
        params, opt_state, loss = step(params, opt_state, data[0])
        loss.block_until_ready()
        print(f"{label}: compile + first step {time.perf_counter() - t0:.1f} s, loss {loss:.3f}")
        t0 = time.perf_counter()
        for i in range(steps):
            params, opt_state, loss = step(params, opt_state, data[i % len(data)])
        loss.block_until_ready()
        dt = (time.perf_counter() - t0) / steps
    return dt, (memory.temp_size_in_bytes if memory is not None else None)


def bench_train(cfg: LLMConfig, batch: int, seq: int, steps: int, peak: float | None) -> None:
    positions = jnp.broadcast_to(jnp.arange(seq, dtype=jnp.int32), (batch, seq))

    def loss_fn(model, params, batch_tokens):
        logits, _ = model.apply({"params": params}, batch_tokens[:, :-1], positions)
        return optax.softmax_cross_entropy_with_integer_labels(
            logits.astype(jnp.float32), batch_tokens[:, 1:]
        ).mean()

    rng = np.random.default_rng(0)
    data = [
        jnp.asarray(rng.integers(0, cfg.vocab_size, (batch, seq + 1), dtype=np.int32))
        for _ in range(2)
    ]
    dt, _ = _timed_train(cfg, loss_fn, data, steps, "train")
    tok_s = batch * seq / dt
    flops = train_flops_per_token(cfg, seq) * tok_s
    line = (
        f"train: {cfg.num_params / 1e6:,.1f}M params, batch {batch} x seq {seq}, "
        f"{dt * 1e3:.1f} ms/step, {tok_s:,.0f} tokens/s, {flops / 1e12:.1f} TFLOP/s"
    )
    if peak:
        line += f", MFU {100 * flops / peak:.1f}% (peak {peak / 1e12:.0f} TFLOP/s)"
    print(line)


def packed_sft_batches(vocab: int, seq: int, batch: int, n_batches: int, seed: int = 0):
    """Packed SFT rows (`jaxmm.data.packing`) of synthetic examples whose lengths are
    log-normal (median seq/8, long tail up to seq, like reasoning traces), the first quarter of
    each (the prompt) out of the loss. Returns (batches, packing report)."""
    rng = np.random.default_rng(seed)
    examples, tokens = [], 0
    while tokens < 2 * batch * n_batches * seq:
        n = int(np.clip(rng.lognormal(np.log(seq / 8), 1.0), 32, seq)) + 1
        weights = np.zeros(n, np.int32)
        weights[n // 4 :] = 1
        examples.append(Example(rng.integers(0, vocab, n), weights, f"synthetic#{len(examples)}"))
        tokens += n - 1
    rows = pack(examples, seq, seed=seed)
    made = [make_row([examples[j] for j in r], seq, 0) for r in rows]
    report = {
        "examples": len(examples),
        "rows": len(rows),
        "fill": sum(int((m["segment_ids"] > 0).sum()) for m in made) / (len(rows) * seq),
    }
    batches = []
    for _ in range(n_batches):  # rows spread over the pool: first-fit's early rows are fuller
        picks = rng.choice(len(made), batch, replace=False)
        batches.append({k: jnp.asarray(np.stack([made[j][k] for j in picks])) for k in made[0]})
    return batches, report


def bench_sft(
    cfg: LLMConfig, seq: int, batch: int, steps: int, peak: float | None, chunks: list[int]
) -> list[float]:
    """Packed SFT train steps (segment ids, loss mask, `llm_loss_sum`), one run per entry of
    `chunks` (`loss.chunk_tokens`, 0 = full logits); returns their seconds per step."""
    data, report = packed_sft_batches(cfg.vocab_size, seq, batch, 2)
    real = np.mean([float((b["segment_ids"] > 0).sum()) for b in data]) / (batch * seq)
    trained = np.mean([float(b["loss_mask"].sum()) for b in data]) / (batch * seq)
    print(
        f"sft seq {seq}: packing {report['examples']} examples into {report['rows']} rows, "
        f"{100 * report['fill']:.1f}% of row tokens real; timed batches {100 * real:.1f}% real, "
        f"{100 * trained:.1f}% trained targets"
    )

    def loss_fn(chunk):
        def fn(model, params, b):
            total, count = llm_loss_sum(model, params, b, chunk_tokens=chunk)
            return total / jnp.maximum(count, 1.0)

        return fn

    times = []
    for chunk in chunks:
        name = f"chunk {chunk}" if chunk else "full logits"
        label = f"sft seq {seq} {name}"
        dt, temp = _timed_train(cfg, loss_fn(chunk), data, steps, label)
        times.append(dt)
        all_s = batch * seq / dt
        flops = train_flops_per_token(cfg, seq)
        line = (
            f"{label}: batch {batch}, {dt * 1e3:.1f} ms/step, {all_s:,.0f} tokens/s "
            f"({real * all_s:,.0f} real tokens/s)"
        )
        if peak:
            mfu = 100 * flops * all_s / peak
            line += f", MFU {mfu:.1f}% all tokens / {mfu * real:.1f}% real tokens"
        if temp is not None:
            line += f", XLA temp {temp / 2**20:,.0f} MiB"
        print(line)
    return times


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
    ap.add_argument("--skip-sft", action="store_true")
    ap.add_argument("--sft-seqs", default="4096,16384", help="packed SFT sequence lengths")
    ap.add_argument("--sft-tokens", type=int, default=16384, help="tokens per SFT step")
    ap.add_argument("--chunk-tokens", type=int, default=2048, help="chunked loss chunk size")
    ap.add_argument(
        "--full-logits-max-seq",
        type=int,
        default=4096,
        help="also time the full-logits loss at SFT lengths up to this (for the ratio)",
    )
    args = ap.parse_args(argv)
    if jax.default_backend() != "gpu" and not args.smoke:
        # `make bench` runs every benchmark bare: on CPU that means the smoke shapes.
        print("no GPU: running --smoke (tiny shapes; the 1B figures need a GPU)")
        args.smoke = True
    if args.smoke:  # tiny defaults; flags given on the command line still win
        ap.set_defaults(batch=2, seq=64, steps=2, prompt_len=8, new_tokens=24)
        ap.set_defaults(decode_batches="1,4", sft_seqs="128,256", sft_tokens=512)
        ap.set_defaults(chunk_tokens=48, full_logits_max_seq=128)
        args = ap.parse_args(argv)
        args.smoke = True

    shape = TINY if args.smoke else LLAMA_1B
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
        bench_train(
            cfg, args.batch, args.seq, args.steps, peak_bf16_flops(device, args.peak_tflops)
        )
    if not args.skip_sft:
        for seq in (int(x) for x in args.sft_seqs.split(",")):
            both = seq <= args.full_logits_max_seq
            chunks = [args.chunk_tokens, 0] if both else [args.chunk_tokens]
            batch = max(1, args.sft_tokens // seq)
            peak = peak_bf16_flops(device, args.peak_tflops)
            times = bench_sft(cfg, seq, batch, args.steps, peak, chunks)
            if both:
                print(
                    f"sft seq {seq}: step time chunk {args.chunk_tokens} / full logits = "
                    f"{times[0] / times[1]:.2f}x"
                )
    if not args.skip_decode:
        batches = [int(b) for b in args.decode_batches.split(",")]
        bench_decode(cfg, batches, args.prompt_len, args.new_tokens, args.torch_attn)


if __name__ == "__main__":
    main()
