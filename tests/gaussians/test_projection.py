"""EWA projection vs numerical Jacobians, culling, opacity-aware extents; binning vs brute force."""

import jax.numpy as jnp
import numpy as np

from jaxmm import gaussians as G
from tests.gaussians.scenes import random_scene

CAM = G.Camera.look_at((0.4, -3.0, 0.7), fov_x_deg=50.0, width=48, height=40)


def _pinhole(p_world, cam):
    w2c = np.asarray(cam.w2c, np.float64)
    p = p_world @ w2c[:3, :3].T + w2c[:3, 3]
    return np.stack(
        [
            float(cam.fx) * p[..., 0] / p[..., 2] + float(cam.cx),
            float(cam.fy) * p[..., 1] / p[..., 2] + float(cam.cy),
        ],
        -1,
    )


def test_projection_matches_numerical_ewa():
    g = random_scene(0, 16, opacity=(0.5, 0.9), scale=(0.02, 0.1))
    g = g.replace(means=g.means * 0.5)  # well inside the guard band
    s = G.covariances_3d(g)
    proj = G.project(s, CAM)
    assert bool(jnp.all(proj.valid))
    means = np.asarray(g.means, np.float64)
    np.testing.assert_allclose(proj.means2d, _pinhole(means, CAM), rtol=1e-5, atol=1e-4)
    eps = 1e-4
    for i in range(16):
        jac = np.stack(
            [
                (_pinhole(means[i] + eps * e, CAM) - _pinhole(means[i] - eps * e, CAM)) / (2 * eps)
                for e in np.eye(3)
            ],
            -1,
        )  # [2, 3]
        cov2d = jac @ np.asarray(s.covs[i], np.float64) @ jac.T + 0.3 * np.eye(2)
        a, b, c = np.asarray(proj.conics[i], np.float64)
        # fp32 projection vs float64 central differences: ~1e-4 relative.
        np.testing.assert_allclose(np.linalg.inv([[a, b], [b, c]]), cov2d, rtol=2e-3, atol=1e-3)
        # Opacity-aware extent: o·exp(-k²/2) = 1/255 with k capped at 3, times the largest
        # std-dev, with the 3DGS floor mid² - det >= 0.1 (a slightly conservative bound).
        k = min(3.0, np.sqrt(2 * np.log(255 * float(g.opacities[i]))))
        mid, det = 0.5 * np.trace(cov2d), np.linalg.det(cov2d)
        lam_floor = mid + np.sqrt(max(mid * mid - det, 0.1))
        assert lam_floor >= np.linalg.eigvalsh(cov2d).max() - 1e-9
        np.testing.assert_allclose(float(proj.radii[i]), k * np.sqrt(lam_floor), rtol=2e-3)


def test_culling_near_transparent_and_offscreen():
    g = random_scene(1, 4, opacity=(0.5, 0.6))
    means = g.means.at[0].set(jnp.array([0.4, -3.5, 0.7]))  # behind the camera
    means = means.at[1].set(jnp.array([40.0, 0.0, 0.7]))  # far off screen
    opac = g.opacities.at[2].set(0.5 / 255)  # below 1/255
    proj = G.project(G.covariances_3d(g.replace(means=means, opacities=opac)), CAM)
    np.testing.assert_array_equal(np.asarray(proj.valid), [False, False, False, True])
    assert float(jnp.abs(proj.radii[:3]).max()) == 0.0


def test_binning_matches_brute_force_enumeration():
    g = random_scene(2, 40)
    proj = G.project(G.covariances_3d(g), CAM)
    binned = G.bin_gaussians(
        proj.means2d, proj.radii, proj.depths, proj.valid, width=48, height=40, capacity=2048
    )
    tiles_x, tiles_y = 3, 3
    expect = {t: [] for t in range(tiles_x * tiles_y)}
    m, r = np.asarray(proj.means2d), np.asarray(proj.radii)
    for i in np.flatnonzero(np.asarray(proj.valid)):
        for ty in range(tiles_y):
            for tx in range(tiles_x):
                # Tile [16tx, 16tx+16) overlaps the square [u-r, u+r] (same rule as the code).
                if np.floor((m[i, 0] - r[i]) / 16) <= tx <= np.floor(
                    (m[i, 0] + r[i]) / 16
                ) and np.floor((m[i, 1] - r[i]) / 16) <= ty <= np.floor((m[i, 1] + r[i]) / 16):
                    expect[ty * tiles_x + tx].append(i)
    ids, ranges = np.asarray(binned.gauss_ids), np.asarray(binned.tile_ranges)
    depths = np.asarray(proj.depths)
    assert int(binned.num_intersections) == sum(len(v) for v in expect.values())
    for t, want in expect.items():
        got = ids[ranges[t, 0] : ranges[t, 1]]
        assert sorted(got.tolist()) == sorted(want), t
        assert np.all(np.diff(depths[got]) >= 0), t  # front to back
    assert int(binned.overflow) == 0
    assert np.all(ids[ranges[-1, 1] :] == 40)  # unused slots point at the padding Gaussian
