"""CLaMR training-step benchmark: tokens/s, step ms, MFU, and the MaxSim loss share of the step
(Pallas kernel vs the einsum reference, measured in the same run).

  python benchmarks/clamr.py            # GPU: paper shapes, bf16
  python benchmarks/clamr.py --smoke    # tiny shapes; on CPU the kernel runs in interpret mode

Backbone: jaxmm.models.llm.LLM (`return_hidden=True`) with the Qwen2.5-VL-3B *text* shapes
(hidden 2048, 36 layers, 16 heads / 2 KV heads, head_dim 128, MLP 11008, vocab 151936), random
weights. jaxmm has Qwen2.5-VL (`jaxmm.models.qwen2_5_vl`), but the step times the language
model only: visual tokens enter as embedded placeholder ids (the vision tower, ~0.67B params
run once per frame patch, is not in the step; its FLOPs are not counted either). The CLaMR
head (Linear 128 + L2 norm) sits on the hidden states, as in jaxmm.models.clamr.Clamr.
Shapes: queries of 64 tokens, documents of 2048 tokens whose ids are split over 4 modalities
(random ids 1..4), in-batch negatives ([B, B, 4] scores through `in_batch_scores`), the
modality-aware loss (`clamr_loss`), full fine-tune with AdamW, bf16 compute, fp32 params.

Rows: `step` = one jitted value_and_grad + AdamW update (impl of the loss's MaxSim: "auto",
i.e. Pallas on GPU, the reference on CPU); MFU = model FLOP/s / peak bf16 FLOP/s, counting
6 * (matmul params) + 12 * layers * seq * heads * head_dim FLOPs per token (as
benchmarks/llm.py: PaLM appendix B, no causal discount), the query and document sequences each
with their own seq. `loss` = forward + backward (grads w.r.t. both embeddings) of the
modality-aware loss on fixed embeddings, kernel (impl="pallas") vs reference, and the kernel
loss's time as a fraction of the step; the two losses and their |diff| are printed.
--smoke (and a bare run without a GPU): a 2-layer 64-wide LLM, 8-token queries, 32-token
docs; MaxSim through the reference in the step, the Pallas kernel in interpret mode in `loss`.
"""

from __future__ import annotations

import argparse
import functools
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxmm.models.llm import LLM, LLMConfig
from jaxmm.perf import device_peaks
from jaxmm.tasks.clamr_loss import clamr_loss, in_batch_scores

# Qwen2.5-VL-3B-Instruct text model (its config.json), tied embeddings.
QWEN25_VL_3B_TEXT = dict(
    vocab_size=151936,
    hidden_size=2048,
    intermediate_size=11008,
    num_layers=36,
    num_heads=16,
    num_kv_heads=2,
    head_dim=128,
    tie_embeddings=True,
    rms_norm_eps=1e-6,
    max_position_embeddings=128000,
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
MODALITIES = 4
DIM = 128


def timeit(fn, *args, iters: int) -> tuple[float, object]:
    out = fn(*args)
    jax.block_until_ready(out)  # compile + warm up
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        out = fn(*args)
        jax.block_until_ready(out)
        times.append(time.perf_counter() - t0)
    return float(np.median(times)) * 1e3, out


def flops_per_step(cfg: LLMConfig, batch: int, q_len: int, d_len: int, dim: int) -> float:
    """6 * matmul params per token (embedding lookup excluded, no LM head: return_hidden)
    + 12 * layers * seq * heads * head_dim attention FLOPs per token, + the head."""
    matmul = cfg.num_params - cfg.vocab_size * cfg.hidden_size + cfg.hidden_size * dim
    if not cfg.tie_embeddings:
        matmul -= cfg.vocab_size * cfg.hidden_size  # the untied lm head is not run either
    attn = 12 * cfg.num_layers * cfg.num_heads * cfg.head_dim
    return batch * sum(seq * (6 * matmul + attn * seq) for seq in (q_len, d_len))


class Encoder:
    """LLM hidden states -> Linear(dim) -> L2 norm -> zero the tokens not kept."""

    def __init__(self, cfg: LLMConfig, dim: int):
        self.cfg, self.dim, self.lm = cfg, dim, LLM(cfg)

    def init(self, key, seq: int):
        k1, k2 = jax.random.split(key)
        lm = self.lm.init(k1, jnp.zeros((1, seq), jnp.int32), return_hidden=True)["params"]
        head = jax.random.normal(k2, (self.cfg.hidden_size, self.dim), jnp.float32) * 0.02
        return {"lm": lm, "head": head}

    def __call__(self, params, ids, keep):
        hidden, _ = self.lm.apply(
            {"params": params["lm"]}, ids, attention_mask=keep.astype(jnp.int32), return_hidden=True
        )
        x = (hidden @ params["head"].astype(hidden.dtype)).astype(jnp.float32)
        x = x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-6)
        return x * keep[..., None]


def make_batch(key, batch: int, q_len: int, d_len: int, vocab: int):
    kq, kd, kg = jax.random.split(key, 3)
    q_ids = jax.random.randint(kq, (batch, q_len), 0, vocab, jnp.int32)
    d_ids = jax.random.randint(kd, (batch, d_len), 0, vocab, jnp.int32)
    # 4 contiguous modality spans per document (video | OCR | ASR | description), ids 1..4.
    d_mod = (jnp.arange(d_len) * MODALITIES // d_len + 1).astype(jnp.int32)
    d_mod = jnp.broadcast_to(d_mod, (batch, d_len))
    gold = jax.random.randint(kg, (batch,), 1, MODALITIES + 1, jnp.int32)
    return q_ids, jnp.ones((batch, q_len), bool), d_ids, d_mod, gold


def modality_loss(impl: str):
    def f(q, qm, d, dm, gold):
        s = in_batch_scores(q, qm, d, dm, MODALITIES, impl=impl)
        return clamr_loss(s, gold, objective="modality_aware")[0]

    return f


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="tiny shapes (CPU: interpret mode)")
    p.add_argument("--batch", type=int, default=0, help="in-batch size (default 8 / 4)")
    p.add_argument("--iters", type=int, default=0, help="timed iterations (default 5 / 2)")
    p.add_argument("--remat", default="", help="LLM remat policy (default full on GPU)")
    args = p.parse_args(argv)
    on_gpu = jax.default_backend() == "gpu"
    if not on_gpu and not args.smoke:
        print("no GPU: running --smoke (Pallas in interpret mode; timings are not kernel speed)")
        args.smoke = True
    iters = args.iters or (5 if on_gpu else 2)
    batch = args.batch or (4 if args.smoke else 8)
    q_len, d_len = (8, 32) if args.smoke else (64, 2048)
    dtype = "bfloat16" if on_gpu else "float32"
    shape = TINY if args.smoke else QWEN25_VL_3B_TEXT
    remat = args.remat or ("full" if on_gpu and not args.smoke else "none")
    # scan_layers: one compiled layer body (36 unrolled layers take minutes to compile).
    cfg = LLMConfig(**shape, dtype=dtype, param_dtype="float32", remat=remat, scan_layers=True)
    kind, _, peak = device_peaks()
    print(
        f"device: {kind}  backend: {jax.default_backend()}  dtype: {dtype}  jax {jax.__version__}"
    )
    backbone = "Qwen2.5-VL-3B text shapes (LLM, random weights)" if not args.smoke else "tiny LLM"
    print(f"backbone: {backbone}  params {cfg.num_params / 1e6:.1f}M  remat {remat}")

    enc = Encoder(cfg, DIM)
    params = jax.jit(lambda k: enc.init(k, q_len))(jax.random.key(0))
    opt = optax.adamw(1e-5, weight_decay=0.01)
    opt_state = jax.jit(opt.init)(params)
    q_ids, q_mask, d_ids, d_mod, gold = make_batch(
        jax.random.key(1), batch, q_len, d_len, cfg.vocab_size
    )
    loss_auto = modality_loss("auto")

    def step_loss(params, q_ids, q_mask, d_ids, d_mod, gold):
        q = enc(params, q_ids, q_mask)
        d = enc(params, d_ids, d_mod > 0)
        return loss_auto(q, q_mask, d, d_mod, gold)

    # The loss alone runs on fixed embeddings: the backbone's outputs for this batch under the
    # initial params (computed before the step donates them).
    encode = jax.jit(enc.__call__)
    q_emb, d_emb = encode(params, q_ids, q_mask), encode(params, d_ids, d_mod > 0)
    if on_gpu:
        q_emb, d_emb = q_emb.astype(jnp.bfloat16), d_emb.astype(jnp.bfloat16)

    # Params and AdamW state are donated (3B fp32 params + state twice would not fit beside the
    # activations), so each call continues from the last one's state, as training does.
    @functools.partial(jax.jit, donate_argnums=(0, 1))
    def train_step(params, opt_state, q_ids, q_mask, d_ids, d_mod, gold):
        loss, grads = jax.value_and_grad(step_loss)(params, q_ids, q_mask, d_ids, d_mod, gold)
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    state = (params, opt_state)
    del params, opt_state
    times, first_loss = [], None
    for i in range(iters + 1):  # call 0 compiles and warms up
        t0 = time.perf_counter()
        *state, loss = train_step(*state, q_ids, q_mask, d_ids, d_mod, gold)
        jax.block_until_ready(loss)
        if i:
            times.append(time.perf_counter() - t0)
        else:
            first_loss = float(loss)  # the initial params: the same loss as the `loss` row
    del state
    step_ms = float(np.median(times)) * 1e3
    tokens = batch * (q_len + d_len)
    flops = flops_per_step(cfg, batch, q_len, d_len, DIM)
    line = (
        f"step  B={batch:<3d} q_len={q_len:<4d} d_len={d_len:<5d} | step {step_ms:10.3f} ms  "
        f"{tokens / step_ms * 1e3:12.1f} tokens/s  {flops / step_ms / 1e9:8.3f} TFLOP/s"
    )
    if peak:
        line += f"  MFU {100 * flops / (step_ms * 1e-3) / peak:5.1f}%"
    print(line + f" | loss {first_loss:.4f}", flush=True)

    fns = {
        impl: jax.jit(jax.value_and_grad(modality_loss(impl), argnums=(0, 2)))
        for impl in ("pallas", "reference")
    }
    res = {
        impl: timeit(fn, q_emb, q_mask, d_emb, d_mod, gold, iters=iters) for impl, fn in fns.items()
    }
    (k_ms, (k_loss, k_g)), (r_ms, (r_loss, r_g)) = res["pallas"], res["reference"]
    diff = abs(float(k_loss) - float(r_loss))
    gdiff = max(
        float(jnp.max(jnp.abs(a.astype(jnp.float32) - b.astype(jnp.float32))))
        for a, b in zip(k_g, r_g, strict=True)
    )
    print(
        f"loss  B={batch:<3d} q_len={q_len:<4d} d_len={d_len:<5d} | kernel {k_ms:9.3f} ms  "
        f"reference {r_ms:9.3f} ms  ratio {r_ms / k_ms:6.2f}x | share of step: kernel "
        f"{100 * k_ms / step_ms:5.2f}%  reference {100 * r_ms / step_ms:5.2f}% | "
        f"loss kernel {float(k_loss):.6f}  reference {float(r_loss):.6f}  "
        f"|diff| {diff:.2e}  max|dgrad| {gdiff:.2e}",
        flush=True,
    )


if __name__ == "__main__":
    main()
