"""impl="auto" off GPU picks the dense compositor where it applies, and on_overflow="error"
turns dropped per-tile entries into a TileOverflowError naming tile, count and cap."""

import jax
import jax.numpy as jnp
import pytest

from jaxmm import gaussians as G


def _cam(size):
    return G.Camera.look_at(eye=(0, -3, 0), target=(0, 0, 0), up=(0, 0, 1), fov_x_deg=50,
                            width=size, height=size)  # fmt: skip


def test_auto_is_dense_on_cpu_where_it_fits():
    assert jax.default_backend() == "cpu"
    small = G.auto_impl("auto", _cam(128), 20000, max_per_tile=512, tile_size=8)
    assert small.impl == "dense"
    big = G.auto_impl("auto", _cam(512), 20000, max_per_tile=4096, tile_size=16)
    assert big.impl == "reference"  # 512²·4096 pairs: over DENSE_AUTO_MAX_PAIRS
    uneven = G.auto_impl("auto", _cam(100), 100, max_per_tile=64, tile_size=16)
    assert uneven.impl == "reference"
    assert G.auto_impl("reference", _cam(128), 10, max_per_tile=8, tile_size=8).impl == "reference"


def _stack(n=12):
    """n Gaussians on top of each other at the image centre: one tile lists all of them."""
    return G.Gaussians3D(
        means=jnp.zeros((n, 3)).at[:, 1].set(jnp.linspace(-0.5, 0.5, n)),
        scales=jnp.full((n, 3), 0.02),
        quats=jnp.tile(jnp.array([1.0, 0, 0, 0]), (n, 1)),
        opacities=jnp.full((n,), 0.5),
        sh_dc=jnp.zeros((n, 3)),
    )


def test_overflow_error_names_tile_count_and_cap():
    g, cam = _stack(), _cam(32)
    ok = G.render(g, cam, impl="dense", tile_size=8, max_per_tile=12, on_overflow="error")
    assert int(ok.stats.tile_overflow) == 0 and int(ok.stats.busiest_count) == 12
    counted = G.render(g, cam, impl="dense", tile_size=8, max_per_tile=5)
    assert int(counted.stats.tile_overflow) > 0  # "count": no error, the drop is reported
    kw = dict(impl="dense", tile_size=8, max_per_tile=5, on_overflow="error")
    with pytest.raises(
        G.TileOverflowError, match=r"tile 5 .*lists 12 Gaussians but max_per_tile=5"
    ):
        G.render(g, cam, **kw)  # eager: raised at once
    # Inside jit the check runs on the host when the step finishes (wrapped by the runtime).
    jitted = jax.jit(lambda g: G.render(g, cam, **kw).rgb)
    with pytest.raises(Exception, match=r"TileOverflowError.*lists 12 Gaussians"):
        jax.block_until_ready(jitted(g))
    with pytest.raises(ValueError, match="on_overflow"):
        G.render(g, cam, on_overflow="ignore")


def test_render_batch_overflow_error_names_the_busiest_views_tile():
    """render_batch(on_overflow="error") checks all views together (the tiled path renders a
    group in one call): totals over views, and the busiest tile of the busiest view, here the
    second view (the first looks away from the stack and lists nothing)."""
    g = _stack()
    away = G.Camera.look_at(eye=(0, -3, 0), target=(0, -6, 0), up=(0, 0, 1), fov_x_deg=50,
                            width=32, height=32)  # fmt: skip
    cams = G.stack_cameras([away, _cam(32)])
    kw = dict(impl="reference", tile_size=8, max_per_tile=5, views_per_step=2)
    counted = G.render_batch(g, cams, **kw)
    assert counted.stats.tile_overflow.tolist()[0] == 0 and counted.stats.tile_overflow[1] > 0
    with pytest.raises(
        G.TileOverflowError, match=r"tile 5 .*lists 12 Gaussians but max_per_tile=5"
    ):
        G.render_batch(g, cams, on_overflow="error", **kw)
    jitted = jax.jit(lambda g: G.render_batch(g, cams, on_overflow="error", **kw).rgb)
    with pytest.raises(Exception, match=r"TileOverflowError.*lists 12 Gaussians"):
        jax.block_until_ready(jitted(g))
    ok = G.render_batch(g, cams, on_overflow="error", **dict(kw, max_per_tile=12))
    assert ok.stats.busiest_count.tolist() == [0, 12]
