"""CLaMR (arXiv 2506.06144): a multimodal late-interaction encoder over video frames + text.

    hidden = backbone(token ids, mask, frames)   # frames spliced in where modality id == 1
    emb    = L2norm(Linear_dim(hidden)) * keep   # keep: query mask / doc modality id > 0

Why a backbone interface: the paper's encoder is Qwen2.5-VL (vision tokens spliced into the
text sequence at placeholder positions). Any Flax module with the `Backbone` call signature
and a `hidden_size` field plugs in; here `MiniLMBackbone` = the real all-MiniLM-L6-v2 BERT
plus a small trainable frame patch embedder, so the method trains on CPU. A Qwen2.5-VL
backbone is not implemented yet (`configs/clamr.py:paper` raises NotImplementedError).

Scoring is not here: per-modality MaxSim is `kernels_pallas.maxsim.maxsim_modality`.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Protocol

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxmm.io.state_dict import load_state_dict
from jaxmm.models.clamr_inputs import VIDEO
from jaxmm.models.text_encoder import BertConfig, BertEncoder, hf_to_flax
from jaxmm.nn.patchify import patchify


class Backbone(Protocol):
    """What CLaMR needs from an encoder (a Flax module): last hidden states of a token sequence
    whose `visual_mask` positions are filled, in order, with the frames' visual tokens."""

    hidden_size: int

    def __call__(
        self,
        input_ids: jax.Array,  # [B, L] int
        attention_mask: jax.Array,  # [B, L]
        visual_mask: jax.Array,  # [B, L] bool
        frames: jax.Array | None,  # [B, F, H, W, 3] float in [0, 1]
    ) -> jax.Array: ...  # [B, L, hidden_size]


class FramePatchEmbed(nn.Module):
    """Frames -> patch tokens: patchify, linear to hidden, + learned frame / patch positions."""

    hidden_size: int
    patch: int

    @nn.compact
    def __call__(self, frames: jax.Array) -> jax.Array:
        """[B, F, H, W, 3] in [0, 1] -> [B, F * P, hidden] (frame-major order)."""
        b, f = frames.shape[:2]
        x = patchify((frames - 0.5) / 0.5, self.patch)  # [B, F, P, p*p*3]
        n_p = x.shape[2]
        x = nn.Dense(self.hidden_size, kernel_init=nn.initializers.normal(0.02), name="proj")(x)
        init = nn.initializers.normal(0.02)
        x = x + self.param("frame_pos", init, (f, 1, self.hidden_size))
        x = x + self.param("patch_pos", init, (1, n_p, self.hidden_size))
        return x.reshape(b, f * n_p, self.hidden_size)


class MiniLMBackbone(nn.Module):
    """BERT (all-MiniLM-L6-v2 weights) with frame tokens spliced into its input embeddings."""

    bert: BertConfig
    patch: int = 16

    @property
    def hidden_size(self) -> int:
        return self.bert.hidden_size

    @nn.compact
    def __call__(self, input_ids, attention_mask, visual_mask, frames=None) -> jax.Array:
        embeds = None
        if frames is not None:
            vis = FramePatchEmbed(self.bert.hidden_size, self.patch, name="frames")(frames)
            # The k-th visual position of a row takes the k-th frame token.
            slot = jnp.clip(jnp.cumsum(visual_mask, axis=1) - 1, 0, vis.shape[1] - 1)
            embeds = jnp.take_along_axis(vis, slot[..., None], axis=1)
        return BertEncoder(self.bert, name="bert")(
            input_ids, attention_mask, inputs_embeds=embeds, embeds_mask=visual_mask
        )


class Clamr(nn.Module):
    """Backbone -> linear `dim` -> per-token L2 norm -> zero the tokens not kept.

    `pooling="mean"` is the single-vector baseline: the mean of the kept projected tokens,
    normalised, as one token [B, 1, dim].
    """

    backbone: nn.Module
    dim: int = 128
    pooling: str = "tokens"  # tokens | mean

    @nn.compact
    def __call__(
        self,
        input_ids: jax.Array,
        attention_mask: jax.Array,
        modality: jax.Array | None = None,
        frames: jax.Array | None = None,
    ) -> tuple[jax.Array, jax.Array]:
        """Queries: modality None (kept = mask). Documents: modality ids (kept = id > 0).
        Returns (emb [B, L, dim] fp32, kept [B, L] bool), or [B, 1, ...] with mean pooling."""
        if modality is None:
            keep = attention_mask.astype(bool)
            visual = jnp.zeros_like(keep)
        else:
            keep = (modality > 0) & attention_mask.astype(bool)
            visual = modality == VIDEO
        hidden = self.backbone(input_ids, attention_mask, visual, frames)
        x = nn.Dense(self.dim, kernel_init=nn.initializers.normal(0.02), name="head")(hidden)
        x = x.astype(jnp.float32)
        if self.pooling == "mean":
            w = keep[..., None].astype(x.dtype)
            x = (x * w).sum(1, keepdims=True) / jnp.maximum(w.sum(1, keepdims=True), 1.0)
            keep = keep.any(1, keepdims=True)
        elif self.pooling != "tokens":
            raise ValueError(f"pooling must be 'tokens' or 'mean', got {self.pooling!r}")
        x = x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-6)
        return x * keep[..., None], keep


def encode_documents(
    model: Clamr,
    params,
    ids: jax.Array,
    mask: jax.Array,
    modality: jax.Array,
    frames: jax.Array | None,
) -> tuple[jax.Array, jax.Array]:
    """Joint inputs [B, L] -> (emb [B, L, dim], modality ids with 0 where not kept).

    Separate inputs [B, P, L] (the non-contextualised ablation: one pass per modality) run as
    B*P sequences and their token sets are concatenated: [B, P*L, dim]. Mean pooling returns
    modality id 1 for the one pooled token (it has no modality).
    """
    if ids.ndim == 3:
        b, p, length = ids.shape
        flat_frames = None
        if frames is not None:
            flat_frames = jnp.repeat(frames, p, axis=0)  # only the video pass uses them
        emb, keep = model.apply(
            {"params": params},
            ids.reshape(b * p, length),
            mask.reshape(b * p, length),
            modality.reshape(b * p, length),
            flat_frames,
        )
        if model.pooling == "mean":
            raise ValueError("mean pooling with separate passes is not a CLaMR setting")
        emb = emb.reshape(b, p * length, -1)
        return emb, jnp.where(keep, modality.reshape(b * p, length), 0).reshape(b, p * length)
    emb, keep = model.apply({"params": params}, ids, mask, modality, frames)
    if model.pooling == "mean":
        return emb, keep.astype(jnp.int32)
    return emb, jnp.where(keep, modality, 0)


def encode_queries(model: Clamr, params, ids: jax.Array, mask: jax.Array):
    """(emb [B, Lq, dim], mask [B, Lq] bool); [B, 1, ...] with mean pooling."""
    return model.apply({"params": params}, ids, mask)


# ----------------------------------------------------------------------------- MiniLM weights


def load_minilm(
    model_dir: str | os.PathLike, num_layers: int | None = None
) -> tuple[BertConfig, dict, object]:
    """(BertConfig, BertEncoder params as numpy, tokenizer) from a HF BERT folder; `num_layers`
    keeps only the first layers (a shallower, faster encoder for CPU runs)."""
    from tokenizers import Tokenizer

    model_dir = Path(model_dir)
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        if not (model_dir / name).exists():
            raise FileNotFoundError(f"{model_dir}: {name} missing (need a HF BERT folder)")
    config = BertConfig.from_hf(model_dir / "config.json")
    if num_layers:
        if not 1 <= num_layers <= config.num_layers:
            raise ValueError(f"num_layers must be in [1, {config.num_layers}], got {num_layers}")
        config = dataclasses.replace(config, num_layers=num_layers)
    params = hf_to_flax(load_state_dict(model_dir / "model.safetensors"), config)["params"]
    params = jax.tree.map(lambda a: np.asarray(a, np.float32), params)
    return config, params, Tokenizer.from_file(str(model_dir / "tokenizer.json"))
