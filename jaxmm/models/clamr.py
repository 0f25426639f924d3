"""CLaMR (arXiv 2506.06144): a multimodal late-interaction encoder over video frames + text.

    hidden = backbone(token ids, mask, frames)   # frames spliced in where modality id == 1
    emb    = L2norm(Linear_dim(hidden)) * keep   # keep: query mask / doc modality id > 0

Why a backbone interface: the paper's encoder is Qwen2.5-VL (vision tokens spliced into the
text sequence at placeholder positions). Any Flax module with the `Backbone` call signature
and a `hidden_size` field plugs in; here `MiniLMBackbone` = the real all-MiniLM-L6-v2 BERT
plus a small trainable frame patch embedder, so the method trains on CPU; `Qwen25VLBackbone`
= the paper's Qwen2.5-VL (vision tower features at the visual positions, M-RoPE positions,
the decoder's final-norm hidden states). The trainer (`jaxmm.tasks.clamr`) drives both: the
Qwen inputs come from the checkpoint folder's tokenizer (`clamr_inputs.qwen_layout`), its
weights from the folder's safetensors (`ClamrTask.pretrained_params`).

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
from jaxmm.models.llm import LLM
from jaxmm.models.qwen2_5_vl.config import Qwen25VLConfig
from jaxmm.models.qwen2_5_vl.processor import CLIP_MEAN, CLIP_STD
from jaxmm.models.qwen2_5_vl.vision import VisionTower, vision_layout
from jaxmm.models.text_encoder import BertConfig, BertEncoder, hf_to_flax
from jaxmm.nn.lora import LoRAConfig
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


def qwen_video_patches(frames: jax.Array, config: Qwen25VLConfig) -> tuple[jax.Array, tuple]:
    """Frames [B, F, H, W, 3] in [0, 1] (H, W multiples of patch * merge, i.e. 28 px) ->
    (pixel values [B * t * h * w, patch_dim], grid (t, h, w) of each video): the in-graph
    equivalent of `Qwen25VLProcessor.video` on frames that need no resize (CLIP mean/std, the
    last frame repeated to an even count, block-major patches with rows flattened c, t, y, x).
    """
    v = config.vision
    p, m, tp = v.patch_size, v.spatial_merge_size, v.temporal_patch_size
    b, f, hh, ww, c = frames.shape
    if hh % (p * m) or ww % (p * m) or c != 3:
        raise ValueError(
            f"Qwen25VLBackbone: frames {frames.shape} must be [B, F, H, W, 3] with H and W "
            f"multiples of {p * m} px (resize on the host, e.g. with Qwen25VLProcessor)"
        )
    x = (frames.astype(jnp.float32) - jnp.asarray(CLIP_MEAN)) / jnp.asarray(CLIP_STD)
    if pad := -f % tp:
        x = jnp.concatenate([x, jnp.repeat(x[:, -1:], pad, axis=1)], axis=1)
    t, h, w = x.shape[1] // tp, hh // p, ww // p
    x = x.reshape(b, t, tp, h // m, m, p, w // m, m, p, c)
    # -> b, t, h/m, w/m, m(y), m(x), c, tp, p(y), p(x)
    x = x.transpose(0, 1, 3, 6, 4, 7, 9, 2, 5, 8)
    return x.reshape(b * t * h * w, c * tp * p * p), (t, h, w)


def qwen_mrope_positions(
    visual_mask: jax.Array,
    attention_mask: jax.Array,
    grid: tuple[int, int, int] | None,
    spatial_merge_size: int,
    time_interval: float,
) -> jax.Array:
    """[3, B, L] M-RoPE positions (as `mrope.rope_index`) for rows holding at most one
    contiguous run of visual tokens (one video on the merged grid of `grid`), in-graph.

    Text counts up on all axes; the run's k-th token sits at start + (t_k, h_k, w_k) with
    t_k = trunc(frame_k * time_interval); text after the run continues at start + max(h', w');
    padding gets 0."""
    real = attention_mask.astype(bool)
    vis = visual_mask.astype(bool) & real
    text = real & ~vis
    text_before = jnp.cumsum(text, axis=1) - text  # text tokens strictly before
    if grid is None:
        pos = jnp.broadcast_to(text_before, (3, *text_before.shape))
        return jnp.where(real, pos, 0).astype(jnp.int32)
    h, w = grid[1] // spatial_merge_size, grid[2] // spatial_merge_size
    k = jnp.cumsum(vis, axis=1) - vis  # visual tokens strictly before
    after_run = k > 0
    text_pos = text_before + jnp.where(after_run, max(h, w), 0)
    frame = (k // (h * w)).astype(jnp.float32)
    pos_t = jnp.trunc(frame * jnp.float32(time_interval)).astype(text_before.dtype)
    vis_pos = jnp.stack([pos_t, (k // w) % h, k % w]) + text_before
    pos = jnp.where(vis, vis_pos, jnp.broadcast_to(text_pos, vis_pos.shape))
    return jnp.where(real, pos, 0).astype(jnp.int32)


class Qwen25VLBackbone(nn.Module):
    """Qwen2.5-VL as a CLaMR encoder: the visual positions of each row take that row's video
    features (vision tower + merger, `frames` patchified in-graph by `qwen_video_patches`) in
    order; M-RoPE positions from `qwen_mrope_positions`; returns the decoder's final-norm
    hidden states (`LLM(..., return_hidden=True)`, never logits).

    Params are {"visual", "lm"}, the same tree as `Qwen25VL` (so `qwen2_5_vl.hf.load_hf`
    weights drop in). `second_per_grid_t`: seconds per temporal patch (temporal_patch_size /
    sampled fps); 1.0 as transformers' default when unknown. Each row with visual tokens must
    have exactly t * h * w / merge² of them (one video per row, one contiguous run).
    """

    config: Qwen25VLConfig
    second_per_grid_t: float = 1.0
    deterministic: bool = True

    @property
    def hidden_size(self) -> int:
        return self.config.text.hidden_size

    def setup(self):
        self.visual = VisionTower(self.config.vision)
        self.lm = LLM(self.config.text)

    def __call__(self, input_ids, attention_mask, visual_mask, frames=None) -> jax.Array:
        cfg = self.config
        visual_mask = visual_mask.astype(bool)
        tokens = jnp.where(visual_mask, cfg.video_token_id, input_ids)
        x = self.lm.embed(tokens)
        grid = None
        if frames is not None:
            b = frames.shape[0]
            pixels, grid = qwen_video_patches(frames, cfg)
            layout = vision_layout([grid] * b, cfg.vision)  # host-side, static shapes
            feats = self.visual(pixels, layout).reshape(b, -1, x.shape[-1])
            slot = jnp.clip(jnp.cumsum(visual_mask, axis=1) - 1, 0, feats.shape[1] - 1)
            gathered = jnp.take_along_axis(feats, slot[..., None], axis=1).astype(x.dtype)
            x = jnp.where(visual_mask[..., None], gathered, x)
        positions = qwen_mrope_positions(
            visual_mask,
            attention_mask,
            grid,
            cfg.vision.spatial_merge_size,
            cfg.vision.tokens_per_second * self.second_per_grid_t,
        )
        hidden, _ = self.lm(
            None,
            positions,
            attention_mask=attention_mask,
            inputs_embeds=x,
            deterministic=self.deterministic,
            return_hidden=True,
        )
        return hidden


def qwen_text_overrides(model_config) -> dict:
    """Run-time settings of the language model from `config.model`: the first `num_layers`
    layers (0: all), `remat`, `scan_layers`. One place, because the weights loaded into the
    backbone (`qwen2_5_vl.hf.load_hf(..., text_overrides=)`) must have the same tree."""
    m = model_config
    out = {"remat": m.get("remat", "none"), "scan_layers": bool(m.get("scan_layers", False))}
    if m.num_layers:
        out["num_layers"] = int(m.num_layers)
    return out


def qwen_backbone(model_config, deterministic: bool = True) -> Qwen25VLBackbone:
    """`config.model` of configs/clamr.py (backbone 'qwen2_5_vl') -> the backbone, built from
    `model_dir` (a HF folder or its config.json; no weights read) with `qwen_text_overrides`,
    LoRA on the language model when `lora_rank` > 0."""
    m = model_config
    if not m.model_dir:
        raise ValueError("config.model.model_dir: a Qwen2.5-VL folder or config.json is needed")
    config = Qwen25VLConfig.from_hf(m.model_dir, text_overrides=qwen_text_overrides(m))
    if m.lora_rank:
        lora = LoRAConfig(
            rank=m.lora_rank,
            alpha=float(m.lora_alpha),
            dropout=float(m.lora_dropout),
            targets=tuple(m.lora_targets),
        )
        config = config.with_lora(lora)
    spgt = float(m.get("second_per_grid_t", 1.0))
    return Qwen25VLBackbone(config, second_per_grid_t=spgt, deterministic=deterministic)


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
    rngs: dict[str, jax.Array] | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Joint inputs [B, L] -> (emb [B, L, dim], modality ids with 0 where not kept); `rngs`
    (e.g. {"dropout": key}) for a training model with dropout.

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
            rngs=rngs,
        )
        if model.pooling == "mean":
            raise ValueError("mean pooling with separate passes is not a CLaMR setting")
        emb = emb.reshape(b, p * length, -1)
        return emb, jnp.where(keep, modality.reshape(b * p, length), 0).reshape(b, p * length)
    emb, keep = model.apply({"params": params}, ids, mask, modality, frames, rngs=rngs)
    if model.pooling == "mean":
        return emb, keep.astype(jnp.int32)
    return emb, jnp.where(keep, modality, 0)


def encode_queries(model: Clamr, params, ids: jax.Array, mask: jax.Array, rngs: dict | None = None):
    """(emb [B, Lq, dim], mask [B, Lq] bool); [B, 1, ...] with mean pooling."""
    return model.apply({"params": params}, ids, mask, rngs=rngs)


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
