"""Per-scene Gaussian splatting (3DGS, and 4DGS on dynamic D-NeRF folders) with the trainer.

Data: `config.data.path` names a scene folder (D-NeRF / NeRF-synthetic or COLMAP, read by
`jaxmm.data.scenes.load_scene`); without it a procedural object is rendered in memory. A batch
is `batch_size` training views (image, alpha, camera, time).

Model: a capacity buffer of `model.capacity` Gaussians with an alive mask (see
`jaxmm.gaussians.density`), initialised from the SfM points (COLMAP) or at random in the scene
bounds, with kNN scales; SH up to `model.sh_degree` (bands switched on progressively by the
optimizer); 4D Gaussians (`Gaussians4D`) when the folder is dynamic. Loss: (1 − λ)·L1 +
λ·D-SSIM (λ = `model.ssim_weight`, 0.2). The optimizer is the task's own
(`gs_fit_optim.make`: per-parameter Adam, exponential position schedule, densification).
Evaluation (`gs_fit_eval`): test PSNR / SSIM (LPIPS with `eval.lpips_weights`), renders,
turntable, PLY.
"""

from __future__ import annotations

import math

import grain
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxmm import gaussians as G
from jaxmm.data import scenes
from jaxmm.data.pipeline import batched
from jaxmm.data.posed import PosedImages
from jaxmm.eval import image_metrics
from jaxmm.gaussians import density
from jaxmm.gaussians.sh import view_dependent_dc
from jaxmm.tasks import gs_fit_eval, gs_fit_optim
from jaxmm.train.task import DataShard, Task

BACKGROUNDS = {"white": (1.0, 1.0, 1.0), "black": (0.0, 0.0, 0.0)}


def procedural_views(d: ml_collections.ConfigDict, split: str) -> PosedImages:
    """The in-memory procedural object (no `data.path`), rendered exactly on black."""
    n = d.num_train_views if split == "train" else d.num_test_views
    cams = scenes.scene_cameras(n, d.image_size, held_out=split == "test")
    gt = scenes.procedural_scene(d.seed)
    out = G.render_batch(gt, G.stack_cameras(cams), checkpoint=False, impl="dense",
                         max_per_tile=None, background=(0.0, 0.0, 0.0))  # fmt: skip
    return PosedImages(
        images=np.asarray(out.rgb, np.float32),
        alphas=np.asarray(out.alpha, np.float32),
        c2w=np.stack([np.asarray(c.c2w) for c in cams]),
        intrinsics=np.stack([np.asarray(c.intrinsics) for c in cams]),
        names=tuple(f"{split}_{i}" for i in range(n)),
        background="black",
    )


def knn_scales(points: np.ndarray, k: int = 3) -> np.ndarray:
    """3DGS's initial scale: mean distance to the k nearest other points (blockwise)."""
    out = np.empty(len(points), np.float32)
    for s in range(0, len(points), 1024):
        d2 = np.sum((points[s : s + 1024, None] - points[None]) ** 2, -1)
        d2[np.arange(d2.shape[0]), np.arange(s, s + d2.shape[0])] = np.inf
        out[s : s + 1024] = np.sqrt(np.mean(np.sort(d2, -1)[:, :k], -1))
    return np.maximum(out, 1e-4)


class ViewSource:
    """Record i: training view i (premultiplied image, alpha, camera, time)."""

    def __init__(self, views: PosedImages):
        self.v = views

    def __len__(self) -> int:
        return self.v.num

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        v = self.v
        t = v.times[i] if v.times is not None else 0.0
        return {"image": v.images[i], "alpha": v.alphas[i], "c2w": v.c2w[i],
                "intrinsics": v.intrinsics[i], "time": np.float32(t)}  # fmt: skip


class GsFitTask(Task):
    def __init__(self, config: ml_collections.ConfigDict):
        super().__init__(config)
        d, m = config.data, config.model
        if d.background not in ("white", "black", "random"):
            raise ValueError(
                f"config.data.background must be white|black|random, got {d.background!r}"
            )
        # Images are kept premultiplied (on black) and composited on the background per step.
        if d.path:
            load = lambda split: scenes.load_scene(  # noqa: E731
                d.path, split, background="black", downscale=d.downscale,
                test_every=d.test_every, seed=d.seed,
            )  # fmt: skip
            self.train, self.test = load("train"), load("test")
        else:
            self.train, self.test = procedural_views(d, "train"), procedural_views(d, "test")
        self.dynamic = self.train.times is not None
        self.height, self.width = self.train.height, self.train.width
        self.extent = self.train.camera_extent()
        self.eval_background = BACKGROUNDS.get(d.background, BACKGROUNDS["white"])
        self.render_kwargs = dict(
            impl=m.impl, tile_size=int(m.tile_size), capacity=int(m.intersections),
            max_per_tile=int(m.max_per_tile) or None, on_overflow=m.on_overflow,
        )  # fmt: skip
        self.views_per_step = config.batch_size // config.grad_accum_steps
        self._init = self._initial_gaussians()

    # ---- data ---------------------------------------------------------------------------
    def train_dataset(self, shard: DataShard) -> grain.IterDataset:
        return batched(ViewSource(self.train), shard)

    # ---- model --------------------------------------------------------------------------
    def _initial_gaussians(self) -> dict[str, np.ndarray]:
        m, d = self.config.model, self.config.data
        rng = np.random.default_rng(d.seed)
        cap = int(m.capacity)
        sfm = self.train.points is not None and m.init in ("auto", "sfm")
        if m.init == "sfm" and self.train.points is None:
            raise ValueError("config.model.init='sfm' but the scene folder has no SfM points")
        if sfm:
            pts, cols = self.train.points, self.train.point_colors
            if len(pts) > cap:
                keep = rng.choice(len(pts), cap, replace=False)
                pts, cols = pts[keep], cols[keep]
        else:
            n = min(int(m.num_init), cap)
            pts = rng.uniform(-m.init_extent, m.init_extent, (n, 3)).astype(np.float32)
            cols = rng.uniform(0.3, 0.7, (n, 3)).astype(np.float32)
        n = len(pts)
        dim = 4 if self.dynamic else 3
        means = np.zeros((cap, dim), np.float32)
        means[:n, :3] = pts
        scale = knn_scales(pts)
        log_scales = np.full((cap, dim), -10.0, np.float32)
        log_scales[:n, :3] = np.log(scale)[:, None]
        if self.dynamic:
            t = self.train.times
            means[:n, 3] = rng.uniform(t.min(), t.max(), n)
            log_scales[:n, 3] = math.log(m.init_time_scale * max(float(np.ptp(t)), 1e-3))
        raw = {
            "means": means,
            "log_scales": log_scales,
            "opacity_logits": np.full((cap,), math.log(0.1 / 0.9), np.float32),
            "sh_dc": np.zeros((cap, 3), np.float32),
            "sh_rest": np.zeros((cap, gs_fit_optim.num_sh_rest(m), 3), np.float32),
            "alive": (np.arange(cap) < n).astype(np.float32),
            "probe": np.zeros((self.views_per_step, cap, 2), np.float32),
        }
        raw["sh_dc"][:n] = np.asarray(G.rgb_to_sh_dc(cols))
        unit = np.tile(np.array([1.0, 0.0, 0.0, 0.0], np.float32), (cap, 1))
        if self.dynamic:
            raw["q_left"], raw["q_right"] = unit, unit.copy()
        else:
            raw["quats"] = unit
        return raw

    def init(self, rng):
        del rng  # deterministic from config.data.seed (computed on the host once)
        return {k: jnp.asarray(v) for k, v in self._init.items()}

    @staticmethod
    def rotation(params) -> jax.Array:
        if "quats" in params:
            return G.quat_to_rotmat(params["quats"])
        return G.rotation_4d(params["q_left"], params["q_right"])

    def gaussians(self, params, camera: G.Camera | None = None, probe=None):
        """Activated Gaussians (dead slots transparent); with a camera, SH colour as seen from
        it, and the zero screen-space `probe` added to the means (for its gradient)."""
        means = params["means"]
        if probe is not None:
            xyz = density.with_screen_probe(means[:, :3], probe, camera.c2w, camera.fx, camera.fy)
            means = jnp.concatenate([xyz, means[:, 3:]], -1)
        dc = params["sh_dc"]
        if camera is not None:
            dc = view_dependent_dc(dc, params["sh_rest"], means[:, :3], camera.c2w[:3, 3])
        opacities = jax.nn.sigmoid(params["opacity_logits"])
        common = dict(
            scales=jnp.exp(params["log_scales"]),
            opacities=density.apply_alive(opacities, params["alive"]),
            sh_dc=dc,
        )
        if self.dynamic:
            return G.Gaussians4D(
                means=means, q_left=params["q_left"], q_right=params["q_right"], **common
            )
        return G.Gaussians3D(means=means, quats=params["quats"], **common)

    def render_view(self, params, camera, t, background, probe=None) -> G.RenderOutput:
        g = self.gaussians(params, camera, probe)
        if self.dynamic:
            return G.render_4d(g, camera, t, background=background, **self.render_kwargs)
        return G.render(g, camera, background=background, **self.render_kwargs)

    def optimizer(self, num_steps: int):
        return gs_fit_optim.make(
            self.config.model, num_steps=num_steps, extent=self.extent, rotation=self.rotation,
            image_size=max(self.height, self.width), views_per_step=self.views_per_step,
        )  # fmt: skip

    def learning_rate(self, num_steps: int):
        """Logged as train/learning_rate: the position rate (× extent), the one that decays;
        the other per-parameter rates are constants of `config.model.lr`."""
        return gs_fit_optim.learning_rates(self.config.model, self.extent, num_steps)["means"]

    def loss(self, params, batch, rng):
        cams = G.Camera.from_intrinsics(
            batch["c2w"], batch["intrinsics"], width=self.width, height=self.height
        )
        if self.config.data.background == "random":
            bg = jax.random.uniform(rng, (3,))
        else:
            bg = jnp.asarray(BACKGROUNDS[self.config.data.background])
        target = batch["image"] + (1.0 - batch["alpha"][..., None]) * bg

        @jax.checkpoint
        def one(xs):
            cam, t, probe = xs
            out = self.render_view(params, cam, t, bg, probe)
            return out.rgb, out.stats

        rgb, stats = jax.lax.map(one, (cams, batch["time"], params["probe"]))
        l1 = jnp.mean(jnp.abs(rgb - target))
        ssim = jnp.mean(image_metrics.ssim(rgb, target))
        lam = self.config.model.ssim_weight
        loss = (1.0 - lam) * l1 + lam * (1.0 - ssim)
        metrics = {
            "l1": l1,
            "ssim": ssim,
            "psnr": jnp.mean(image_metrics.psnr(rgb, target)),
            "alive": jnp.sum(params["alive"]),
            "tile_overflow": jnp.sum(stats.tile_overflow).astype(jnp.float32),
            "overflow": jnp.sum(stats.overflow).astype(jnp.float32),
            "busiest_tile_count": jnp.max(stats.busiest_count).astype(jnp.float32),
        }
        return loss, metrics

    # ---- evaluation ---------------------------------------------------------------------
    def evaluate(self, params, step, workdir):
        return gs_fit_eval.evaluate(self, params, step, workdir)


def build(config: ml_collections.ConfigDict) -> Task:
    return GsFitTask(config)
