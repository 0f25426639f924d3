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
import jax.numpy as jnp
import ml_collections

from jaxmm import lrm4d
from jaxmm.data.pipeline import batched
from jaxmm.data.synthetic4d import SceneSpec, Synthetic4D
from jaxmm.gaussians.camera import Camera
from jaxmm.models import lrm4d as lrm4d_model
from jaxmm.nn.vgg import load_vgg19, perceptual_loss
from jaxmm.train.task import DataShard, Task

log = logging.getLogger(__name__)


class LRM4DTask(Task):
    def __init__(self, config: ml_collections.ConfigDict):
        super().__init__(config)
        self.model = lrm4d_model.build(config)
        self.size = config.data.image_size
        self.vgg_params = None
        weights = config.loss.vgg19_weights
        if config.loss.perceptual_weight > 0:
            if weights and os.path.isfile(weights):
                self.vgg_params = load_vgg19(weights)
            else:
                log.warning(
                    "4D-LRM perceptual loss is OFF: config.loss.vgg19_weights=%r is not a local "
                    "file (VGG-19 weights are never downloaded or randomly initialised). "
                    "Training uses MSE only.",
                    weights,
                )

    def init(self, rng):
        return lrm4d_model.init(self.model, rng, *lrm4d_model.example_inputs(self.config))

    def cameras(self, batch, name: str) -> Camera:
        """The stacked cameras [B, V] of the batch's `input` or `target` views."""
        c2w, intr = batch[f"{name}_c2w"], batch[f"{name}_intrinsics"]
        return Camera.from_intrinsics(c2w, intr, width=self.size, height=self.size)

    def loss(self, params, batch, rng):
        g = lrm4d_model.reconstruct(
            self.model,
            params,
            batch["input_images"],
            batch["input_times"],
            self.cameras(batch, "input"),
        )
        m = self.config.model
        render_kw = lrm4d_model.render_options(m) | {
            "views_per_step": m.get("render_views_per_step", 1)
        }
        # One batch shard per device (the Pallas rasteriser is not partitioned by GSPMD).
        pred = lrm4d_model.render_scenes(
            g, self.cameras(batch, "target"), batch["target_times"], **render_kw
        )
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
            perc = jnp.mean(perceptual_loss(self.vgg_params, pred, target))
            loss = loss + self.config.loss.perceptual_weight * perc
            metrics["perceptual"] = perc
        metrics["opacity_mean"] = jnp.mean(g.opacities)
        return loss, metrics

    def train_dataset(self, shard: DataShard) -> grain.IterDataset:
        source = Synthetic4D(SceneSpec.from_config(self.config, stream=0))
        return batched(source, shard, shuffle=False)

    def evaluate(self, params, step, workdir):
        model = lrm4d.LRM4DModel(self.config, params)
        if self.config.eval.get("data_path", ""):
            return lrm4d.evaluate(
                model,
                self.config.eval.data_path,
                self.config.eval.setup,
                lpips_weights=self.config.eval.get("lpips_weights", ""),
            )
        return lrm4d.evaluate_synthetic(
            model,
            num_scenes=self.config.eval.num_scenes,
            setup=self.config.eval.setup,
            lpips_weights=self.config.eval.get("lpips_weights", ""),
        )


def build(config: ml_collections.ConfigDict) -> Task:
    return LRM4DTask(config)
