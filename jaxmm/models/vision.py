"""Vision side of the VLM: a SigLIP/ViT-style image encoder, a LLaVA-style projector into the
LM width, video as a budgeted sequence of frames, and the splice of image features into the
text embedding sequence at `<image>` placeholder tokens.

Encoder: conv patch embedding + learned position embeddings (no class token), pre-LN blocks
(LayerNorm -> MHA -> residual, LayerNorm -> GELU(tanh) MLP -> residual), final LayerNorm;
parameter names follow transformers' `SiglipVisionModel` so `siglip_params_from_hf` is a
name map. Images are NHWC float arrays already resized and normalised by the caller.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxmm.models.llm import LLM, KVCache, LLMConfig
from jaxmm.nn.attention import attention


@dataclasses.dataclass(frozen=True)
class VisionConfig:
    image_size: int = 224
    patch_size: int = 14
    num_channels: int = 3
    hidden_size: int = 768
    intermediate_size: int = 3072
    num_layers: int = 12
    num_heads: int = 12
    layer_norm_eps: float = 1e-6
    dtype: str = "float32"
    param_dtype: str = "float32"
    attention_impl: str = "auto"
    # None: the final LayerNorm's output (SigLIP's last_hidden_state). An int k: transformers'
    # `hidden_states[k]` (0 = patch + position embeddings, i = after block i, -1 = after the
    # last block), without the final LayerNorm, as LLaVA's `vision_feature_layer` reads it.
    feature_layer: int | None = None

    def __post_init__(self):
        if self.image_size % self.patch_size:
            raise ValueError(
                f"VisionConfig: image_size {self.image_size} is not a multiple of "
                f"patch_size {self.patch_size}"
            )
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"VisionConfig: hidden_size {self.hidden_size} is not a multiple of "
                f"num_heads {self.num_heads}"
            )
        n = self.num_layers
        if self.feature_layer is not None and not -(n + 1) <= self.feature_layer <= n:
            raise ValueError(
                f"VisionConfig: feature_layer {self.feature_layer} is outside [-{n + 1}, {n}]"
            )

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    @classmethod
    def from_hf(cls, hf: Mapping[str, Any], **overrides) -> VisionConfig:
        """From a SigLIP vision config dict (or a full SigLIP config's `vision_config`)."""
        hf = hf.get("vision_config", hf)
        act = hf.get("hidden_act", "gelu_pytorch_tanh")
        if act != "gelu_pytorch_tanh":
            raise ValueError(f"vision hidden_act={act!r} is not supported (gelu_pytorch_tanh)")
        fields = dict(
            image_size=hf["image_size"],
            patch_size=hf["patch_size"],
            num_channels=hf.get("num_channels", 3),
            hidden_size=hf["hidden_size"],
            intermediate_size=hf["intermediate_size"],
            num_layers=hf["num_hidden_layers"],
            num_heads=hf["num_attention_heads"],
            layer_norm_eps=hf.get("layer_norm_eps", 1e-6),
        )
        return cls(**{**fields, **overrides})


def dense(cfg: VisionConfig, features: int, axes: tuple[str, str], name: str) -> nn.Dense:
    return nn.Dense(
        features,
        dtype=jnp.dtype(cfg.dtype),
        param_dtype=jnp.dtype(cfg.param_dtype),
        kernel_init=nn.with_logical_partitioning(nn.initializers.lecun_normal(), axes),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros, axes[1:]),
        name=name,
    )


def layer_norm(cfg: VisionConfig, name: str) -> nn.LayerNorm:
    return nn.LayerNorm(
        epsilon=cfg.layer_norm_eps,
        dtype=jnp.dtype(cfg.dtype),
        param_dtype=jnp.dtype(cfg.param_dtype),
        scale_init=nn.with_logical_partitioning(nn.initializers.ones, ("embed",)),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)),
        name=name,
    )


class VisionBlock(nn.Module):
    """SigLIP's pre-LN block. `config` is a VisionConfig or any config with the same
    hidden_size / intermediate_size / num_heads / layer_norm_eps / dtype / param_dtype /
    attention_impl fields (`jaxmm.models.siglip.SiglipTextConfig`: the text tower's blocks)."""

    config: VisionConfig

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        cfg = self.config
        b, n, e = x.shape
        h = cfg.num_heads
        y = layer_norm(cfg, "layer_norm1")(x)
        q, k, v = (
            dense(cfg, e, ("embed", "heads"), f"{p}_proj")(y).reshape(b, n, h, e // h)
            for p in "qkv"
        )
        y = attention(q, k, v, impl=cfg.attention_impl).reshape(b, n, e)
        x = x + dense(cfg, e, ("heads", "embed"), "out_proj")(y)
        y = layer_norm(cfg, "layer_norm2")(x)
        y = nn.gelu(dense(cfg, cfg.intermediate_size, ("embed", "mlp"), "fc1")(y), approximate=True)
        x = x + dense(cfg, e, ("mlp", "embed"), "fc2")(y)
        return nn.with_logical_constraint(x, ("batch", "seq", "embed"))


class VisionEncoder(nn.Module):
    """Images [B, H, W, C] -> patch features [B, num_patches, hidden]."""

    config: VisionConfig

    @nn.compact
    def __call__(self, images: jax.Array) -> jax.Array:
        cfg = self.config
        want = (cfg.image_size, cfg.image_size, cfg.num_channels)
        if images.ndim != 4 or images.shape[1:] != want:
            raise ValueError(f"VisionEncoder: images {images.shape} must be [B, *{want}] (NHWC)")
        p = cfg.patch_size
        x = nn.Conv(
            cfg.hidden_size,
            (p, p),
            strides=(p, p),
            padding="VALID",
            dtype=jnp.dtype(cfg.dtype),
            param_dtype=jnp.dtype(cfg.param_dtype),
            kernel_init=nn.with_logical_partitioning(
                nn.initializers.lecun_normal(), (None, None, None, "embed")
            ),
            bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)),
            name="patch_embedding",
        )(images.astype(cfg.dtype))
        x = x.reshape(x.shape[0], -1, cfg.hidden_size)
        pos = self.param(
            "position_embedding",
            nn.with_logical_partitioning(nn.initializers.normal(0.02), (None, "embed")),
            (cfg.num_patches, cfg.hidden_size),
            jnp.dtype(cfg.param_dtype),
        )
        x = nn.with_logical_constraint(x + pos.astype(x.dtype), ("batch", "seq", "embed"))
        hidden_states = [x]
        for i in range(cfg.num_layers):
            x = VisionBlock(cfg, name=f"layers_{i}")(x)
            hidden_states.append(x)
        if cfg.feature_layer is not None:
            return hidden_states[cfg.feature_layer]
        return layer_norm(cfg, "post_layernorm")(x)


class Projector(nn.Module):
    """LLaVA-1.5 projector: Linear -> GELU -> Linear, vision width -> LM width."""

    out_features: int
    dtype: str = "float32"
    param_dtype: str = "float32"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        dense = lambda name, axes: nn.Dense(
            self.out_features,
            dtype=jnp.dtype(self.dtype),
            param_dtype=jnp.dtype(self.param_dtype),
            kernel_init=nn.with_logical_partitioning(nn.initializers.lecun_normal(), axes),
            bias_init=nn.with_logical_partitioning(nn.initializers.zeros, axes[1:]),
            name=name,
        )
        x = nn.gelu(dense("linear_1", (None, "embed"))(x), approximate=False)
        return dense("linear_2", ("mlp", "embed"))(x)


def sample_frame_indices(num_frames: int, budget: int) -> np.ndarray:
    """Uniform frame sampling: all frames when they fit, else the centre of each of `budget`
    equal-length segments (sorted, distinct, first/last segments both represented)."""
    if num_frames < 1 or budget < 1:
        raise ValueError(
            f"sample_frame_indices: num_frames={num_frames} and budget={budget} must be >= 1"
        )
    if num_frames <= budget:
        return np.arange(num_frames)
    return np.floor((np.arange(budget) + 0.5) * num_frames / budget).astype(np.int64)


def expand_image_placeholders(
    token_ids: Sequence[int], image_token_id: int, tokens_per_image: int
) -> list[int]:
    """Replaces each `<image>` token by `tokens_per_image` copies (one slot per patch feature),
    as the LLaVA processors do before the model sees the ids."""
    out: list[int] = []
    for t in token_ids:
        out.extend([t] * tokens_per_image if t == image_token_id else [t])
    return out


def splice_image_features(
    tokens: jax.Array, text_embeds: jax.Array, image_features: jax.Array, image_token_id: int
) -> jax.Array:
    """Puts image features [B, K, E] at the placeholder positions of tokens [B, T], in order:
    the k-th `image_token_id` of row b receives image_features[b, k]. Rows must hold exactly K
    placeholders (`expand_image_placeholders`); other positions keep their text embedding."""
    is_image = tokens == image_token_id
    slot = jnp.clip(jnp.cumsum(is_image, axis=1) - 1, 0, image_features.shape[1] - 1)
    gathered = jnp.take_along_axis(image_features, slot[..., None], axis=1)
    return jnp.where(is_image[..., None], gathered.astype(text_embeds.dtype), text_embeds)


class VLM(nn.Module):
    """LLaVA-style vision-language model: encoder -> projector -> spliced into the LM input.

    `images` [B, N_img, H, W, C] (a video is its sampled frames, N_img = frame budget); every
    row's tokens carry N_img * num_patches `image_token_id` placeholders. With a KV cache,
    pass images only with the chunk that holds the placeholders (prefill).
    """

    lm_config: LLMConfig
    vision_config: VisionConfig
    image_token_id: int

    def setup(self):
        self.vision = VisionEncoder(self.vision_config)
        self.projector = Projector(
            self.lm_config.hidden_size, self.lm_config.dtype, self.lm_config.param_dtype
        )
        self.lm = LLM(self.lm_config)

    def encode_images(self, images: jax.Array) -> jax.Array:
        """[B, N_img, H, W, C] -> projected features [B, N_img * num_patches, lm hidden]."""
        b, n_img = images.shape[:2]
        feats = self.vision(images.reshape(b * n_img, *images.shape[2:]))
        feats = self.projector(feats)
        return feats.reshape(b, n_img * feats.shape[1], feats.shape[2])

    def __call__(
        self,
        tokens: jax.Array,
        positions: jax.Array | None = None,
        images: jax.Array | None = None,
        cache: KVCache | None = None,
        segment_ids: jax.Array | None = None,
        attention_mask: jax.Array | None = None,
        *,
        deterministic: bool = True,
    ) -> tuple[jax.Array, KVCache | None]:
        embeds = self.lm.embed(tokens)
        if images is not None:
            if images.ndim != 5:
                raise ValueError(f"VLM: images {images.shape} must be [B, N_img, H, W, C]")
            feats = self.encode_images(images)
            embeds = splice_image_features(tokens, embeds, feats, self.image_token_id)
        return self.lm(
            tokens,
            positions,
            cache,
            segment_ids,
            attention_mask,
            inputs_embeds=embeds,
            deterministic=deterministic,
        )


def siglip_params_from_hf(
    state: Mapping[str, np.ndarray], config: VisionConfig, prefix: str | None = None
) -> dict:
    """transformers SiglipVisionModel state dict (numpy) -> VisionEncoder params.

    `prefix` defaults to "vision_model." when the keys carry it (SigLIP/LLaVA checkpoints),
    else "" (a bare SiglipVisionModel state dict)."""
    if prefix is None:
        prefix = "vision_model." if any(k.startswith("vision_model.") for k in state) else ""

    def get(name: str) -> np.ndarray:
        key = prefix + name
        if key not in state:
            raise ValueError(f"SigLIP state dict is missing {key!r}")
        return np.asarray(state[key], np.float32)

    def norm(name):
        return {"scale": get(f"{name}.weight"), "bias": get(f"{name}.bias")}

    params: dict[str, Any] = {
        "patch_embedding": {
            "kernel": get("embeddings.patch_embedding.weight").transpose(2, 3, 1, 0),
            "bias": get("embeddings.patch_embedding.bias"),
        },
        "position_embedding": get("embeddings.position_embedding.weight"),
        "post_layernorm": norm("post_layernorm"),
    }
    params |= siglip_blocks_from_hf(get, config.num_layers)
    return jax.tree.map(jnp.asarray, params)


def siglip_blocks_from_hf(get: Callable[[str], np.ndarray], num_layers: int) -> dict:
    """`encoder.layers.{i}.*` -> `layers_{i}` params of `VisionBlock` (SigLIP's vision and text
    towers share the block); `get(name)` returns the float32 tensor of an HF name."""

    def dense(name):
        return {"kernel": get(f"{name}.weight").T, "bias": get(f"{name}.bias")}

    def norm(name):
        return {"scale": get(f"{name}.weight"), "bias": get(f"{name}.bias")}

    params = {}
    for i in range(num_layers):
        hf = f"encoder.layers.{i}"
        params[f"layers_{i}"] = {
            "layer_norm1": norm(f"{hf}.layer_norm1"),
            "layer_norm2": norm(f"{hf}.layer_norm2"),
            "fc1": dense(f"{hf}.mlp.fc1"),
            "fc2": dense(f"{hf}.mlp.fc2"),
            **{f"{p}_proj": dense(f"{hf}.self_attn.{p}_proj") for p in "qkv"},
            "out_proj": dense(f"{hf}.self_attn.out_proj"),
        }
    return params
