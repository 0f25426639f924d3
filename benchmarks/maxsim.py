"""MaxSim benchmark: Pallas kernel vs the einsum + max reference, measured in the same run.

  python benchmarks/maxsim.py            # GPU: all cases (a)-(d), bf16
  python benchmarks/maxsim.py --sweep    # also time alternative block sizes
  python benchmarks/maxsim.py --smoke    # tiny shapes; on CPU the kernel runs in interpret mode
  python benchmarks/maxsim.py --schedules persistent   # one scan schedule only

Every case runs once per scan schedule (`--schedules`, default both: "blocked", the kernel
measured on an H200, and "persistent", issue 13's redesign; kernels_pallas/maxsim/padding.py),
so one GPU run is the A/B. Cases: (a) one 32-token query vs N docs x 128 tokens x 128 dim
(N = 100K and 1M; the 1M corpus also as 8 shards of 125K, each under 4 GiB so the kernel's
load offsets are 32-bit instead of 64-bit; the fused top-10 search over 1M);
(b) 64 queries batched; (c) CLaMR shapes: 64-token queries, 2048-token docs, 4 modalities
(modality-max vs plain kernel; modality ids random per token, where every tile mixes
modalities, and in 512-token segments, CLaMR's frames | OCR | ASR | description layout);
(d) training: in-batch [B, B] scores, forward + backward.
Reported per row: ms (median), ratio reference/kernel, achieved GB/s (document bytes read once)
and TFLOP/s (2 q_len d_len dim per query-doc pair), as % of the device peak where known.
Physical limit (spec): one query has arithmetic intensity q_len FLOP/byte in bf16, so case (a)
is HBM-bound: 1M docs (32 GiB) take >= ~10 ms at 3.35 TB/s (H100 SXM).
The reference for large batches runs over document chunks (lax.map) because the full
[n_q, n_d, q_len, d_len] fp32 tensor would not fit in memory; that is how ColBERT-style code
batches it too. Optional peers (flash-maxsim, late-interaction-kernels; torch + CUDA) are
timed on case (a)/(b) shapes when importable.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxmm.perf import device_peaks
from kernels_pallas.maxsim import api, padding
from kernels_pallas.maxsim import reference as ref


@dataclasses.dataclass
class Case:
    name: str
    n_q: int
    q_len: int
    n_d: int
    d_len: int
    dim: int = 128
    modalities: int = 0  # 0: plain MaxSim
    train: bool = False  # forward + backward, in-batch
    topk: int = 0  # > 0: fused search (streaming top-k) instead of the score matrix
    shards: int = 1  # > 1: the corpus as this many separate arrays, one kernel call each
    segments: bool = False  # modality ids in d_len / modalities contiguous segments


def cases(smoke: bool) -> list[Case]:
    if smoke:
        return [
            Case("a: 1 query", 1, 16, 64, 32, 32),
            Case("a: 1 query, 2 shards", 1, 16, 64, 32, 32, shards=2),
            Case("a: 1 query top-10 search", 1, 16, 64, 32, 32, topk=10),
            Case("b: batched queries", 8, 16, 64, 32, 32),
            Case("c: CLaMR plain", 4, 16, 16, 64, 32),
            Case("c: CLaMR modality-max", 4, 16, 16, 64, 32, modalities=4),
            Case("c: CLaMR modality-max segments", 4, 16, 16, 64, 32, modalities=4, segments=True),
            Case("d: train in-batch", 4, 16, 4, 64, 32, modalities=4, train=True),
        ]
    return [
        Case("a: 1 query", 1, 32, 100_000, 128),
        Case("a: 1 query", 1, 32, 1_000_000, 128),
        Case("a: 1 query, 8 shards < 4 GiB", 1, 32, 1_000_000, 128, shards=8),
        Case("a: 1 query top-10 search", 1, 32, 1_000_000, 128, topk=10),
        Case("b: 64 queries", 64, 32, 100_000, 128),
        Case("c: CLaMR plain", 16, 64, 4096, 2048),
        Case("c: CLaMR modality-max", 16, 64, 4096, 2048, modalities=4),
        Case("c: CLaMR modality-max segments", 16, 64, 4096, 2048, modalities=4, segments=True),
        Case("d: train in-batch B=32", 32, 64, 32, 2048, modalities=4, train=True),
    ]


def timeit(fn, *args, iters: int) -> float:
    out = fn(*args)
    jax.block_until_ready(out)  # compile + warm up
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return float(np.median(times)) * 1e3


def make_inputs(c: Case, dtype, seed=0):
    """Normalised random token embeddings, generated on device (1M docs = 32 GiB bf16).
    Sharded cases return tuples of per-shard documents and side arrays."""
    kq, kd, km = jax.random.split(jax.random.key(seed), 3)
    n_shard = c.n_d // c.shards
    n_chunks = next(n for n in (16, 8, 4, 2, 1) if n_shard % n == 0)

    @jax.jit
    def gen_queries():
        q = jax.random.normal(kq, (c.n_q, c.q_len, c.dim), jnp.float32)
        q = (q / jnp.linalg.norm(q, axis=-1, keepdims=True)).astype(dtype)
        return q, jnp.ones((c.n_q, c.q_len), bool)

    @jax.jit
    def gen_docs(kd, km):
        # Chunked so the fp32 intermediates stay small next to the 32 GiB bf16 corpus.
        shape = (n_shard // n_chunks, c.d_len, c.dim)
        d = jax.lax.map(
            lambda k: (jax.random.normal(k, shape) * c.dim**-0.5).astype(dtype),
            jax.random.split(kd, n_chunks),
        ).reshape(n_shard, c.d_len, c.dim)
        if c.modalities and c.segments:  # ids 1..M in M contiguous segments per document
            seg = jnp.arange(c.d_len, dtype=jnp.int32) * c.modalities // c.d_len + 1
            side = jnp.broadcast_to(seg, (n_shard, c.d_len))
        elif c.modalities:
            side = jax.random.randint(km, (n_shard, c.d_len), 1, c.modalities + 1, jnp.int32)
        else:
            side = jnp.ones((n_shard, c.d_len), bool)  # plain MaxSim: the doc mask
        return d, side

    keys = zip(jax.random.split(kd, c.shards), jax.random.split(km, c.shards), strict=True)
    docs = [gen_docs(*k) for k in keys]
    if c.shards == 1:
        return *gen_queries(), *docs[0]
    return *gen_queries(), tuple(d for d, _ in docs), tuple(side for _, side in docs)


def per_shard(fn):
    """fn(q, qm, d, side) -> [n_q, n_d, ...] applied to each shard, scores concatenated."""

    def run(q, qm, d, side):
        if not isinstance(d, tuple):
            return fn(q, qm, d, side)
        return jnp.concatenate([fn(q, qm, *x) for x in zip(d, side, strict=True)], axis=1)

    return run


def chunked_reference(score_fn, n_d: int, budget_elems: int, per_doc_elems: int):
    """Applies a reference scorer over document chunks so its intermediate fits in memory."""
    chunk = max(1, min(n_d, budget_elems // max(per_doc_elems, 1)))
    while n_d % chunk:
        chunk -= 1

    def run(q, qm, d, side):
        if chunk == n_d:
            return score_fn(q, qm, d, side)
        dc = d.reshape(n_d // chunk, chunk, *d.shape[1:])
        sc = side.reshape(n_d // chunk, chunk, *side.shape[1:])
        out = jax.lax.map(lambda xs: score_fn(q, qm, *xs), (dc, sc))
        return jnp.moveaxis(out, 0, 1).reshape(q.shape[0], n_d, *out.shape[3:])

    return run


def build_fns(c: Case, blocks: dict, ref_budget: int = 2**30):
    # impl="pallas": compiled on GPU, interpreted elsewhere (kernels_pallas.impl's one rule).
    kw = dict(impl="pallas", **blocks)
    m = c.modalities
    if c.train:

        def loss(fn):
            def f(q, qm, d, mod):
                s = fn(q, qm, d, mod).max(-1) / 0.02  # InfoNCE over the [B, B] matrix
                return jnp.mean(jax.nn.logsumexp(s, axis=1) - jnp.diagonal(s))

            return jax.jit(jax.grad(f, argnums=(0, 2)))

        kernel = loss(lambda q, qm, d, mod: api.maxsim_modality(q, qm, d, mod, m, **kw))
        reference = loss(lambda q, qm, d, mod: ref.maxsim_modality(q, qm, d, mod, m))
        return kernel, reference
    if c.topk:  # streaming top-k vs full reference scores + lax.top_k
        kernel = jax.jit(lambda q, qm, d, mask: api.maxsim_topk(q, qm, d, mask, c.topk, **kw)[0])
        per_doc = c.n_q * c.q_len * c.d_len
        full = chunked_reference(ref.maxsim, c.n_d, ref_budget, per_doc)
        reference = jax.jit(lambda *a: jax.lax.top_k(full(*a), c.topk)[0])
        return kernel, reference
    if m:
        kernel = jax.jit(lambda q, qm, d, mod: api.maxsim_modality(q, qm, d, mod, m, **kw))
        score = lambda q, qm, d, mod: ref.maxsim_modality(q, qm, d, mod, m)
        per_doc = c.n_q * c.q_len * c.d_len * (m + 1)
    else:
        kernel = jax.jit(per_shard(lambda q, qm, d, mask: api.maxsim(q, qm, d, mask, **kw)))
        score = ref.maxsim
        per_doc = c.n_q * c.q_len * c.d_len
    n_shard = c.n_d // c.shards
    reference = jax.jit(per_shard(chunked_reference(score, n_shard, ref_budget, per_doc)))
    return kernel, reference


def time_peers(c: Case, iters: int) -> list[str]:
    """flash-maxsim / late-interaction-kernels on the same shapes (torch + CUDA only)."""
    rows = []
    try:
        import torch
    except ImportError:
        return rows
    if not torch.cuda.is_available() or c.modalities or c.train:
        return rows
    peers = []
    try:
        from flash_maxsim import flash_maxsim

        peers.append(("flash-maxsim", lambda q, d: flash_maxsim(q, d)))
    except ImportError:
        pass
    try:
        import late_interaction_kernels as lik

        peers.append(("late-interaction-kernels", lik.maxsim))
    except ImportError:
        pass
    if not peers:  # allocate nothing beside JAX's pool when no peer is installed
        return rows
    try:
        q = torch.randn(c.n_q, c.q_len, c.dim, device="cuda", dtype=torch.bfloat16)
        d = torch.randn(c.n_d, c.d_len, c.dim, device="cuda", dtype=torch.bfloat16)
    except torch.OutOfMemoryError:
        return [f"    {c.name}: peers skipped (no room for torch copies beside JAX's memory pool)"]
    for name, fn in peers:
        try:
            fn(q, d)
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            for _ in range(iters):
                fn(q, d)
            torch.cuda.synchronize()
            rows.append(f"    peer {name}: {(time.perf_counter() - t0) / iters * 1e3:.3f} ms")
        except Exception as e:  # a peer's API drift must not kill the benchmark
            rows.append(f"    peer {name}: failed ({type(e).__name__}: {str(e)[:80]})")
    return rows


SWEEP = [
    dict(schedule="blocked", block_d=4, block_t=32),
    dict(schedule="blocked", block_d=8, block_t=16),
    dict(schedule="blocked", block_d=16, block_t=16, num_warps=8),
    dict(schedule="blocked", block_d=8, block_t=32, num_warps=8),
    # persistent: programs along the document axis (default 2 per SM) and the token tile
    dict(schedule="persistent", num_programs=132),
    dict(schedule="persistent", num_programs=528),
    dict(schedule="persistent", block_d=4, block_t=16),  # 64-row tiles
    dict(schedule="persistent", block_d=16, block_t=16, num_stages=2),  # 256-row tiles
    dict(schedule="persistent", num_warps=8),
]


def row(c: Case, label: str, k_ms: float, dtype, peaks) -> str:
    """The ms / GB/s / TFLOP/s part of a result line (GB/s: document bytes read once)."""
    _, peak_bw, peak_flops = peaks
    doc_bytes = c.n_d * c.d_len * c.dim * jnp.dtype(dtype).itemsize
    flops = 2.0 * c.n_q * c.q_len * c.n_d * c.d_len * c.dim  # forward FLOPs only
    gbs, tfs = doc_bytes / k_ms / 1e6, flops / k_ms / 1e9
    line = f"{label} {k_ms:9.3f} ms | {gbs:8.1f} GB/s  {tfs:7.2f} TFLOP/s"
    if peak_bw:
        pct_bw, pct_fl = 100 * gbs * 1e9 / peak_bw, 100 * tfs * 1e12 / peak_flops
        line += f" ({pct_bw:4.1f}% of HBM peak, {pct_fl:4.1f}% of bf16 tensor peak)"
    return line


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="tiny shapes (CPU: interpret mode)")
    p.add_argument("--sweep", action="store_true", help="also time alternative block sizes")
    p.add_argument("--iters", type=int, default=0, help="timed iterations (default 10 / 2)")
    p.add_argument("--only", default="", help="run cases whose name starts with this letter")
    p.add_argument(
        "--schedules",
        default=",".join(padding.SCHEDULES),
        help="comma-separated scan schedules to time (kernels_pallas/maxsim/padding.py)",
    )
    args = p.parse_args(argv)
    schedules = [x for x in args.schedules.split(",") if x]
    unknown = set(schedules) - set(padding.SCHEDULES)
    if unknown:
        p.error(f"unknown schedules {sorted(unknown)}; known: {padding.SCHEDULES}")
    on_gpu = jax.default_backend() == "gpu"
    if not on_gpu and not args.smoke:
        # `make bench` runs every benchmark bare: on CPU that means the smoke shapes.
        print("no GPU: running --smoke (Pallas in interpret mode; timings are not kernel speed)")
        args.smoke = True
    iters = args.iters or (10 if on_gpu else 2)
    dtype = jnp.bfloat16 if on_gpu else jnp.float32
    peaks = device_peaks()
    print(f"device: {peaks[0]}  backend: {jax.default_backend()}  dtype: {jnp.dtype(dtype).name}")
    print(f"jax {jax.__version__}  mode: {'pallas-triton' if on_gpu else 'pallas-interpret'}")
    print(f"schedules: {', '.join(schedules)} (default: {padding.DEFAULT_SCHEDULE})")
    if not on_gpu:
        print("interpret mode: the ratios below check the plumbing, not kernel speed")
    plain_ms = {}
    for c in cases(args.smoke):
        if args.only and not c.name.startswith(args.only):
            continue
        q, qm, d, mod = make_inputs(c, dtype)
        # --smoke: a tiny memory budget so the chunked (lax.map) reference path runs too.
        budget = 2**12 if args.smoke else 2**30
        doc_bytes = c.n_d * c.d_len * c.dim * jnp.dtype(dtype).itemsize
        reference = build_fns(c, {}, budget)[1]
        r_ms = timeit(reference, q, qm, d, mod, iters=iters)
        print(
            f"{c.name} n_q={c.n_q} q_len={c.q_len} n_d={c.n_d} d_len={c.d_len}"
            f"{f' M={c.modalities}' if c.modalities else ''} | reference {r_ms:9.3f} ms",
            flush=True,
        )
        for schedule in schedules:
            kernel = build_fns(c, dict(schedule=schedule), budget)[0]
            try:
                k_ms = timeit(kernel, q, qm, d, mod, iters=iters)
            except Exception as e:  # a schedule that fails to compile must not hide the other
                print(f"    {schedule:10s} failed ({type(e).__name__}: {str(e)[:200]})")
                continue
            line = row(c, f"    {schedule:10s} kernel", k_ms, dtype, peaks)
            line += f" | ratio to reference {r_ms / k_ms:6.2f}x"
            if not c.train:  # agreement on the same run (bf16 inputs, fp32 accumulation)
                err = float(jnp.max(jnp.abs(kernel(q, qm, d, mod) - reference(q, qm, d, mod))))
                line += f" | max|diff| {err:.2e}"
            print(line, flush=True)
            if c.name.startswith("c:"):
                key = (c.n_q, c.n_d, schedule)
                if not c.modalities:
                    plain_ms[key] = k_ms
                elif key in plain_ms:
                    ratio = k_ms / plain_ms[key]
                    print(f"    {schedule:10s} modality-max / plain kernel time: {ratio:.2f}x")
        for peer in time_peers(c, iters) if on_gpu else []:
            print(peer)
        if args.sweep and not c.train and not c.shards > 1:
            for blocks in SWEEP:
                kernel = build_fns(c, blocks)[0]
                try:
                    ms = timeit(kernel, q, qm, d, mod, iters=iters)
                    print(f"    sweep {blocks}: {ms:.3f} ms ({doc_bytes / ms / 1e6:.1f} GB/s)")
                except Exception as e:
                    print(f"    sweep {blocks}: failed ({type(e).__name__}: {str(e)[:100]})")
        del q, qm, d, mod


if __name__ == "__main__":
    main()
