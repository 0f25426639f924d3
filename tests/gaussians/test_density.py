"""Adaptive density control on a capacity buffer: counts after clone / split / prune, capacity
respected, scales shrunk on split, transparent and huge Gaussians pruned, and dead slots
invisible to the renderer."""

import jax
import jax.numpy as jnp
import numpy as np

from jaxmm import gaussians as G
from jaxmm.gaussians import density

C = 16


def _params(num_alive=8):
    rng = np.random.default_rng(0)
    log_scales = np.full((C, 3), np.log(0.01), np.float32)
    log_scales[2:4] = np.log(0.2)  # large: split
    log_scales[5] = np.log(5.0)  # huge: pruned
    opac = np.full((C,), 2.0, np.float32)
    opac[4] = -8.0  # transparent (sigmoid ≈ 3e-4): pruned
    return {
        "means": jnp.asarray(rng.normal(size=(C, 3)), jnp.float32),
        "log_scales": jnp.asarray(log_scales),
        "quats": jnp.tile(jnp.array([1.0, 0, 0, 0]), (C, 1)),
        "opacity_logits": jnp.asarray(opac),
        "sh_dc": jnp.asarray(rng.normal(size=(C, 3)), jnp.float32),
        "alive": (jnp.arange(C) < num_alive).astype(jnp.float32),
        "probe": jnp.zeros((2, C, 2)),  # no leading C axis: left alone
    }


def _run(params, grads):
    fn = jax.jit(
        lambda p, g: density.densify_and_prune(
            p,
            g,
            jax.random.key(0),
            lambda q: G.quat_to_rotmat(q["quats"]),
            grad_threshold=1e-3,
            dense_scale=0.05,
            min_opacity=0.005,
            max_scale=1.0,
        )  # fmt: skip
    )
    return fn(params, grads)


def test_clone_split_prune_counts_and_values():
    p = _params()
    grads = jnp.zeros((C,)).at[jnp.array([0, 1, 2, 3])].set(1.0)  # 0,1 small, 2,3 large
    out, changed, stats = _run(p, grads)
    assert (int(stats.cloned), int(stats.split), int(stats.pruned), int(stats.refused)) == (
        2, 2, 2, 0,
    )  # fmt: skip
    alive = np.asarray(out["alive"]) > 0.5
    assert int(stats.alive) == alive.sum() == 8 + 2 + 2 - 2
    assert not alive[4] and not alive[5]  # transparent and huge pruned
    assert alive[[0, 1, 2, 3, 6, 7]].all()  # the opaque, normal-sized ones stay
    new = np.flatnonzero(alive & (np.arange(C) >= 8))
    np.testing.assert_array_equal(new, [8, 9, 10, 11])  # free slots, in order
    # clones: exact copies; split: both halves shrunk by 1.6, moved off the parent's centre
    np.testing.assert_array_equal(out["means"][8:10], p["means"][0:2])
    np.testing.assert_array_equal(out["sh_dc"][8:10], p["sh_dc"][0:2])
    shrunk = np.log(0.2 / 1.6)
    np.testing.assert_allclose(out["log_scales"][2:4], shrunk, rtol=1e-6)
    np.testing.assert_allclose(out["log_scales"][10:12], shrunk, rtol=1e-6)
    assert np.all(np.asarray(out["means"][10:12] != p["means"][2:4]).any(-1))
    assert np.all(np.asarray(out["means"][2:4] != p["means"][2:4]).any(-1))
    np.testing.assert_array_equal(out["probe"], p["probe"])
    assert set(np.flatnonzero(changed)) == {2, 3, 4, 5, 8, 9, 10, 11}


def test_capacity_is_respected_and_refusals_counted():
    p = _params(num_alive=14)  # 2 free slots
    p["opacity_logits"] = jnp.full((C,), 2.0)
    p["log_scales"] = jnp.full((C, 3), np.log(0.01))
    grads = jnp.zeros((C,)).at[jnp.arange(6)].set(1.0)  # 6 requests
    out, _, stats = _run(p, grads)
    assert int(stats.cloned) == 2 and int(stats.refused) == 4
    assert int(stats.alive) == C and float(jnp.sum(out["alive"])) == C
    # nothing alive was overwritten: the first 14 slots are unchanged
    np.testing.assert_array_equal(out["means"][:14], p["means"][:14])


def test_below_threshold_and_dead_slots_are_untouched():
    p = _params()
    grads = jnp.full((C,), 1e-4).at[12].set(1.0)  # only a dead slot has a large gradient
    out, _, stats = _run(p, grads)
    assert int(stats.cloned) == 0 and int(stats.split) == 0
    assert int(stats.alive) == 6  # only the two prunes


def test_opacity_reset_caps_opacities():
    p = density.reset_opacity(_params(), 0.01)
    assert float(jnp.max(jax.nn.sigmoid(p["opacity_logits"]))) <= 0.01 + 1e-6
    assert float(jax.nn.sigmoid(p["opacity_logits"][4])) < 0.001  # lower ones unchanged


def test_dead_slots_are_invisible_to_the_renderer():
    """Dead slots full of big opaque Gaussians must not change the image."""
    rng = np.random.default_rng(1)
    n, dead = 40, 24
    means = rng.uniform(-0.6, 0.6, (n, 3)).astype(np.float32)
    scales = np.full((n, 3), 0.08, np.float32)
    scales[-dead:] = 0.6  # garbage in dead slots: large and opaque
    g = G.Gaussians3D(
        means=jnp.asarray(means), scales=jnp.asarray(scales),
        quats=jnp.tile(jnp.array([1.0, 0, 0, 0]), (n, 1)), opacities=jnp.full((n,), 0.9),
        sh_dc=jnp.asarray(rng.normal(size=(n, 3)), jnp.float32),
    )  # fmt: skip
    alive = (jnp.arange(n) < n - dead).astype(jnp.float32)
    cam = G.Camera.look_at(eye=(0, -3, 1), target=(0, 0, 0), up=(0, 0, 1), fov_x_deg=50,
                           width=32, height=32)  # fmt: skip
    kw = dict(impl="dense", tile_size=8, max_per_tile=None)
    masked = G.render(g.replace(opacities=density.apply_alive(g.opacities, alive)), cam, **kw)
    only_alive = G.render(jax.tree.map(lambda x: x[: n - dead], g), cam, **kw)
    np.testing.assert_allclose(masked.rgb, only_alive.rgb, atol=1e-6)
    assert int(masked.stats.visible) == int(only_alive.stats.visible)
    with_dead = G.render(g, cam, **kw)
    assert float(jnp.max(jnp.abs(with_dead.rgb - only_alive.rgb))) > 0.05  # the test can fail


def test_screen_probe_moves_the_projected_mean_by_pixels():
    cam = G.Camera.look_at(eye=(0, -3, 0.5), target=(0, 0, 0), up=(0, 0, 1), fov_x_deg=50,
                           width=64, height=48)  # fmt: skip
    means = jnp.array([[0.1, 0.2, 0.3], [-0.3, 0.0, 0.1]])
    probe = jnp.array([[1.5, -2.0], [0.0, 3.0]])
    g = lambda m: G.Gaussians3D(
        means=m,
        scales=jnp.full((2, 3), 0.05),  # noqa: E731
        quats=jnp.tile(jnp.array([1.0, 0, 0, 0]), (2, 1)),
        opacities=jnp.full((2,), 0.9),
        sh_dc=jnp.zeros((2, 3)),
    )
    before = G.project(G.covariances_3d(g(means)), cam).means2d
    moved = density.with_screen_probe(means, probe, cam.c2w, cam.fx, cam.fy)
    after = G.project(G.covariances_3d(g(moved)), cam).means2d
    np.testing.assert_allclose(after - before, probe, atol=1e-4)
