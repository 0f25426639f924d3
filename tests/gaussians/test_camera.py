"""Camera conventions: OpenCV look-at axes, D-NeRF (OpenGL) conversion, rays through centres."""

import math

import jax.numpy as jnp
import numpy as np
import pytest

from jaxmm.gaussians.camera import Camera, rays, stack_cameras


def test_look_at_axes_are_opencv():
    cam = Camera.look_at(
        (0.0, -3.0, 0.0), (0, 0, 0), (0, 0, 1), fov_x_deg=60.0, width=32, height=24
    )
    c2w = np.asarray(cam.c2w)
    # Looking along +y with z up: right = +x, down = -z, forward = +y.
    np.testing.assert_allclose(c2w[:3, 0], [1, 0, 0], atol=1e-6)
    np.testing.assert_allclose(c2w[:3, 1], [0, 0, -1], atol=1e-6)
    np.testing.assert_allclose(c2w[:3, 2], [0, 1, 0], atol=1e-6)
    np.testing.assert_allclose(float(cam.fx), 16 / math.tan(math.radians(30)), rtol=1e-6)
    # w2c is the inverse of c2w.
    np.testing.assert_allclose(np.asarray(cam.w2c) @ c2w, np.eye(4), atol=1e-6)


def test_from_dnerf_flips_y_and_z():
    m = np.eye(4, dtype=np.float32)
    m[:3, 3] = [0.0, 0.0, 4.0]  # Blender camera on +z looking down -z
    cam = Camera.from_dnerf(m, camera_angle_x=0.69, width=20, height=20)
    np.testing.assert_allclose(np.asarray(cam.c2w)[:3, 2], [0, 0, -1])  # forward is -z
    np.testing.assert_allclose(np.asarray(cam.c2w)[:3, 1], [0, -1, 0])  # down is -y
    np.testing.assert_allclose(float(cam.fx), 10 / math.tan(0.345), rtol=1e-6)


def test_rays_hit_target_at_centre_and_are_unit():
    cam = Camera.look_at((2.0, 1.0, 0.5), (0, 0, 0), (0, 0, 1), fov_x_deg=40.0, width=16, height=16)
    origins, dirs = rays(cam)
    assert origins.shape == dirs.shape == (16, 16, 3)
    np.testing.assert_allclose(jnp.linalg.norm(dirs, axis=-1), 1.0, atol=1e-6)
    # The image centre (between the four middle pixels) looks at the target.
    mid = jnp.mean(dirs[7:9, 7:9], axis=(0, 1))
    to_target = -jnp.asarray([2.0, 1.0, 0.5]) / jnp.linalg.norm(jnp.asarray([2.0, 1.0, 0.5]))
    np.testing.assert_allclose(mid / jnp.linalg.norm(mid), to_target, atol=1e-5)


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="width"):
        Camera.look_at((0, -3, 0), fov_x_deg=60.0, width=0, height=4)
    with pytest.raises(ValueError, match="exactly one"):
        Camera.look_at((0, -3, 0), width=4, height=4)
    with pytest.raises(ValueError, match="c2w"):
        Camera.create(np.eye(3), 1.0, 1.0, width=4, height=4)
    a = Camera.look_at((0, -3, 0), fov_x_deg=60.0, width=4, height=4)
    b = Camera.look_at((0, -3, 0), fov_x_deg=60.0, width=8, height=4)
    with pytest.raises(ValueError, match="different"):
        stack_cameras([a, b])
    assert stack_cameras([a, a]).c2w.shape == (2, 4, 4)
