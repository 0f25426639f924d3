"""The 4D-LRM renderer runs one batch shard per device under a mesh (8 fake CPU devices).

`pallas_call` has no GSPMD partitioning rule, so inside a sharded jit XLA would replicate the
rasteriser and every device would render the whole global batch. `render_scenes` wraps it in
`jax.shard_map` over the batch mesh axes (`sharding.shard_map_batch`). Checked here on the
compiled per-device program with `impl="pallas"` (interpreted on CPU, so the kernel is really
in the HLO), with inputs batch-sharded as the trainer passes them: before, the rasteriser's
feature table f32[b, 10, M] had the global batch on every device; now it has global / 8, and
the result is bitwise the unsharded one. The dense / reference paths (which GSPMD already
split) give bitwise what they gave before, and a mesh without batch shards is a no-op.
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from jaxmm import sharding
from jaxmm.gaussians import camera as cam_lib
from jaxmm.models import lrm4d as lrm4d_model
from tests.gaussians.scenes import random_scene_4d

B, V, N, SIZE = 16, 1, 24, 16
MESH_8 = dict(data=4, fsdp=2, tensor=1)  # batch -> ("data", "fsdp"): 8 shards


def _stack(trees):
    return jax.tree.map(lambda *x: jnp.stack(x), *trees)


@pytest.fixture(scope="module")
def scenes():
    g = _stack([random_scene_4d(i, N, extent=0.8) for i in range(B)])
    cams = _stack([
        cam_lib.stack_cameras(cam_lib.orbit_cameras(V, 3.0, width=SIZE, height=SIZE,
                                                    phase_deg=10.0 * b))
        for b in range(B)
    ])  # fmt: skip
    times = jnp.tile(jnp.linspace(-0.5, 0.5, V), (B, 1))
    return g, cams, times


def _render(**kw):
    return jax.jit(lambda g, c, t: lrm4d_model.render_scenes(g, c, t, **kw))


def _render_before(**kw):
    """The task's code before shard_map: a plain vmap, left to GSPMD."""
    return jax.jit(jax.vmap(lambda g, c, t: lrm4d_model.render_views(g, c, t, **kw)))


def _batch_sharded(mesh, tree):
    """Inputs as the trainer passes them: the batch split over ("data", "fsdp")."""
    return jax.device_put(tree, NamedSharding(mesh, P(("data", "fsdp"))))


def _raster_batch(hlo: str, kernel: str = "splat_rasterize_fwd") -> int:
    """The batch of the rasteriser's feature table f32[b, 10, M] in a compiled program (the
    largest b: the interpreted grid loop also slices [1, 10, M] blocks out of it)."""
    lines = [line for line in hlo.splitlines() if kernel in line]
    return max(int(b) for line in lines for b in re.findall(r"f32\[(\d+),10,\d+\]", line))


def test_pallas_renderer_renders_one_shard_per_device(scenes):
    assert jax.device_count() == 8
    render, before = _render(impl="pallas"), _render_before(impl="pallas")
    unsharded = render(*scenes)  # no mesh: the plain vmap
    np.testing.assert_array_equal(unsharded, before(*scenes))
    mesh = sharding.make_mesh(MESH_8)
    args = _batch_sharded(mesh, scenes)
    with jax.set_mesh(mesh):
        compiled, compiled_before = render.lower(*args).compile(), before.lower(*args).compile()
        out = render(*args)
    # Before, GSPMD replicated the kernel: every device rasterised all B scenes.
    assert _raster_batch(compiled_before.as_text()) == B
    # Now each device's program rasterises its B / 8 scenes.
    assert _raster_batch(compiled.as_text()) == B // 8
    assert out.sharding.spec == P(("data", "fsdp"))
    np.testing.assert_array_equal(out, unsharded)  # bitwise on CPU


def test_gradient_backward_kernel_is_sharded_too(scenes):
    g, cams, times = scenes

    def loss(g, cams, times):
        return jnp.sum(lrm4d_model.render_scenes(g, cams, times, impl="pallas") ** 2)

    grad = jax.jit(jax.grad(loss))
    want = grad(*scenes)
    mesh = sharding.make_mesh(MESH_8)
    args = _batch_sharded(mesh, scenes)
    with jax.set_mesh(mesh):
        hlo = grad.lower(*args).compile().as_text()
        got = grad(*args)
    assert _raster_batch(hlo, "splat_rasterize_bwd") == B // 8
    # Not bitwise: XLA CPU's gradient numerics depend on the batch size itself (the unsharded
    # gradient of 2 scenes differs from the same 2 rows of the 16-scene one by ~1 ulp too).
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-4), got, want)


@pytest.mark.parametrize("kw", [dict(impl="reference"), dict(impl="dense", tile_size=8)])
def test_other_impls_under_the_mesh_are_unchanged(scenes, kw):
    """GSPMD already split these by batch: shard_map gives bitwise what they gave before."""
    mesh = sharding.make_mesh(MESH_8)
    args = _batch_sharded(mesh, scenes)
    with jax.set_mesh(mesh):
        got, want = _render(**kw)(*args), _render_before(**kw)(*args)
    assert got.sharding.spec == P(("data", "fsdp"))
    np.testing.assert_array_equal(got, want)
    np.testing.assert_allclose(got, _render(**kw)(*scenes), atol=1e-6)  # vs no mesh


def test_shard_map_batch_is_a_noop_without_batch_shards():
    calls = []

    def fn(x):
        calls.append(x.shape)
        return x * 2

    x = jnp.arange(8.0 * 3).reshape(8, 3)
    wrapped = sharding.shard_map_batch(fn)
    np.testing.assert_array_equal(wrapped(x), 2 * x)  # no mesh
    tensor_only = sharding.make_mesh(dict(data=1, fsdp=1, tensor=8))
    with jax.set_mesh(tensor_only):  # batch axes have 1 device: fn itself
        wrapped(x)
    with jax.set_mesh(sharding.make_mesh(MESH_8)):
        wrapped(x[:6])  # 6 does not divide over 8 shards: fn itself, replicated
        wrapped(x)  # sharded: fn sees its 1-row slice
        with pytest.raises(ValueError, match="leading"):
            sharding.shard_map_batch(lambda a, b: a)(x, x[:4])
    assert calls == [(8, 3), (8, 3), (6, 3), (1, 3)]
    assert sharding.batch_mesh_axes() == ("data", "fsdp")
    assert sharding.batch_mesh_axes((("batch", "data"),)) == ("data",)
