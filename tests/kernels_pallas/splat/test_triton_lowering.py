"""The Pallas kernels lower through the Triton backend for CUDA, checked here without a GPU.

`jax.export` cross-lowers for `platforms=["cuda"]` on CPU, which runs the Pallas Triton
lowering of both kernels (every primitive needs a Triton rule). It does not compile the Triton
IR to PTX nor run it: that is left to the GPU run (benchmarks/splat.py).
"""

import functools

import jax
import jax.numpy as jnp
import pytest
from jax import export

from kernels_pallas.splat import pallas_gpu


@pytest.mark.parametrize("work_item_size", [None, 32])
def test_forward_and_backward_lower_to_triton_for_cuda(work_item_size):
    """Both schedules: one program per tile, and work items (with the pass-1 kernel)."""
    n, m = 8, 64
    k = jax.random.split(jax.random.PRNGKey(0), 3)
    args = (
        jax.random.uniform(k[0], (n, 2), maxval=32.0),
        jnp.tile(jnp.array([[0.1, 0.0, 0.1]]), (n, 1)),
        jax.random.uniform(k[1], (n, 3)),
        jnp.full((n,), 0.5),
        jax.random.uniform(k[2], (n,), minval=1.0, maxval=2.0),
    )
    gauss_ids = jnp.arange(m, dtype=jnp.int32) % (n + 1)
    tile_ranges = jnp.array([[0, 16], [16, 32], [32, 48], [48, 64]], jnp.int32)
    raster = functools.partial(
        pallas_gpu.rasterize,
        gauss_ids=gauss_ids,
        tile_ranges=tile_ranges,
        width=32,
        height=32,
        work_item_size=work_item_size,
        interpret=False,
    )

    def loss(*a):
        rgb, depth, trans = raster(*a)
        return jnp.sum(rgb) + jnp.sum(depth) + jnp.sum(trans)

    exported = export.export(
        jax.jit(jax.grad(loss, argnums=(0, 1, 2, 3, 4))),
        platforms=["cuda"],
        disabled_checks=[export.DisabledSafetyCheck.custom_call("__gpu$xla.gpu.triton")],
    )(*args)
    text = exported.mlir_module()
    assert 'name = "splat_rasterize_fwd"' in text
    assert 'name = "splat_rasterize_bwd"' in text
    if work_item_size:
        assert 'name = "splat_rasterize_item_trans"' in text
    # Pinned to Triton (kernels_pallas.triton), not jax 0.10.2's default Mosaic GPU.
    assert text.count("__gpu$xla.gpu.triton") >= 2 and "mosaic_gpu" not in text

    # The render_batch path: the same kernels vmapped over 2 views (batched grid).
    batched = jax.vmap(jax.grad(loss, argnums=(0, 1, 2, 3, 4)))
    exported = export.export(
        jax.jit(batched),
        platforms=["cuda"],
        disabled_checks=[export.DisabledSafetyCheck.custom_call("__gpu$xla.gpu.triton")],
    )(*(jnp.stack([a, a]) for a in args))
    text = exported.mlir_module()
    assert 'name = "splat_rasterize_fwd"' in text and 'name = "splat_rasterize_bwd"' in text
