"""4D-LRM training task: procedural 4D clips -> per-pixel 4D Gaussians -> rendered views -> loss.

Each record holds V_in input views and V_sup supervision views of one clip, drawn
independently (any view × time). The model predicts one 4D Gaussian per input pixel; every
supervision view is rendered from all Gaussians of its sample (checkpointed per view to bound
memory) and compared with MSE + 0.5 · perceptual (VGG-19, only when `config.loss.vgg19_weights`
names a local file; otherwise the term is off and a warning says so).
"""

from __future__ import annotations

import logging
import os

import grain
import jax
import jax.numpy as jnp
import ml_collections

from jaxmm import gaussians
from jaxmm.data.pipeline import batched
from jaxmm.data.synthetic4d import SceneSpec, Synthetic4D
from jaxmm.gaussians.camera import Camera
from jaxmm.gaussians.params import Gaussians4D
from jaxmm.models import lrm4d as lrm4d_model
from jaxmm.nn.rays import pixel_rays
from jaxmm.train.task import DataShard, Task

log = logging.getLogger(__name__)


def scene_spec(config: ml_collections.ConfigDict, stream: int = 0) -> SceneSpec:
    d = config.data
    return SceneSpec(
        image_size=d.image_size,
        num_frames=d.num_frames,
        num_input_views=d.num_input_views,
        num_target_views=d.num_target_views,
        max_primitives=d.max_primitives,
        points_per_primitive=d.points_per_primitive,
        seed=d.seed,
        stream=stream,
    )


def cameras_from(c2w: jax.Array, intr: jax.Array, size: int) -> Camera:
    """Stacked Camera from c2w [..., 4, 4] and intrinsics [..., 4] (fx, fy, cx, cy)."""
    return Camera(
        c2w=c2w,
        fx=intr[..., 0],
        fy=intr[..., 1],
        cx=intr[..., 2],
        cy=intr[..., 3],
        width=size,
        height=size,
    )


def rays_from(c2w: jax.Array, intr: jax.Array, height: int, width: int):
    return pixel_rays(c2w, intr[..., 0], intr[..., 1], intr[..., 2], intr[..., 3], height, width)


def reconstruct(model, params, images, times, c2w, intr) -> Gaussians4D:
    """images [B, V, H, W, 3] in [0, 1] -> Gaussians [B, N]."""
    origins, dirs = rays_from(c2w, intr, images.shape[2], images.shape[3])
    g, _ = model.apply({"params": params}, images, times, origins, dirs)
    return g


def render_kwargs(model_cfg) -> dict:
    """`gaussians.render_batch` options from `config.model`.

    renderer "dense": the small-image compositor (`impl="dense"`, 8×8 tiles, the nearest
    `render_capacity` Gaussians per tile, 0 = all); "splat": the tiled rasteriser (Pallas on GPU).
    """
    renderer = model_cfg.renderer
    if renderer == "dense":
        return dict(impl="dense", tile_size=8, max_per_tile=model_cfg.render_capacity or None)
    if renderer == "splat":
        return dict(impl="auto")
    raise ValueError(f"config.model.renderer must be 'dense' or 'splat', got {renderer!r}")


def render_views(g: Gaussians4D, c2w, intr, times, size: int, **render_kw):
    """One sample's Gaussians [N] -> rgb [V, H, W, 3] for V cameras/times. `render_kw` go to
    `gaussians.render_batch` (e.g. views_per_step, checkpoint: one checkpointed group of
    views at a time bounds memory by one group, not V views)."""
    return gaussians.render_batch(g, cameras_from(c2w, intr, size), times, **render_kw).rgb


class LRM4DTask(Task):
    def __init__(self, config: ml_collections.ConfigDict):
        super().__init__(config)
        self.model = lrm4d_model.from_config(_model_cfg(config))
        self.size = config.data.image_size
        self.vgg_params = None
        weights = config.loss.vgg19_weights
        if config.loss.perceptual_weight > 0:
            if weights and os.path.isfile(weights):
                from jaxmm.nn.vgg import load_vgg19

                self.vgg_params = load_vgg19(weights)
            else:
                log.warning(
                    "4D-LRM perceptual loss is OFF: config.loss.vgg19_weights=%r is not a local "
                    "file (VGG-19 weights are never downloaded or randomly initialised). "
                    "Training uses MSE only.",
                    weights,
                )

    def example_inputs(self, batch: int = 1):
        d = self.config.data
        v, s = d.num_input_views, self.size
        c2w = jnp.broadcast_to(jnp.eye(4).at[2, 3].set(-2.5), (batch, v, 4, 4))
        intr = jnp.broadcast_to(jnp.array([s, s, s / 2, s / 2], jnp.float32), (batch, v, 4))
        return jnp.zeros((batch, v, s, s, 3)), jnp.zeros((batch, v)), c2w, intr

    def init(self, rng):
        images, times, c2w, intr = self.example_inputs()
        origins, dirs = rays_from(c2w, intr, self.size, self.size)
        return self.model.init(rng, images, times, origins, dirs)["params"]

    def loss(self, params, batch, rng):
        g = reconstruct(
            self.model,
            params,
            batch["input_images"],
            batch["input_times"],
            batch["input_c2w"],
            batch["input_intrinsics"],
        )
        m = self.config.model
        render_kw = render_kwargs(m) | {"views_per_step": m.get("render_views_per_step", 1)}
        pred = jax.vmap(
            lambda g1, c2w, intr, t: render_views(g1, c2w, intr, t, self.size, **render_kw)
        )(g, batch["target_c2w"], batch["target_intrinsics"], batch["target_times"])
        target = batch["target_images"]
        mse = jnp.mean(jnp.square(pred - target))
        loss = self.config.loss.mse_weight * mse
        metrics = {
            "mse": mse,
            "psnr": jnp.mean(
                -10.0
                * jnp.log10(
                    jnp.maximum(jnp.mean(jnp.square(pred - target), axis=(-3, -2, -1)), 1e-10)
                )
            ),
        }
        if self.vgg_params is not None:
            from jaxmm.nn.vgg import perceptual_loss

            perc = jnp.mean(perceptual_loss(self.vgg_params, pred, target))
            loss = loss + self.config.loss.perceptual_weight * perc
            metrics["perceptual"] = perc
        metrics["opacity_mean"] = jnp.mean(g.opacities)
        return loss, metrics

    def train_dataset(self, shard: DataShard) -> grain.IterDataset:
        source = Synthetic4D(scene_spec(self.config, stream=0))
        return batched(source, shard, shuffle=False)

    def evaluate(self, params, step, workdir):
        from jaxmm import lrm4d

        model = lrm4d.LRM4DModel(self.config, params)
        return lrm4d.evaluate_synthetic(
            model,
            num_scenes=self.config.eval.num_scenes,
            setup=self.config.eval.setup,
            lpips_weights=self.config.eval.get("lpips_weights", ""),
        )


def _model_cfg(config):
    m = ml_collections.ConfigDict(config.model.to_dict())
    with m.unlocked():
        m.compute_dtype = config.precision.compute_dtype
        m.param_dtype = config.precision.param_dtype
    return m


def build(config: ml_collections.ConfigDict) -> Task:
    return LRM4DTask(config)
