"""4D-LRM around the network: config -> module, posed images -> Gaussians -> rendered views.

The one path from cameras to model inputs: a `Camera` (stacked over views) gives the pixel
rays (`gaussians.camera.rays`), the network turns images, times and rays into 4D Gaussians, and
`render_views` renders them with the settings of `render_options(config.model)`
(`render_scenes`: a batch of scenes, one batch shard per device under a mesh). Training
(`jaxmm.tasks.lrm4d`) and inference (`jaxmm.lrm4d`) both call these functions.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from jaxmm import gaussians, sharding
from jaxmm.gaussians.camera import Camera, rays
from jaxmm.gaussians.params import Gaussians4D
from jaxmm.models.lrm4d.network import LRM4D, from_config


def model_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """`config.model` with the run's compute / param dtypes folded in."""
    m = ml_collections.ConfigDict(config.model.to_dict())
    with m.unlocked():
        m.compute_dtype = config.precision.compute_dtype
        m.param_dtype = config.precision.param_dtype
    return m


def build(config: ml_collections.ConfigDict) -> LRM4D:
    """The network of an experiment config (`configs/lrm4d.py`)."""
    return from_config(model_config(config))


def example_inputs(
    config: ml_collections.ConfigDict, batch: int = 1
) -> tuple[jax.Array, jax.Array, Camera]:
    """Zero images [B, V, S, S, 3], times [B, V] and cameras [B, V] of the config's shapes
    (what `init` traces; the parameters do not depend on the values)."""
    v, s = config.data.num_input_views, config.data.image_size
    c2w = jnp.broadcast_to(jnp.eye(4).at[2, 3].set(-2.5), (batch, v, 4, 4))
    intr = jnp.broadcast_to(jnp.array([s, s, s / 2, s / 2], jnp.float32), (batch, v, 4))
    cameras = Camera.from_intrinsics(c2w, intr, width=s, height=s)
    return jnp.zeros((batch, v, s, s, 3)), jnp.zeros((batch, v)), cameras


def init(module: LRM4D, rng: jax.Array, images, times, cameras: Camera) -> Any:
    """Parameters (logically partitioned) for inputs shaped like images [B, V, H, W, 3]."""
    origins, dirs = rays(cameras)
    return module.init(rng, images, times, origins, dirs)["params"]


def reconstruct(module: LRM4D, params: Any, images, times, cameras: Camera) -> Gaussians4D:
    """images [B, V, H, W, 3] in [0, 1], times [B, V], cameras with leaves [B, V] ->
    Gaussians [B, N] (one per input pixel, plus the free Gaussians)."""
    origins, dirs = rays(cameras)
    g, _ = module.apply({"params": params}, images, times, origins, dirs)
    return g


def render_options(model_cfg: ml_collections.ConfigDict) -> dict:
    """`gaussians.render*` options from `config.model.renderer`.

    "dense": the small-image compositor (`impl="dense"`, 8×8 tiles, the nearest
    `render_capacity` Gaussians per tile, 0 = all); "splat": the tiled rasteriser (Pallas on GPU).
    """
    renderer = model_cfg.renderer
    if renderer == "dense":
        return dict(impl="dense", tile_size=8, max_per_tile=model_cfg.render_capacity or None)
    if renderer == "splat":
        return dict(impl="auto")
    raise ValueError(f"config.model.renderer must be 'dense' or 'splat', got {renderer!r}")


def render_views(g: Gaussians4D, cameras: Camera, times, **render_kw) -> jax.Array:
    """One sample's Gaussians [N] -> rgb [V, H, W, 3] for V stacked cameras at times [V].
    `render_kw` go to `gaussians.render_batch` (e.g. views_per_step, checkpoint: one
    checkpointed group of views at a time bounds memory by one group, not V views)."""
    return gaussians.render_batch(g, cameras, times, **render_kw).rgb


def render_scenes(g: Gaussians4D, cameras: Camera, times, **render_kw) -> jax.Array:
    """A batch of B samples' Gaussians [B, N] -> rgb [B, V, H, W, 3] (cameras [B, V], times
    [B, V]): `render_views` vmapped over the batch.

    Under a mesh (`jax.set_mesh`, as in the trainer's step) the batch is split over the mesh
    axes of the logical `batch` axis with `sharding.shard_map_batch`, so each device renders
    only its own scenes: the Pallas rasteriser has no partitioning rule and GSPMD would
    otherwise replicate it, every device rendering the whole global batch. Without a mesh, or
    with one device on the batch axes, this is the plain vmap.
    """
    per_scene = lambda g1, cams, t: render_views(g1, cams, t, **render_kw)  # noqa: E731
    return sharding.shard_map_batch(jax.vmap(per_scene))(g, cameras, times)
