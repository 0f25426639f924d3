"""4D-LRM benchmark: one-pass reconstruction throughput and training-step time.

    python benchmarks/lrm4d.py            # GPU: base + large, 24 views at 256², bf16
    python benchmarks/lrm4d.py --smoke    # CPU: tiny shapes, checks the script runs

Reports (1) the forward pass reconstructing a 24-frame clip from 24 input views at 256²
(paper: < 1.5 s on one A100 for large): ms, Gaussians/s, transformer TFLOP/s and MFU, and the
ratio of the default attention (cuDNN flash on GPU) to XLA attention measured in the same run;
(2) the training step (fwd + bwd) at 128² with 12 input and 24 supervision views, rendering
with the tiled `jaxmm.gaussians` renderer (per-view checkpointed).
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxmm.gaussians.camera import Camera, look_at_c2w, rays
from jaxmm.models import lrm4d
from jaxmm.nn.transformer import encoder_flops
from jaxmm.perf import peak_bf16_flops


def timeit(fn, *args, iters: int) -> float:
    jax.block_until_ready(fn(*args))  # compile + warm-up
    t0 = time.perf_counter()
    for _ in range(iters):
        out = fn(*args)
    jax.block_until_ready(out)
    return (time.perf_counter() - t0) / iters


def inputs(views: int, size: int, batch: int = 1):
    az = np.linspace(0, 2 * np.pi, views, endpoint=False)
    c2w = np.stack(
        [look_at_c2w((2.5 * np.cos(a), 2.5 * np.sin(a), 0.5), (0, 0, 0), (0, 0, 1)) for a in az]
    )
    f = 0.5 * size / np.tan(np.radians(25))
    o, d = rays(Camera.create(c2w, f, f, size / 2, size / 2, width=size, height=size))
    rng = np.random.default_rng(0)
    images = rng.uniform(size=(batch, views, size, size, 3)).astype(np.float32)
    times = np.tile(np.linspace(-1, 1, views, dtype=np.float32), (batch, 1))
    return images, times, np.broadcast_to(o, images.shape), np.broadcast_to(d, images.shape), c2w


def make_model(size_name: str, dtype, **kw) -> lrm4d.LRM4D:
    """A size preset with optional width / num_layers / num_heads overrides (smoke runs)."""
    s = lrm4d.SIZES[size_name]
    shape = {k: kw.pop(k, getattr(s, k)) for k in ("width", "num_layers", "num_heads")}
    return lrm4d.LRM4D(patch_size=s.patch_size, dtype=dtype, **shape, **kw)


def bench_forward(
    size_name: str, views: int, size: int, dtype, iters: int, impl: str = "auto", **overrides
) -> dict:
    s = lrm4d.SIZES[size_name]
    model = make_model(size_name, dtype, attention_impl=impl, **overrides)
    images, times, o, d, _ = inputs(views, size)
    params = jax.jit(model.init)(jax.random.key(0), images, times, o, d)
    fwd = jax.jit(lambda p, *a: model.apply(p, *a)[0].opacities)
    sec = timeit(fwd, params, images, times, o, d, iters=iters)
    tokens = views * (size // s.patch_size) ** 2
    flops = encoder_flops(1, tokens, model.width, model.num_layers)
    n_gauss = views * size * size
    return {
        "ms": sec * 1e3,
        "gaussians_per_s": n_gauss / sec,
        "tokens": tokens,
        "transformer_tflops": flops / sec / 1e12,
        "gaussians": n_gauss,
    }


class _Cfg(dict):
    __getattr__ = dict.__getitem__


def bench_train_step(
    size_name: str,
    views_in: int,
    views_sup: int,
    size: int,
    dtype,
    iters: int,
    renderer: str,
    **overrides,
) -> dict:
    model = make_model(size_name, dtype, remat=True, **overrides)
    images, times, o, d, c2w = inputs(views_in, size)
    f = 0.5 * size / np.tan(np.radians(25))
    intr = np.tile(np.array([f, f, size / 2, size / 2], np.float32), (1, views_in, 1))
    cams = Camera.from_intrinsics(c2w[None].astype(np.float32), intr, width=size, height=size)
    sup_idx = np.arange(views_sup) % views_in
    sup_cams = jax.tree.map(lambda x: x[0, sup_idx], cams)
    target = images[:, sup_idx]
    params = jax.jit(model.init)(jax.random.key(0), images, times, o, d)

    def loss(p):
        g = lrm4d.reconstruct(model, p["params"], images, times, cams).take(0)
        pred = lrm4d.render_views(
            g,
            sup_cams,
            times[0, sup_idx],
            **lrm4d.render_options(_Cfg(renderer=renderer, render_capacity=512)),
        )
        return jnp.mean((pred - target[0]) ** 2)

    step = jax.jit(jax.value_and_grad(loss))
    sec = timeit(step, params, iters=iters)
    return {"ms": sec * 1e3}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="tiny shapes on CPU")
    ap.add_argument("--iters", type=int, default=5)
    args = ap.parse_args()
    print(f"jax {jax.__version__} on {jax.devices()[0].device_kind}")
    if jax.default_backend() != "gpu" and not args.smoke:
        # `make bench` runs every benchmark bare: on CPU that means the smoke shapes.
        print("no GPU: running --smoke (tiny shapes; the paper-size figures need a GPU)")
        args.smoke = True
    if args.smoke:
        small = dict(width=64, num_layers=2, num_heads=2)
        base = bench_forward("tiny", 2, 32, jnp.float32, 1, **small)
        xla = bench_forward("tiny", 2, 32, jnp.float32, 1, impl="xla", **small)
        print(
            f"[smoke] forward 2x32²: {base['ms']:.1f} ms ({base['gaussians_per_s']:.3g} "
            f"Gaussians/s), default/XLA attention time ratio {base['ms'] / xla['ms']:.2f}"
        )
        step = bench_train_step("tiny", 2, 2, 32, jnp.float32, 1, "dense", **small)
        print(f"[smoke] train step 2 in / 2 sup at 32²: {step['ms']:.1f} ms")
        return
    peak = peak_bf16_flops()
    for size_name in ("base", "large"):
        r = bench_forward(size_name, 24, 256, jnp.bfloat16, args.iters)
        x = bench_forward(size_name, 24, 256, jnp.bfloat16, args.iters, impl="xla")
        mfu = f"{100 * r['transformer_tflops'] * 1e12 / peak:.1f}%" if peak else "n/a"
        print(
            f"{size_name:5s} reconstruct 24 views @256² ({r['tokens']} tokens, "
            f"{r['gaussians'] / 1e6:.2f}M Gaussians): {r['ms']:.1f} ms, "
            f"{r['gaussians_per_s'] / 1e6:.1f}M Gaussians/s, transformer "
            f"{r['transformer_tflops']:.1f} TFLOP/s (MFU {mfu}); XLA attention "
            f"{x['ms']:.1f} ms -> speed-up {x['ms'] / r['ms']:.2f}x"
        )
        t = bench_train_step(size_name, 12, 24, 128, jnp.bfloat16, args.iters, "splat")
        print(f"{size_name:5s} train step 12 in / 24 sup @128²: {t['ms']:.1f} ms")


if __name__ == "__main__":
    main()
