"""4D-LRM (arXiv 2506.18890): posed images at arbitrary times -> one 4D Gaussian per pixel.

Input per pixel, 10 channels in the paper's order: RGB in [-1, 1], time in [-1, 1], ray
direction d, the ray's point closest to the origin o - <o, d> d. Views are cut into 8×8 patches
(640 values), linearly embedded (no positional embedding: rays and time are the only position
signals), the tokens of all views are concatenated and run through a pre-LN transformer. A
LayerNorm and one linear layer map each token back to 8×8 pixels × 20 Gaussian channels:

    xyz 3 | t 1 | rgb 3 | scale_xyz 3 | scale_t 1 | q_left 4 | q_right 4 | opacity 1

activated as in the paper (see `activate`) into `jaxmm.gaussians.Gaussians4D` (leading dims
[B, N]; means = (x, y, z, t), scales = (sx, sy, sz, st)), which the renderer takes directly.
Optional learnable "free Gaussian" tokens get their own 20-channel head; their centre is
predicted directly (clipped to [-1, 1]³).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import Array

from jaxmm.gaussians.params import Gaussians4D
from jaxmm.nn.patchify import patchify, unpatchify
from jaxmm.nn.rays import ray_map
from jaxmm.nn.transformer import INIT_STD, Encoder, layer_norm

NUM_CHANNELS = 20
INPUT_CHANNELS = 10
# Paper constants for the head activations.
DEPTH_NEAR, DEPTH_FAR = 0.1, 4.5
SCALE_BIAS = 2.3
SCALE_XYZ_MAX, SCALE_T_MAX = 0.3, 1.0
OPACITY_BIAS = 2.0


@dataclasses.dataclass(frozen=True)
class LRM4DSize:
    patch_size: int
    width: int
    num_layers: int
    num_heads: int


SIZES: dict[str, LRM4DSize] = {
    "tiny": LRM4DSize(patch_size=8, width=128, num_layers=4, num_heads=4),
    "small": LRM4DSize(patch_size=8, width=512, num_layers=8, num_heads=8),
    "base": LRM4DSize(patch_size=8, width=768, num_layers=12, num_heads=12),
    "large": LRM4DSize(patch_size=8, width=1024, num_layers=24, num_heads=16),
}


def activate(raw: Array, origins: Array | None, directions: Array | None) -> Gaussians4D:
    """Paper activations of the 20 raw channels [..., N, 20].

    With rays (pixel-aligned Gaussians) the centre sits on the pixel's ray at depth
    δ = (1-ω)·0.1 + ω·4.5, ω = sigmoid(mean of the 3 xyz channels); without rays (free
    Gaussians) the 3 channels are the centre itself. Centres are clipped to [-1, 1]³.
    """
    raw = raw.astype(jnp.float32)
    xyz_raw, t_raw, rgb_raw = raw[..., 0:3], raw[..., 3], raw[..., 4:7]
    sxyz_raw, st_raw = raw[..., 7:10], raw[..., 10]
    ql_raw, qr_raw, op_raw = raw[..., 11:15], raw[..., 15:19], raw[..., 19]
    if origins is not None:
        w = jax.nn.sigmoid(jnp.mean(xyz_raw, axis=-1, keepdims=True))
        depth = (1.0 - w) * DEPTH_NEAR + w * DEPTH_FAR
        xyz = origins + depth * directions
    else:
        xyz = xyz_raw
    normalize = lambda q: q / jnp.maximum(jnp.linalg.norm(q, axis=-1, keepdims=True), 1e-12)
    scale_xyz = jnp.minimum(jnp.exp(sxyz_raw - SCALE_BIAS), SCALE_XYZ_MAX)
    scale_t = jnp.minimum(jnp.exp(st_raw - SCALE_BIAS), SCALE_T_MAX)
    return Gaussians4D(
        means=jnp.concatenate([jnp.clip(xyz, -1.0, 1.0), t_raw[..., None]], -1),
        scales=jnp.concatenate([scale_xyz, scale_t[..., None]], -1),
        q_left=normalize(ql_raw),
        q_right=normalize(qr_raw),
        opacities=jax.nn.sigmoid(op_raw - OPACITY_BIAS),
        sh_dc=rgb_raw,
    )


def concat_gaussians(a: Gaussians4D, b: Gaussians4D) -> Gaussians4D:
    return jax.tree.map(lambda x, y: jnp.concatenate([x, y], axis=a.opacities.ndim - 1), a, b)


def input_features(images: Array, times: Array, origins: Array, directions: Array) -> Array:
    """The 10-channel per-pixel input [B, V, H, W, 10].

    images [B, V, H, W, 3] in [0, 1]; times [B, V] in [-1, 1]; rays [B, V, H, W, 3].
    """
    rgb = images * 2.0 - 1.0
    time = jnp.broadcast_to(times[..., None, None, None], (*images.shape[:-1], 1))
    return jnp.concatenate([rgb, time.astype(rgb.dtype), ray_map(origins, directions)], axis=-1)


class LRM4D(nn.Module):
    patch_size: int = 8
    width: int = 128
    num_layers: int = 4
    num_heads: int = 4
    mlp_ratio: int = 4
    num_free_gaussians: int = 0
    remat: bool = False
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    attention_impl: str = "auto"  # jaxmm.nn.attention impl: auto | reference | xla | cudnn | pallas

    @nn.compact
    def __call__(
        self, images: Array, times: Array, origins: Array, directions: Array
    ) -> tuple[Gaussians4D, Array]:
        """Returns (activated Gaussians [B, V·H·W (+free), ...], raw channels [B, N, 20])."""
        if images.ndim != 5 or images.shape[-1] != 3:
            raise ValueError(f"images must be [B, V, H, W, 3], got {images.shape}")
        batch, views, height, width, _ = images.shape
        if times.shape != (batch, views):
            raise ValueError(f"times must be [B, V]={batch, views}, got {times.shape}")
        for name, r in (("origins", origins), ("directions", directions)):
            if r.shape != images.shape:
                raise ValueError(f"{name} must match images {images.shape}, got {r.shape}")
        p = self.patch_size
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)

        feats = input_features(images, times, origins, directions)
        tokens = patchify(feats, p)  # [B, V, P, p*p*10]
        n_patch = tokens.shape[2]
        tokens = tokens.reshape(batch, views * n_patch, p * p * INPUT_CHANNELS)
        x = nn.Dense(
            self.width,
            use_bias=False,
            kernel_init=nn.with_logical_partitioning(
                nn.initializers.normal(INIT_STD), (None, "embed")
            ),
            name="patch_embed",
            **kw,
        )(tokens.astype(self.dtype))
        x = layer_norm(name="ln_in", **kw)(x)
        if self.num_free_gaussians:
            free = self.param(
                "free_tokens",
                nn.with_logical_partitioning(nn.initializers.normal(INIT_STD), (None, "embed")),
                (self.num_free_gaussians, self.width),
                self.param_dtype,
            )
            x = jnp.concatenate(
                [x, jnp.broadcast_to(free.astype(x.dtype), (batch, *free.shape))], axis=1
            )
        x = Encoder(
            self.num_layers,
            self.num_heads,
            self.mlp_ratio,
            self.remat,
            name="encoder",
            attention_impl=self.attention_impl,
            **kw,
        )(x)
        x = layer_norm(name="ln_out", **kw)(x)

        def head(n_out: int, name: str):
            return nn.Dense(
                n_out,
                use_bias=False,
                kernel_init=nn.with_logical_partitioning(
                    nn.initializers.normal(INIT_STD), ("embed", None)
                ),
                name=name,
                **kw,
            )

        pix = head(p * p * NUM_CHANNELS, "gaussian_head")(x[:, : views * n_patch])
        pix = pix.reshape(batch, views, n_patch, p * p * NUM_CHANNELS)
        raw = unpatchify(pix, p, height, width).reshape(batch, views * height * width, NUM_CHANNELS)
        raw = raw.astype(jnp.float32)
        flat = lambda r: r.reshape(batch, views * height * width, 3)
        g = activate(raw, flat(origins), flat(directions))
        if self.num_free_gaussians:
            raw_free = head(NUM_CHANNELS, "free_head")(x[:, views * n_patch :])
            raw_free = raw_free.astype(jnp.float32)
            g = concat_gaussians(g, activate(raw_free, None, None))
            raw = jnp.concatenate([raw, raw_free], axis=1)
        return g, raw


def from_config(model_cfg) -> LRM4D:
    """Builds the module from `config.model` (size name + overrides + dtypes)."""
    size = SIZES[model_cfg.size]
    get = lambda k, d: model_cfg.get(k, d) if model_cfg.get(k, None) is not None else d
    return LRM4D(
        patch_size=get("patch_size", size.patch_size),
        width=get("width", size.width),
        num_layers=get("num_layers", size.num_layers),
        num_heads=get("num_heads", size.num_heads),
        mlp_ratio=get("mlp_ratio", 4),
        num_free_gaussians=get("num_free_gaussians", 0),
        remat=get("remat", False),
        dtype=jnp.dtype(get("compute_dtype", "float32")),
        param_dtype=jnp.dtype(get("param_dtype", "float32")),
    )
