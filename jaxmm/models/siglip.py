"""SigLIP as a dual encoder (transformers' `SiglipModel`): image and text embeddings in one
space, and the sigmoid-loss logits `cos * exp(logit_scale) + logit_bias`.

Vision: `jaxmm.models.vision.VisionEncoder` (patches -> blocks -> post LayerNorm), then the
attention-pooling head (`SiglipMultiheadAttentionPoolingHead`: a learned probe attends over the
patches, then LayerNorm -> MLP with a residual). Text: token + position embeddings, the same
pre-LN blocks (`VisionBlock`, no attention mask: SigLIP's processor pads to `max_length` and
the model attends to the pads, as it was trained), final LayerNorm, then the linear `head` on
the LAST position (a pad when the text is shorter than `max_length`), as
`SiglipTextModel` pools. Both embeddings are L2-normalised.

`SiglipModel.from_hf(folder)` reads config.json + model.safetensors (names and shapes
checked, each failure a ValueError naming the tensor), `preprocessor_config.json` when
present (else SigLIP's defaults: resize to image_size, rescale 1/255, mean = std = 0.5), and
the folder's tokenizer through transformers' AutoTokenizer when it has one.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxmm.io.state_dict import SafetensorsShards
from jaxmm.models.vision import (
    VisionBlock,
    VisionConfig,
    VisionEncoder,
    dense,
    layer_norm,
    siglip_blocks_from_hf,
    siglip_params_from_hf,
)
from jaxmm.nn.attention import attention

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "spiece.model")
PIL_BICUBIC = 3  # PIL.Image.Resampling.BICUBIC, SiglipImageProcessor's default `resample`


@dataclasses.dataclass(frozen=True)
class SiglipTextConfig:
    vocab_size: int = 32000
    hidden_size: int = 768
    intermediate_size: int = 3072
    num_layers: int = 12
    num_heads: int = 12
    max_position_embeddings: int = 64
    projection_size: int = 768
    layer_norm_eps: float = 1e-6
    dtype: str = "float32"
    param_dtype: str = "float32"
    attention_impl: str = "auto"

    def __post_init__(self):
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"SiglipTextConfig: hidden_size {self.hidden_size} is not a multiple of "
                f"num_heads {self.num_heads}"
            )

    @classmethod
    def from_hf(cls, hf: Mapping[str, Any], **overrides) -> SiglipTextConfig:
        """From a SigLIP text config dict (or a full SigLIP config's `text_config`)."""
        hf = hf.get("text_config", hf)
        act = hf.get("hidden_act", "gelu_pytorch_tanh")
        if act != "gelu_pytorch_tanh":
            raise ValueError(f"text hidden_act={act!r} is not supported (gelu_pytorch_tanh)")
        fields = dict(
            vocab_size=hf["vocab_size"],
            hidden_size=hf["hidden_size"],
            intermediate_size=hf["intermediate_size"],
            num_layers=hf["num_hidden_layers"],
            num_heads=hf["num_attention_heads"],
            max_position_embeddings=hf.get("max_position_embeddings", 64),
            projection_size=hf.get("projection_size") or hf["hidden_size"],
            layer_norm_eps=hf.get("layer_norm_eps", 1e-6),
        )
        return cls(**{**fields, **overrides})


class AttentionPoolingHead(nn.Module):
    """Patch features [B, N, E] -> [B, E]: `SiglipMultiheadAttentionPoolingHead`."""

    config: VisionConfig

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        cfg = self.config
        b, n, e = x.shape
        h = cfg.num_heads
        probe = self.param(
            "probe",
            nn.with_logical_partitioning(nn.initializers.normal(1.0), (None, None, "embed")),
            (1, 1, e),
            jnp.dtype(cfg.param_dtype),
        )
        q = dense(cfg, e, ("embed", "heads"), "q_proj")(jnp.broadcast_to(probe, (b, 1, e)))
        k, v = (dense(cfg, e, ("embed", "heads"), f"{p}_proj")(x) for p in "kv")
        y = attention(
            q.reshape(b, 1, h, e // h),
            k.reshape(b, n, h, e // h),
            v.reshape(b, n, h, e // h),
            impl=cfg.attention_impl,
        ).reshape(b, 1, e)
        y = dense(cfg, e, ("heads", "embed"), "out_proj")(y)
        z = layer_norm(cfg, "layernorm")(y)
        z = nn.gelu(dense(cfg, cfg.intermediate_size, ("embed", "mlp"), "fc1")(z), approximate=True)
        return (y + dense(cfg, e, ("mlp", "embed"), "fc2")(z))[:, 0]


class TextTower(nn.Module):
    """Token ids [B, T] (T <= max_position_embeddings) -> pooled [B, projection_size]."""

    config: SiglipTextConfig

    @nn.compact
    def __call__(self, tokens: jax.Array) -> jax.Array:
        cfg = self.config
        if tokens.ndim != 2 or tokens.shape[1] > cfg.max_position_embeddings:
            raise ValueError(
                f"TextTower: tokens {tokens.shape} must be [B, T<={cfg.max_position_embeddings}]"
            )
        emb = lambda name, rows: self.param(
            name,
            nn.with_logical_partitioning(nn.initializers.normal(0.02), (None, "embed")),
            (rows, cfg.hidden_size),
            jnp.dtype(cfg.param_dtype),
        )
        x = emb("token_embedding", cfg.vocab_size)[tokens]
        x = x + emb("position_embedding", cfg.max_position_embeddings)[: tokens.shape[1]]
        x = x.astype(cfg.dtype)
        for i in range(cfg.num_layers):
            x = VisionBlock(cfg, name=f"layers_{i}")(x)
        x = layer_norm(cfg, "final_layer_norm")(x)
        return dense(cfg, cfg.projection_size, ("embed", "mlp"), "head")(x[:, -1])


def _l2_normalise(x: jax.Array) -> jax.Array:
    x = x.astype(jnp.float32)
    return x / jnp.linalg.norm(x, axis=-1, keepdims=True)


class Siglip(nn.Module):
    """The dual encoder: `image_embeds`, `text_embeds` (L2-normalised) and `__call__` ->
    logits_per_image [B_img, B_text]."""

    text: SiglipTextConfig
    vision: VisionConfig

    def setup(self):
        self.vision_model = VisionEncoder(self.vision)
        self.head = AttentionPoolingHead(self.vision)
        self.text_model = TextTower(self.text)
        self.logit_scale = self.param("logit_scale", nn.initializers.zeros, (1,))
        self.logit_bias = self.param("logit_bias", nn.initializers.zeros, (1,))

    def image_embeds(self, images: jax.Array) -> jax.Array:
        return _l2_normalise(self.head(self.vision_model(images)))

    def text_embeds(self, tokens: jax.Array) -> jax.Array:
        return _l2_normalise(self.text_model(tokens))

    def __call__(self, images: jax.Array, tokens: jax.Array) -> jax.Array:
        cos = self.image_embeds(images) @ self.text_embeds(tokens).T
        return cos * jnp.exp(self.logit_scale) + self.logit_bias


def params_from_hf(
    state: Mapping[str, np.ndarray], text: SiglipTextConfig, vision: VisionConfig
) -> dict:
    """transformers `SiglipModel` state dict (numpy) -> `Siglip` params (names checked; shapes
    are checked by `SiglipModel.from_hf`)."""

    def get(name: str) -> np.ndarray:
        if name not in state:
            raise ValueError(f"SigLIP state dict is missing {name!r}")
        return np.asarray(state[name], np.float32)

    def under(prefix):
        return lambda name: get(prefix + name)

    def lin(g, name):
        return {"kernel": g(f"{name}.weight").T, "bias": g(f"{name}.bias")}

    def norm(g, name):
        return {"scale": g(f"{name}.weight"), "bias": g(f"{name}.bias")}

    h = under("vision_model.head.")
    e = vision.hidden_size
    w, bias = h("attention.in_proj_weight"), h("attention.in_proj_bias")  # [3E, E], [3E]
    head = {
        "probe": h("probe"),
        **{
            f"{p}_proj": {"kernel": w[i * e : (i + 1) * e].T, "bias": bias[i * e : (i + 1) * e]}
            for i, p in enumerate("qkv")
        },
        "out_proj": lin(h, "attention.out_proj"),
        "layernorm": norm(h, "layernorm"),
        "fc1": lin(h, "mlp.fc1"),
        "fc2": lin(h, "mlp.fc2"),
    }
    t = under("text_model.")
    text_params = {
        "token_embedding": t("embeddings.token_embedding.weight"),
        "position_embedding": t("embeddings.position_embedding.weight"),
        "final_layer_norm": norm(t, "final_layer_norm"),
        "head": lin(t, "head"),
        **siglip_blocks_from_hf(t, text.num_layers),
    }
    vision_params = siglip_params_from_hf(state, vision, prefix="vision_model.")
    return {
        "vision_model": jax.tree.map(np.asarray, vision_params),
        "head": head,
        "text_model": text_params,
        "logit_scale": get("logit_scale").reshape(1),
        "logit_bias": get("logit_bias").reshape(1),
    }


def check_shapes(params: dict, module: Siglip, where: str) -> None:
    """ValueError naming the first param whose shape differs from what the configs imply."""
    want = jax.eval_shape(
        module.init,
        jax.random.key(0),
        jnp.zeros((1, module.vision.image_size, module.vision.image_size, 3)),
        jnp.zeros((1, module.text.max_position_embeddings), jnp.int32),
    )["params"]
    want = nn.meta.unbox(want)
    flat_want = dict(jax.tree_util.tree_flatten_with_path(want)[0])
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        name = jax.tree_util.keystr(path)
        if path not in flat_want:
            raise ValueError(f"{where}: unexpected param {name}")
        if tuple(leaf.shape) != tuple(flat_want[path].shape):
            raise ValueError(
                f"{where}: param {name} has shape {tuple(leaf.shape)}, the config implies "
                f"{tuple(flat_want[path].shape)}"
            )
    got = {path for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]}
    missing = [jax.tree_util.keystr(p) for p in flat_want if p not in got]
    if missing:
        raise ValueError(f"{where}: params {missing} are not filled from the checkpoint")


@dataclasses.dataclass(frozen=True)
class Preprocess:
    """`SiglipImageProcessor`'s steps for uint8 frames: resize (PIL, `resample`) to
    size x size, times `rescale_factor`, then (x - mean) / std per channel."""

    size: int
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    rescale_factor: float = 1 / 255
    resample: int = PIL_BICUBIC

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        """uint8 [F, H, W, 3] -> float32 [F, size, size, 3]."""
        frames = np.asarray(frames)
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise ValueError(
                f"frames must be uint8 [F, H, W, 3], got {frames.dtype} {frames.shape}"
            )
        if frames.shape[1:3] != (self.size, self.size):
            from PIL import Image

            frames = np.stack(
                [
                    np.asarray(Image.fromarray(f).resize((self.size, self.size), self.resample))
                    for f in frames
                ]
            )
        x = frames.astype(np.float32) * np.float32(self.rescale_factor)
        return (x - np.float32(self.mean)) / np.float32(self.std)

    @classmethod
    def from_hf(cls, folder: str, image_size: int) -> Preprocess:
        path = os.path.join(folder, "preprocessor_config.json")
        if not os.path.exists(path):
            return cls(image_size)
        with open(path) as f:
            hf = json.load(f)
        size = hf.get("size") or {}
        h, w = size.get("height", image_size), size.get("width", image_size)
        if h != w or h != image_size:
            raise ValueError(f"{path}: size {size} must be {image_size} x {image_size}")
        for key, default in (("do_resize", True), ("do_rescale", True), ("do_normalize", True)):
            if hf.get(key, default) is not True:
                raise ValueError(f"{path}: {key}={hf[key]!r} is not supported (only true)")
        return cls(
            image_size,
            tuple(hf.get("image_mean", cls.mean)),
            tuple(hf.get("image_std", cls.std)),
            hf.get("rescale_factor", 1 / 255),
            hf.get("resample", PIL_BICUBIC),
        )


@dataclasses.dataclass(frozen=True)
class SiglipModel:
    """A loaded SigLIP folder: configs, params, preprocessing and (optional) tokenizer."""

    text_config: SiglipTextConfig
    vision_config: VisionConfig
    params: dict
    preprocess: Preprocess
    tokenizer: Any = None

    @classmethod
    def from_hf(cls, folder: str | os.PathLike, attention_impl: str = "auto") -> SiglipModel:
        folder = os.fspath(folder)
        path = os.path.join(folder, "config.json")
        if not os.path.exists(path):
            raise FileNotFoundError(f"SigLIP folder {folder!r} has no config.json")
        with open(path) as f:
            hf = json.load(f)
        if hf.get("model_type") != "siglip":
            raise ValueError(f"{path}: model_type={hf.get('model_type')!r} is not 'siglip'")
        if not hf["vision_config"].get("vision_use_head", True):
            raise ValueError(f"{path}: vision_config.vision_use_head=false: no pooled embedding")
        text = SiglipTextConfig.from_hf(hf["text_config"], attention_impl=attention_impl)
        vision = VisionConfig.from_hf(hf["vision_config"], attention_impl=attention_impl)
        with SafetensorsShards.of_folder(folder, SINGLE_FILE, INDEX_FILE) as tensors:
            state = {n: tensors.get(n) for n in tensors}
        params = params_from_hf(state, text, vision)
        check_shapes(params, Siglip(text, vision), folder)
        tokenizer = None
        if any(os.path.exists(os.path.join(folder, n)) for n in TOKENIZER_FILES):
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(folder)
        params = jax.tree.map(jnp.asarray, params)
        return cls(text, vision, params, Preprocess.from_hf(folder, vision.image_size), tokenizer)

    @functools.cached_property
    def _apply(self):
        module = Siglip(self.text_config, self.vision_config)
        return {
            name: jax.jit(functools.partial(module.apply, method=name))
            for name in ("image_embeds", "text_embeds", "__call__")
        }

    def tokenize(self, texts: Sequence[str]) -> np.ndarray:
        """int32 [B, max_position_embeddings]: padded to max_length, as SigLIP was trained."""
        if self.tokenizer is None:
            raise ValueError("this SigLIP folder has no tokenizer; pass token ids instead")
        n = self.text_config.max_position_embeddings
        ids = self.tokenizer(list(texts), padding="max_length", max_length=n, truncation=True)
        return np.asarray(ids["input_ids"], np.int32)

    def image_embeds(self, images: np.ndarray, batch: int = 64) -> np.ndarray:
        """Preprocessed images float [B, S, S, 3] -> L2-normalised [B, E], `batch` at a time
        (the last chunk zero-padded to `batch` when B > batch, so one compiled shape serves
        every clip length)."""
        images = np.asarray(images, np.float32)
        if len(images) <= batch:
            return np.asarray(self._apply["image_embeds"]({"params": self.params}, images))
        out = []
        for i in range(0, len(images), batch):
            chunk = images[i : i + batch]
            padded = np.concatenate(
                [chunk, np.zeros((batch - len(chunk), *chunk.shape[1:]), chunk.dtype)]
            )
            emb = self._apply["image_embeds"]({"params": self.params}, padded)
            out.append(np.asarray(emb)[: len(chunk)])
        return np.concatenate(out)

    def frame_embeds(self, frames: np.ndarray, batch: int = 64) -> np.ndarray:
        """uint8 frames [F, H, W, 3] -> L2-normalised [F, E] (preprocessing included)."""
        return self.image_embeds(self.preprocess(frames), batch)

    def text_embeds(self, token_ids: np.ndarray) -> np.ndarray:
        return np.asarray(self._apply["text_embeds"]({"params": self.params}, token_ids))

    def logits_per_image(self, images: np.ndarray, token_ids: np.ndarray) -> np.ndarray:
        return np.asarray(self._apply["__call__"]({"params": self.params}, images, token_ids))
