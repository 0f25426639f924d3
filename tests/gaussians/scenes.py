"""Small random scenes and an independent dense compositor shared by the gaussians tests."""

import jax
import numpy as np

from jaxmm.gaussians.params import Gaussians3D, Gaussians4D


def random_scene(seed: int, n: int, *, opacity=(0.05, 0.34), scale=(0.05, 0.3)) -> Gaussians3D:
    """Gaussians in [-1, 1]³. Opacities below 0.35 keep the opacity-aware extent under the 3σ
    cap, so the tiled renderer drops no pixel with alpha >= 1/255 and equals dense compositing."""
    k = jax.random.split(jax.random.PRNGKey(seed), 5)
    return Gaussians3D(
        means=jax.random.uniform(k[0], (n, 3), minval=-1.0, maxval=1.0),
        scales=jax.random.uniform(k[1], (n, 3), minval=scale[0], maxval=scale[1]),
        quats=jax.random.normal(k[2], (n, 4)),
        opacities=jax.random.uniform(k[3], (n,), minval=opacity[0], maxval=opacity[1]),
        sh_dc=jax.random.normal(k[4], (n, 3)),
    )


def dense_composite(means2d, conics, colors, opacities, depths, valid, width, height, background):
    """Every pixel, every Gaussian, no tiles: front to back in global depth order, in float64,
    with the 3DGS rules (skip power > 0 and alpha < 1/255, clamp 0.99, stop before T < 1e-4)."""
    a = lambda x: np.asarray(x, np.float64)
    means2d, conics, colors, opacities, depths = map(
        a, (means2d, conics, colors, opacities, depths)
    )
    px, py = np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5, indexing="xy")
    trans = np.ones((height, width))
    rgb = np.zeros((height, width, 3))
    dep = np.zeros((height, width))
    done = np.zeros((height, width), bool)
    for i in np.argsort(depths, kind="stable"):
        if not valid[i]:
            continue
        dx, dy = px - means2d[i, 0], py - means2d[i, 1]
        power = -0.5 * (conics[i, 0] * dx * dx + conics[i, 2] * dy * dy) - conics[i, 1] * dx * dy
        alpha = np.minimum(0.99, opacities[i] * np.exp(power))
        use = (power <= 0) & (alpha >= 1 / 255) & ~done
        t_next = trans * (1 - alpha)
        stop = use & (t_next < 1e-4)
        done |= stop
        use &= ~stop
        w = np.where(use, alpha * trans, 0.0)
        rgb += w[..., None] * colors[i]
        dep += w * depths[i]
        trans = np.where(use, t_next, trans)
    alpha_img = 1 - trans
    depth = np.where(alpha_img > 1e-4, dep / np.maximum(alpha_img, 1e-12), 0.0)
    return rgb + trans[..., None] * np.asarray(background), alpha_img, depth


def brute_force_render(g: Gaussians3D, cam, background):
    """Projects with the library, then composites every Gaussian at every pixel in float64."""
    from jaxmm import gaussians

    proj = gaussians.project(gaussians.covariances_3d(g), cam)
    return dense_composite(
        proj.means2d,
        proj.conics,
        proj.colors,
        proj.opacities,
        proj.depths,
        np.asarray(proj.valid),
        cam.width,
        cam.height,
        background,
    )


def random_scene_4d(seed: int, n: int, *, extent: float, scale=(0.1, 0.4), opacity=(0.3, 0.9)):
    """n random 4D Gaussians: xyzt means in [-extent, extent], unnormalised rotor quats."""
    k = jax.random.split(jax.random.PRNGKey(seed), 6)
    return Gaussians4D(
        means=jax.random.uniform(k[0], (n, 4), minval=-extent, maxval=extent),
        scales=jax.random.uniform(k[1], (n, 4), minval=scale[0], maxval=scale[1]),
        q_left=jax.random.normal(k[2], (n, 4)),
        q_right=jax.random.normal(k[3], (n, 4)),
        opacities=jax.random.uniform(k[4], (n,), minval=opacity[0], maxval=opacity[1]),
        sh_dc=jax.random.normal(k[5], (n, 3)),
    )
