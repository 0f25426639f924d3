"""Gaussian splatting renderer benchmark: Pallas rasteriser vs the pure-jnp reference.

    python benchmarks/splat.py            # GPU: 200K / 800K Gaussians at 128² and 256², and
                                          # a batch of 24 views of 786K at 256² (fwd+bwd)
    python benchmarks/splat.py --smoke    # CPU: tiny shapes, Pallas in interpret mode

    python benchmarks/splat.py --schedule-only   # GPU: only the Pallas schedule A/B below

Each case times the whole differentiable render (projection, binning, rasteriser) forward
(`fwd`) and forward + backward w.r.t. every Gaussian parameter (`fwd+bwd`), for every
schedule of the Pallas rasteriser and the reference in the same run (`variants`: one
`pallas_call` per view; with several views, one grid over every (view, tile); the same with
tiles split into work items of `--work-item-sizes` entries, whose count against the tile
count is printed), and prints the ratio reference / each, images/s and an
*effective* memory bandwidth: the bytes the renderer must move at least once (Gaussian
parameters in, the sorted intersection table written and read back, the image out; ×2 for
the backward, which reads them again and writes gradients) divided by the time. It is a
floor on real traffic, so it is comparable between implementations, not a roofline.
The reference is given the exact largest tile list (no truncation) so both compute the same
image. Then binning's sort alone, the packed 64-bit key against the multi-operand sort it
replaced (same intersections, same order checked), with the scene's tile load (entries per
16×16 tile: max / mean / p99). Last, the `impl="dense"` compositor's written backward against
its autodiff twin at the tiny 4D-LRM's training shape (32 views x 16 tiles of 8x8 px x 256
Gaussians per tile; the CPU demo's hot loop). Goals on one H100: Pallas fwd+bwd ≥ 10× the
reference at 800K, 256²; 24 views of 786K at 256² fwd+bwd < 100 ms.
"""

from __future__ import annotations

import argparse
import functools
import math
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxmm import gaussians as G
from jaxmm.gaussians import binning
from kernels_pallas.splat import dense

PARAM_BYTES = 4 * (3 + 3 + 4 + 1 + 3)
FEAT_BYTES = 4 * 10


def random_scene(n: int, seed: int = 0) -> G.Gaussians3D:
    """n Gaussians in a unit ball, sized so a typical one covers a few pixels at 256²."""
    k = jax.random.split(jax.random.PRNGKey(seed), 5)
    r = jax.random.uniform(k[0], (n, 1)) ** (1 / 3)
    d = jax.random.normal(k[1], (n, 3))
    means = r * d / jnp.linalg.norm(d, axis=-1, keepdims=True)
    scale = 0.6 / math.sqrt(n) ** (2 / 3) * 4.0
    return G.Gaussians3D(
        means=means,
        scales=scale * jax.random.uniform(k[2], (n, 3), minval=0.3, maxval=1.5),
        quats=jax.random.normal(k[3], (n, 4)),
        opacities=jax.random.uniform(k[4], (n,), minval=0.05, maxval=0.9),
        sh_dc=jax.random.normal(k[0], (n, 3)),
    )


def timeit(fn, *args, reps: int) -> float:
    jax.block_until_ready(fn(*args))  # compile + warm up
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def sizing(g, cams, size):
    """Capacity (exact + 10%), largest tile list and intersections per view, measured once."""

    @functools.partial(jax.jit, static_argnums=1)
    def count(cam, capacity):
        proj = G.project(G.covariances_3d(g), cam)
        b = G.bin_gaussians(
            proj.means2d,
            proj.radii,
            proj.depths,
            proj.valid,
            width=size,
            height=size,
            capacity=capacity,
        )
        return b.num_intersections, b.max_per_tile, b.overflow

    capacity = 16 * g.num
    while True:
        stats = [
            count(jax.tree.map(lambda x, v=v: x[v], cams), capacity)
            for v in range(cams.c2w.shape[0])
        ]
        if all(int(s[2]) == 0 for s in stats):
            break
        capacity *= 2
    total = max(int(s[0]) for s in stats)
    worst = max(int(s[1]) for s in stats)
    return int(total * 1.1) + 1024, worst, total


def tile_loads(g, cams, size, capacity):
    """[V, T] entries per 16×16 tile of each view."""

    @jax.jit
    def load(cam):
        proj = G.project(G.covariances_3d(g), cam)
        b = G.bin_gaussians(
            proj.means2d, proj.radii, proj.depths, proj.valid,
            width=size, height=size, capacity=capacity,
        )  # fmt: skip
        return b.tile_ranges[:, 1] - b.tile_ranges[:, 0]

    views = cams.c2w.shape[0]
    return np.stack(
        [np.asarray(load(jax.tree.map(lambda x, v=v: x[v], cams))) for v in range(views)]
    )


def variants(views: int, item_sizes, reference: bool):
    """(label, render_batch kwargs) of every schedule timed: the per-view Pallas calls (one
    `pallas_call` per view), one grid over all views' (view, tile) when views > 1, the same with
    work items of each size in `item_sizes`, and the reference."""
    out = [("pallas", dict(impl="pallas"))]
    grid = dict(impl="pallas", views_per_step=views)
    if views > 1:
        out.append(("pallas 1-grid", grid))
    for size in item_sizes:
        out.append((f"pallas items{size}", dict(grid, work_item_size=size)))
    if reference:
        out.append(("reference", dict(impl="reference")))
    return out


def bench_case(n: int, size: int, views: int, reps: int, chunk: int, cases, smoke: bool):
    """Times each (label, kwargs) of `cases` (see `variants`) on the same scene and cameras."""
    g = random_scene(n)
    cams = G.stack_cameras(G.orbit_cameras(views, 3.2, fov_x_deg=50.0, width=size, height=size))
    capacity, worst, total = sizing(g, cams, size)
    weights = jax.random.normal(jax.random.PRNGKey(1), (views, size, size, 3))
    results = {}
    for label, case in cases:
        kw = dict(case, capacity=capacity, max_per_tile=worst, chunk=chunk)
        fwd = jax.jit(lambda g, kw=kw: G.render_batch(g, cams, checkpoint=False, **kw).rgb)
        loss = lambda g, kw=kw: jnp.sum(G.render_batch(g, cams, **kw).rgb * weights)
        bwd = jax.jit(jax.grad(loss))
        row = {}
        for mode, fn in (("fwd", fwd), ("fwd+bwd", bwd)):
            try:
                row[mode] = timeit(fn, g, reps=reps)
            except Exception as e:  # e.g. the reference running out of GPU memory at 800K
                row[mode] = float("nan")
                print(f"  {label} {mode}: failed: {type(e).__name__}: {str(e)[:120]}")
        results[label] = row
    bytes_fwd = views * (n * PARAM_BYTES + 2 * total * FEAT_BYTES + size * size * 4 * 6)
    print(f"N={n:>7} {size}² views={views} intersections/view={total} max/tile={worst}")
    loads = tile_loads(g, cams, size, capacity)
    for label, case in cases:
        item = case.get("work_item_size")
        if item:
            count = int(np.maximum(1, -(-loads // item)).sum())
            print(
                f"  {label}: {count} work items for {loads.size} tiles "
                f"({count / loads.size:.2f} per tile; busiest tile {loads.max()} entries)"
            )
    for mode in ("fwd", "fwd+bwd"):
        nbytes = bytes_fwd * (1 if mode == "fwd" else 3)
        for label, _ in cases:
            t = results[label][mode]
            ratio = ""
            if "reference" in results and label != "reference":
                ratio = f"  reference/this = {results['reference'][mode] / t:.2f}x"
            print(
                f"  {mode:8s} {label:18s} {t * 1e3:9.2f} ms {views / t:8.1f} img/s "
                f"{nbytes / t / 1e9:7.1f} GB/s{ratio}"
            )
    return results


def bench_sort(n: int, size: int, reps: int) -> None:
    """Binning's sort alone, packed u64 key (`_sort_packed`, what `bin_gaussians` runs) vs the
    multi-operand (tile, depth) sort it replaced (`_sort_reference`), on the same intersection
    buffer of one view; checks both give the same order. Also the scene's tile load."""
    g = random_scene(n)
    cam = G.orbit_cameras(1, 3.2, fov_x_deg=50.0, width=size, height=size)[0]
    cams = G.stack_cameras([cam])
    capacity, _, total = sizing(g, cams, size)
    proj = G.project(G.covariances_3d(g), cam)
    keys = jax.jit(
        lambda *a: binning.intersections(*a, width=size, height=size, capacity=capacity)
    )(proj.means2d, proj.radii, proj.depths, proj.valid)[:3]
    packed_fn, reference_fn = jax.jit(binning._sort_packed), jax.jit(binning._sort_reference)
    same = all(
        bool(jnp.array_equal(a, b))
        for a, b in zip(packed_fn(*keys), reference_fn(*keys), strict=True)
    )
    packed = timeit(packed_fn, *keys, reps=reps)
    reference = timeit(reference_fn, *keys, reps=reps)
    b = G.bin_gaussians(
        proj.means2d, proj.radii, proj.depths, proj.valid,
        width=size, height=size, capacity=capacity,
    )  # fmt: skip
    load = np.asarray(b.tile_ranges[:, 1] - b.tile_ranges[:, 0])
    busy = load[load > 0]
    print(
        f"sort N={n} {size}² slots={capacity} intersections={total}: packed u64 key "
        f"{packed * 1e3:.2f} ms, (tile, depth) multi-operand {reference * 1e3:.2f} ms, "
        f"ratio {reference / packed:.2f}x, same order: {same}"
    )
    print(
        f"  tile load ({load.size} tiles, {busy.size} non-empty): max {load.max()} "
        f"mean {load.mean():.1f} (non-empty {busy.mean():.1f}) p99 {np.percentile(load, 99):.0f} "
        f"p50 {np.percentile(load, 50):.0f}"
    )


def bench_dense_backward(views: int, tiles: int, per_tile: int, reps: int) -> None:
    """fwd+bwd of the dense compositor: written VJP vs autodiff of the same forward."""
    k = jax.random.split(jax.random.PRNGKey(0), 6)
    lead = (views, tiles)
    px = jnp.arange(8, dtype=jnp.float32) + 0.5
    px_u = jnp.broadcast_to(jnp.tile(px, 8), (*lead, 64))
    px_v = jnp.broadcast_to(jnp.repeat(px, 8), (*lead, 64))
    inv_var = jax.random.uniform(k[0], (*lead, per_tile, 2), minval=0.05, maxval=0.5)
    args = (
        jax.random.uniform(k[1], (*lead, per_tile, 2), minval=-2.0, maxval=10.0),
        jnp.stack([inv_var[..., 0], jnp.zeros(inv_var.shape[:-1]), inv_var[..., 1]], -1),
        jax.random.uniform(k[2], (*lead, per_tile, 3)),
        jax.random.uniform(k[3], (*lead, per_tile), maxval=0.5),
        jnp.sort(jax.random.uniform(k[4], (*lead, per_tile)), axis=-1),
    )
    ok = jnp.ones((*lead, per_tile), bool)

    def grad_of(fn):
        def loss(*a):
            rgb, trans, depth = fn(px_u, px_v, *a, ok)
            return jnp.sum(rgb**2) + jnp.sum(trans) + jnp.sum(depth)

        return jax.jit(jax.grad(loss, argnums=tuple(range(5))))

    written = timeit(grad_of(dense._composite), *args, reps=reps)
    autodiff = timeit(grad_of(dense._composite_autodiff), *args, reps=reps)
    print(
        f"dense compositor fwd+bwd {views}x{tiles} tiles x {per_tile}: written VJP "
        f"{written * 1e3:.1f} ms, autodiff {autodiff * 1e3:.1f} ms, ratio {autodiff / written:.2f}x"
    )


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--smoke", action="store_true", help="tiny CPU run (Pallas interpret mode)")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--chunk", type=int, default=32)
    p.add_argument("--no-reference", action="store_true", help="time only the Pallas kernel")
    p.add_argument(
        "--reference-max",
        type=int,
        default=200_000,
        help="time the reference only up to this many Gaussians (at 800K its fixed-capacity "
        "tile buffers took ~100 GiB and minutes of compile on an H200)",
    )
    p.add_argument(
        "--work-item-sizes",
        default="1024,4096",
        help="comma-separated work_item_size values to time beside the per-tile schedule "
        "(multiples of --chunk; '' for none); --smoke uses 32",
    )
    p.add_argument(
        "--schedule-only",
        action="store_true",
        help="only the rasteriser schedule A/B (per-view calls, one grid, work items) at the "
        "most skewed shapes, without the reference: 800K at 128², 200K x 4 views at 256², "
        "24 views of 786K at 256²",
    )
    args = p.parse_args()
    on_gpu = jax.default_backend() == "gpu"
    use_reference = not args.no_reference
    sizes = [int(x) for x in args.work_item_sizes.split(",") if x.strip()]
    print(f"jax {jax.__version__} backend={jax.default_backend()} devices={jax.devices()[:1]}")
    if not on_gpu and not args.smoke:
        # `make bench` runs every benchmark bare: on CPU that means the smoke shapes.
        print("no GPU: running --smoke (Pallas in interpret mode; timings are not kernel speed)")
        args.smoke = True
    if args.smoke:
        if on_gpu:
            print("--smoke on GPU: compiled Pallas")
        bench_case(300, 32, 1, 1, 16, variants(1, [32], use_reference), smoke=True)
        bench_case(300, 32, 2, 1, 16, variants(2, [32], use_reference), smoke=True)
        bench_sort(300, 32, reps=5)
        bench_sort(20_000, 256, reps=5)
        bench_dense_backward(4, 16, 64, reps=1)
        return

    def cases_for(n: int, views: int, reference: bool = use_reference):
        if reference and n > args.reference_max:
            print(f"N={n}: reference skipped (> --reference-max={args.reference_max})")
            reference = False
        return variants(views, sizes, reference)

    if args.schedule_only:
        bench_case(800_000, 128, 1, args.reps, args.chunk, cases_for(800_000, 1, False), False)
        bench_case(200_000, 256, 4, args.reps, args.chunk, cases_for(200_000, 4, False), False)
        bench_case(786_432, 256, 24, args.reps, args.chunk, cases_for(786_432, 24, False), False)
        return
    for n in (200_000, 800_000):
        for size in (128, 256):
            bench_case(n, size, 1, args.reps, args.chunk, cases_for(n, 1), smoke=False)
    bench_case(786_432, 256, 24, args.reps, args.chunk, cases_for(786_432, 24), smoke=False)
    for n in (200_000, 800_000):
        bench_sort(n, 256, args.reps)
    bench_dense_backward(32, 16, 256, args.reps)


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
