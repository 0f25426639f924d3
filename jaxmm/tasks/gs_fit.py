"""Per-scene 3D Gaussian splatting: fit Gaussians to posed images of a procedural scene.

The scene is a procedural set of ground-truth Gaussians (a torus of changing colour around a
sphere, on a flat disc) rendered by our renderer from cameras on a sphere: `num_train_views`
for training, `num_test_views` held out at other azimuths/elevations for PSNR. A batch is
a set of training views (image + camera); the loss renders them all with `render_batch` and
compares with L1 + MSE. No densification: N is static.

Parameters are raw (log scales, opacity logits, unnormalised quaternions, SH DC). 3DGS uses
per-group learning rates; the one shared optimizer gets the same effect because each group is
stored divided by its `lr_scale` and multiplied back on use (Adam's step is ≈ lr per unit of
the stored value, so the effective lr of a group is lr × lr_scale).
"""

from __future__ import annotations

import math
import os

import grain
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxmm import gaussians as G
from jaxmm.data.pipeline import batched
from jaxmm.train.task import DataShard, Task

LR_SCALES = {"means": 0.3, "log_scales": 1.0, "quats": 0.3, "opacity_logits": 3.0, "sh_dc": 1.0}


def procedural_scene(seed: int = 0) -> G.Gaussians3D:
    """Ground truth: a coloured torus around a sphere above a disc (about 700 Gaussians)."""
    rng = np.random.default_rng(seed)
    parts = []
    # Torus, hue varying around it.
    u = rng.uniform(0, 2 * np.pi, 320)
    v = rng.uniform(0, 2 * np.pi, 320)
    big, small = 0.65, 0.16
    pts = np.stack(
        [
            (big + small * np.cos(v)) * np.cos(u),
            (big + small * np.cos(v)) * np.sin(u),
            small * np.sin(v) + 0.1,
        ],
        -1,
    )
    rgb = 0.5 + 0.45 * np.stack([np.cos(u), np.cos(u + 2.1), np.cos(u + 4.2)], -1)
    parts.append((pts, rgb, 0.06))
    # Sphere, vertical gradient.
    d = rng.normal(size=(240, 3))
    d /= np.linalg.norm(d, axis=-1, keepdims=True)
    pts = 0.32 * d + np.array([0.0, 0.0, 0.15])
    rgb = np.stack([0.9 - 0.3 * d[:, 2], 0.4 + 0.4 * d[:, 2], 0.2 + 0.1 * d[:, 0]], -1)
    parts.append((pts, rgb, 0.07))
    # Disc floor, checker-ish two tones.
    r = 0.95 * np.sqrt(rng.uniform(0, 1, 160))
    th = rng.uniform(0, 2 * np.pi, 160)
    pts = np.stack([r * np.cos(th), r * np.sin(th), np.full_like(r, -0.35)], -1)
    tone = ((np.floor(pts[:, 0] * 3) + np.floor(pts[:, 1] * 3)) % 2)[:, None]
    rgb = tone * np.array([0.25, 0.3, 0.35]) + (1 - tone) * np.array([0.8, 0.78, 0.7])
    parts.append((pts, rgb, 0.12))
    means = np.concatenate([p[0] for p in parts])
    rgb = np.clip(np.concatenate([p[1] for p in parts]), 0.02, 0.98)
    scales = np.concatenate([np.full((len(p[0]), 3), p[2]) for p in parts])
    scales[-160:, 2] = 0.015  # flat floor splats
    n = len(means)
    quats = np.tile(np.array([1.0, 0.0, 0.0, 0.0]), (n, 1)) + 0.1 * rng.normal(size=(n, 4))
    return G.Gaussians3D(
        means=jnp.asarray(means, jnp.float32),
        scales=jnp.asarray(scales, jnp.float32),
        quats=jnp.asarray(quats, jnp.float32),
        opacities=jnp.full((n,), 0.9, jnp.float32),
        sh_dc=jnp.asarray(G.rgb_to_sh_dc(rgb), jnp.float32),
    )


def scene_cameras(num: int, size: int, *, held_out: bool) -> list[G.Camera]:
    """Cameras on a sphere of radius 3 around the scene. Held-out ones sit between the
    training azimuths at different elevations."""
    cams = []
    for i in range(num):
        if held_out:
            elev, phase = (10.0 + 35.0 * (i % 2)), 360.0 * (i + 0.5) / num + 7.0
        else:
            elev, phase = (5.0 + 50.0 * ((i * 7) % 5) / 4.0), 360.0 * i / num
        cams += G.orbit_cameras(
            1, 3.0, elevation_deg=elev, phase_deg=phase, fov_x_deg=45.0, width=size, height=size
        )
    return cams


def camera_arrays(cams: list[G.Camera]) -> dict[str, np.ndarray]:
    return {
        "c2w": np.stack([np.asarray(c.c2w) for c in cams]),
        "intrinsics": np.stack([np.asarray(c.intrinsics) for c in cams]),
    }


def cameras_from_batch(batch, size: int) -> G.Camera:
    return G.Camera.from_intrinsics(batch["c2w"], batch["intrinsics"], width=size, height=size)


class ViewSource:
    """Record i: training view i (image [S, S, 3] float32 in [0, 1] and its camera)."""

    def __init__(self, images: np.ndarray, cams: dict[str, np.ndarray]):
        self.images, self.cams = images, cams

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        return {
            "image": self.images[i],
            "c2w": self.cams["c2w"][i],
            "intrinsics": self.cams["intrinsics"][i],
        }


def psnr(a, b) -> float:
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return 10.0 * math.log10(1.0 / max(mse, 1e-12))


class GsFitTask(Task):
    def __init__(self, config: ml_collections.ConfigDict):
        super().__init__(config)
        d = config.data
        self.size = int(d.image_size)
        self.render_kwargs = dict(
            background=(1.0, 1.0, 1.0),
            impl=config.model.impl,
            capacity=int(config.model.capacity),
            max_per_tile=int(config.model.max_per_tile),
        )
        self._gt = procedural_scene(d.seed)
        self.train_cams = scene_cameras(d.num_train_views, self.size, held_out=False)
        self.test_cams = scene_cameras(d.num_test_views, self.size, held_out=True)
        self._images: dict[str, np.ndarray] = {}

    # ---- data ---------------------------------------------------------------------------
    def images(self, split: str) -> np.ndarray:
        """Ground-truth renders [V, S, S, 3] (computed once, on the host's default device)."""
        if split not in self._images:
            cams = self.train_cams if split == "train" else self.test_cams
            # Ground truth is rendered exactly: no per-tile cap (a tile lists each Gaussian once).
            kwargs = dict(self.render_kwargs, max_per_tile=self._gt.num)
            out = G.render_batch(self._gt, G.stack_cameras(cams), checkpoint=False, **kwargs)
            self._images[split] = np.asarray(out.rgb, np.float32)
        return self._images[split]

    def train_dataset(self, shard: DataShard) -> grain.IterDataset:
        return batched(ViewSource(self.images("train"), camera_arrays(self.train_cams)), shard)

    # ---- model --------------------------------------------------------------------------
    def init(self, rng):
        m = self.config.model
        n = int(m.num_gaussians)
        k = jax.random.split(rng, 3)
        means = jax.random.uniform(k[0], (n, 3), minval=-m.init_extent, maxval=m.init_extent)
        raw = {
            "means": means,
            "log_scales": jnp.full((n, 3), math.log(m.init_scale)),
            "quats": jnp.concatenate(
                [jnp.ones((n, 1)), 0.01 * jax.random.normal(k[1], (n, 3))], -1
            ),
            "opacity_logits": jnp.full((n,), -2.0),
            "sh_dc": 0.1 * jax.random.normal(k[2], (n, 3)),
        }
        return {name: x / LR_SCALES[name] for name, x in raw.items()}

    @staticmethod
    def gaussians(params) -> G.Gaussians3D:
        p = {name: x * LR_SCALES[name] for name, x in params.items()}
        return G.Gaussians3D(
            means=p["means"],
            scales=jnp.exp(p["log_scales"]),
            quats=p["quats"],
            opacities=jax.nn.sigmoid(p["opacity_logits"]),
            sh_dc=p["sh_dc"],
        )

    def loss(self, params, batch, rng):
        del rng
        out = G.render_batch(
            self.gaussians(params), cameras_from_batch(batch, self.size), **self.render_kwargs
        )
        diff = out.rgb - batch["image"]
        l1 = jnp.mean(jnp.abs(diff))
        mse = jnp.mean(diff * diff)
        loss = (1.0 - self.config.model.mse_weight) * l1 + self.config.model.mse_weight * mse
        metrics = {
            "l1": l1,
            "psnr": -10.0 * jnp.log10(jnp.maximum(mse, 1e-12)),
            "overflow": jnp.sum(out.stats.overflow).astype(jnp.float32),
            "intersections": jnp.mean(out.stats.intersections.astype(jnp.float32)),
            "tile_overflow": jnp.sum(out.stats.tile_overflow).astype(jnp.float32),
        }
        return loss, metrics

    # ---- evaluation ---------------------------------------------------------------------
    def render_views(self, params, split: str) -> np.ndarray:
        cams = self.train_cams if split == "train" else self.test_cams
        out = jax.jit(
            lambda p: G.render_batch(
                self.gaussians(p), G.stack_cameras(cams), checkpoint=False, **self.render_kwargs
            )
        )(params)
        return np.asarray(out.rgb)

    def evaluate(self, params, step, workdir):
        params = jax.device_get(params)
        test = self.render_views(params, "test")
        gt = self.images("test")
        scores = [psnr(a, b) for a, b in zip(test, gt, strict=True)]
        if workdir:
            out_dir = os.path.join(workdir, "renders", f"step_{step:06d}")
            os.makedirs(out_dir, exist_ok=True)
            from PIL import Image

            for i, (pred, ref) in enumerate(zip(test, gt, strict=True)):
                both = np.concatenate([pred, ref], axis=1)  # render | ground truth
                Image.fromarray((np.clip(both, 0, 1) * 255).astype(np.uint8)).save(
                    os.path.join(out_dir, f"test_{i:02d}.png")
                )
            G.save_ply(os.path.join(workdir, "gaussians.ply"), self.gaussians(params))
        return {"psnr_test": float(np.mean(scores)), "psnr_test_min": float(np.min(scores))}


def build(config: ml_collections.ConfigDict) -> Task:
    return GsFitTask(config)
