"""PLY round trip in the standard 3DGS layout, and clear errors on bad files."""

import numpy as np
import pytest

from jaxmm import gaussians as G
from tests.gaussians.scenes import random_scene


def test_ply_round_trip_3d_and_header(tmp_path):
    g = random_scene(0, 7)
    path = tmp_path / "g.ply"
    G.save_ply(path, g)
    header = path.read_bytes().split(b"end_header")[0].decode()
    for prop in ("x", "nx", "f_dc_0", "f_rest_44", "opacity", "scale_2", "rot_3"):
        assert f"property float {prop}\n" in header
    back = G.load_ply(path)
    assert isinstance(back, G.Gaussians3D)
    np.testing.assert_allclose(back.means, g.means, rtol=1e-6)
    np.testing.assert_allclose(back.scales, g.scales, rtol=1e-5)  # stored as log
    np.testing.assert_allclose(back.opacities, g.opacities, rtol=1e-5)  # stored as logit
    q = np.asarray(g.quats) / np.linalg.norm(g.quats, axis=-1, keepdims=True)
    np.testing.assert_allclose(back.quats, q, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(back.sh_dc, g.sh_dc, rtol=1e-6)


def test_ply_round_trip_4d(tmp_path):
    rng = np.random.default_rng(0)
    g = G.Gaussians4D(
        means=rng.normal(size=(5, 4)),
        scales=rng.uniform(0.1, 1, (5, 4)),
        q_left=rng.normal(size=(5, 4)),
        q_right=rng.normal(size=(5, 4)),
        opacities=rng.uniform(0.1, 0.9, 5),
        sh_dc=rng.normal(size=(5, 3)),
    )
    G.save_ply(tmp_path / "g4.ply", g, sh_rest=False)
    back = G.load_ply(tmp_path / "g4.ply")
    assert isinstance(back, G.Gaussians4D)
    np.testing.assert_allclose(back.means, g.means, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(back.scales, g.scales, rtol=1e-5)
    np.testing.assert_allclose(
        back.q_right, g.q_right / np.linalg.norm(g.q_right, axis=-1, keepdims=True), atol=1e-6
    )


def test_bad_ply_files_raise(tmp_path):
    (tmp_path / "a.ply").write_bytes(b"not a ply")
    with pytest.raises(ValueError, match="magic"):
        G.load_ply(tmp_path / "a.ply")
    (tmp_path / "b.ply").write_bytes(
        b"ply\nformat ascii 1.0\nelement vertex 1\nproperty float x\nend_header\n1\n"
    )
    with pytest.raises(ValueError, match="binary_little_endian"):
        G.load_ply(tmp_path / "b.ply")
    (tmp_path / "c.ply").write_bytes(
        b"ply\nformat binary_little_endian 1.0\nelement vertex 1\nproperty float x\nend_header\n"
        + np.float32(1).tobytes()
    )
    with pytest.raises(ValueError, match="missing 3DGS vertex properties"):
        G.load_ply(tmp_path / "c.ply")
