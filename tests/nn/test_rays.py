"""Rays and ray maps against a hand-computed camera; stacked cameras against single ones."""

import numpy as np

from jaxmm.gaussians.camera import Camera, rays, stack_cameras
from jaxmm.nn.rays import closest_point_to_origin, ray_map


def test_ray_map_hand_computed_pixel():
    # Camera at (0, 0, -2) looking along +z, fx = fy = 2, 2x2 image, principal point (1, 1).
    c2w = np.eye(4, dtype=np.float32)
    c2w[2, 3] = -2.0
    origins, dirs = rays(Camera.create(c2w, 2.0, 2.0, 1.0, 1.0, width=2, height=2))
    # Pixel (row 0, col 0) centre (0.5, 0.5): camera ray (-0.25, -0.25, 1) ∝ (-1, -1, 4).
    d = np.array([-1.0, -1.0, 4.0]) / np.sqrt(18.0)
    # o - <o, d> d = (0, 0, -2) + (8/18)(-1, -1, 4) = (-4/9, -4/9, -2/9).
    m = ray_map(origins, dirs)
    np.testing.assert_allclose(m[0, 0, :3], d, atol=1e-6)  # float32 rounding
    np.testing.assert_allclose(m[0, 0, 3:], [-4 / 9, -4 / 9, -2 / 9], atol=1e-6)
    # Pixel (row 1, col 0) centre (0.5, 1.5): y flips sign (OpenCV: y down).
    np.testing.assert_allclose(m[1, 0, :3], np.array([-1.0, 1.0, 4.0]) / np.sqrt(18.0), atol=1e-6)


def test_rays_of_stacked_cameras_match_each_camera():
    cams = [
        Camera.look_at((2.0, 1.0, 0.5), fov_x_deg=50.0, width=8, height=6),
        Camera.look_at((-1.0, 2.5, -0.3), fov_x_deg=40.0, width=8, height=6),
    ]
    o, d = rays(stack_cameras(cams))
    for i, cam in enumerate(cams):
        o_ref, d_ref = rays(cam)
        np.testing.assert_allclose(o[i], o_ref, atol=1e-6)
        np.testing.assert_allclose(d[i], d_ref, atol=1e-6)


def test_closest_point_is_invariant_along_the_ray_and_orthogonal():
    rng = np.random.default_rng(0)
    o = rng.normal(size=(16, 3)).astype(np.float32)
    d = rng.normal(size=(16, 3)).astype(np.float32)
    d /= np.linalg.norm(d, axis=-1, keepdims=True)
    p = closest_point_to_origin(o, d)
    np.testing.assert_allclose(np.sum(p * d, -1), 0.0, atol=1e-5)
    np.testing.assert_allclose(closest_point_to_origin(o + 1.7 * d, d), p, atol=1e-5)
