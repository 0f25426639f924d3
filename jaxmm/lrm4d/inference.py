"""A trained 4D-LRM: load a workdir, reconstruct Gaussians in one pass, render any view/time,
and the paper's inference filters (p(t) < 0.05, weighted opacity < 0.05)."""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxmm import gaussians, sharding
from jaxmm.gaussians.camera import Camera, stack_cameras
from jaxmm.gaussians.params import Gaussians4D, slice_at
from jaxmm.models import lrm4d as lrm4d_model
from jaxmm.train import checkpoint as ckpt_lib


class LRM4DModel:
    """A trained 4D-LRM: config + params, with jitted reconstruct and render."""

    def __init__(self, config: ml_collections.ConfigDict, params: Any):
        self.config = config
        self.params = params
        self.module = lrm4d_model.build(config)
        self._apply = jax.jit(functools.partial(lrm4d_model.reconstruct, self.module))
        self._render = jax.jit(self._render_one, static_argnames=("filters",))

    @property
    def patch_size(self) -> int:
        return self.module.patch_size

    def reconstruct(self, images, cameras: Camera | Sequence[Camera], times) -> Gaussians4D:
        """images [V, H, W, 3] in [0, 1], V cameras, times [V] in [-1, 1] -> Gaussians [V·H·W]."""
        cams = stack_cameras(list(cameras)) if isinstance(cameras, (list, tuple)) else cameras
        images = np.asarray(images, np.float32)
        times = np.asarray(times, np.float32).reshape(-1)
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"reconstruct: images must be [V, H, W, 3], got {images.shape}")
        v, h, w, _ = images.shape
        if cams.c2w.shape != (v, 4, 4):
            raise ValueError(f"reconstruct: {v} images but cameras.c2w has shape {cams.c2w.shape}")
        if (cams.height, cams.width) != (h, w):
            raise ValueError(
                f"reconstruct: images are {h}x{w} but cameras are {cams.height}x{cams.width}"
            )
        if times.shape != (v,):
            raise ValueError(f"reconstruct: need one time per image ({v}), got {times.shape}")
        if h % self.patch_size or w % self.patch_size:
            raise ValueError(
                f"reconstruct: image size {h}x{w} is not divisible by the patch "
                f"size {self.patch_size}"
            )
        if images.min() < 0.0 or images.max() > 1.0:
            raise ValueError("reconstruct: images must be float in [0, 1]")
        batched = jax.tree.map(lambda x: x[None], cams)  # a batch of one sample
        g = self._apply(self.params, images[None], times[None], batched)
        return g.take(0)

    def _render_one(self, g, camera, t, background, filters: bool):
        if filters:
            g = apply_filters(g, t)
        return gaussians.render_4d(
            g, camera, t, background=background, **lrm4d_model.render_options(self.config.model)
        )

    def render(
        self,
        g4d: Gaussians4D,
        camera: Camera,
        t: float,
        background=(1.0, 1.0, 1.0),
        filters: bool = False,
    ) -> gaussians.RenderOutput:
        """Renders one view at time t (`.rgb` [H, W, 3], `.alpha`, `.depth`, `.stats`).
        `filters` applies the paper's inference filters."""
        return self._render(
            g4d, camera, jnp.float32(t), jnp.asarray(background, jnp.float32), filters=filters
        )

    def render_views(self, g4d, cameras: Camera, times, filters: bool = False) -> np.ndarray:
        """Stacked cameras [V] and times [V] -> rgb [V, H, W, 3] (numpy)."""
        out = [
            self.render(
                g4d, jax.tree.map(lambda x, i=i: x[i], cameras), float(t), filters=filters
            ).rgb
            for i, t in enumerate(np.asarray(times))
        ]
        return np.stack([np.asarray(o) for o in out])


def keep_mask(g: Gaussians4D, t, min_marginal: float = 0.05, min_opacity: float = 0.05):
    """Paper inference filters at time t: keep p(t) >= 0.05 and opacity·p(t) >= 0.05."""
    sliced = slice_at(g, t)
    return (sliced.marginal_t >= min_marginal) & (sliced.opacities >= min_opacity)


def apply_filters(g: Gaussians4D, t, min_marginal: float = 0.05, min_opacity: float = 0.05):
    """Zeroes the opacity of filtered Gaussians (static shapes; they then never contribute)."""
    keep = keep_mask(g, t, min_marginal, min_opacity)
    return g.replace(opacities=jnp.where(keep, g.opacities, 0.0))


def load(workdir: str) -> LRM4DModel:
    """Loads `workdir/config.json` and the params of the newest checkpoint in the workdir."""
    cfg_path = os.path.join(workdir, "config.json")
    if not os.path.isfile(cfg_path):
        raise FileNotFoundError(f"{cfg_path} not found: is {workdir!r} a training workdir?")
    with open(cfg_path) as f:
        config = ml_collections.ConfigDict(json.load(f))
    if config.get("task") != "lrm4d":
        raise ValueError(f"{cfg_path}: task is {config.get('task')!r}, not 'lrm4d'")
    module = lrm4d_model.build(config)
    inputs = lrm4d_model.example_inputs(config)
    shapes = jax.eval_shape(lambda rng: lrm4d_model.init(module, rng, *inputs), jax.random.key(0))
    dev = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    dtype = jnp.dtype(config.precision.param_dtype)
    abstract = jax.tree.map(
        lambda a: jax.ShapeDtypeStruct(a.shape, dtype, sharding=dev), sharding.unbox(shapes)
    )
    _, params = ckpt_lib.load_params(workdir, abstract)
    return LRM4DModel(config, params)
