"""Qwen2.5-VL: the vision tower's merged features replace the image/video placeholder tokens
in the embedding sequence, which jaxmm's LLM (M-RoPE positions) then reads.

    model = Qwen25VL(config)
    logits, cache = model.apply({"params": params}, tokens, positions,
                                pixel_values=..., image_layout=...,
                                pixel_values_videos=..., video_layout=...)

`positions` [3, B, T] come from `mrope.rope_index`, the layouts from `vision.vision_layout`
(both host-side, from the processor's grids). Images and videos of the whole batch are packed
into one vision sequence each; the k-th placeholder of the batch (row-major) receives the k-th
merged feature, as transformers' `masked_scatter` does. The caller keeps the placeholder count
equal to the feature count (`rope_index` checks each run against its grid). With a KV cache,
pass the pixels only with the chunk that holds the placeholders (prefill); decode steps use
position cache.lengths + delta on all three axes (`rope_index`'s deltas).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxmm.models.llm import LLM, KVCache
from jaxmm.models.qwen2_5_vl.config import Qwen25VLConfig
from jaxmm.models.qwen2_5_vl.vision import VisionLayout, VisionTower


def scatter_features(
    tokens: jax.Array, embeds: jax.Array, features: jax.Array, token_id: int
) -> jax.Array:
    """embeds [B, T, E] with the k-th `token_id` of the batch (row-major) replaced by
    features[k] ([K, E])."""
    is_slot = (tokens == token_id).reshape(-1)
    slot = jnp.clip(jnp.cumsum(is_slot) - 1, 0, features.shape[0] - 1)
    gathered = features[slot].astype(embeds.dtype).reshape(embeds.shape)
    return jnp.where((tokens == token_id)[..., None], gathered, embeds)


class Qwen25VL(nn.Module):
    """Qwen2_5_VLForConditionalGeneration in Flax; see the module docstring."""

    config: Qwen25VLConfig

    def setup(self):
        self.visual = VisionTower(self.config.vision)
        self.lm = LLM(self.config.text)

    def embed(
        self,
        tokens: jax.Array,
        pixel_values: jax.Array | None = None,
        image_layout: VisionLayout | None = None,
        pixel_values_videos: jax.Array | None = None,
        video_layout: VisionLayout | None = None,
    ) -> jax.Array:
        """Token embeddings [B, T, hidden] with the vision features spliced in."""
        cfg = self.config
        x = self.lm.embed(tokens)
        for pixels, layout, token_id, what in (
            (pixel_values, image_layout, cfg.image_token_id, "pixel_values"),
            (pixel_values_videos, video_layout, cfg.video_token_id, "pixel_values_videos"),
        ):
            if pixels is None:
                continue
            if layout is None:
                raise ValueError(f"Qwen25VL: {what} needs its VisionLayout")
            x = scatter_features(tokens, x, self.visual(pixels, layout), token_id)
        return x

    def __call__(
        self,
        tokens: jax.Array,
        positions: jax.Array | None = None,
        *,
        pixel_values: jax.Array | None = None,
        image_layout: VisionLayout | None = None,
        pixel_values_videos: jax.Array | None = None,
        video_layout: VisionLayout | None = None,
        cache: KVCache | None = None,
        attention_mask: jax.Array | None = None,
        deterministic: bool = True,
        last_logits_only: bool = False,
    ) -> tuple[jax.Array, KVCache | None]:
        """Returns (logits [B, T, vocab], updated cache or None); see `LLM.__call__`."""
        x = self.embed(tokens, pixel_values, image_layout, pixel_values_videos, video_layout)
        return self.lm(
            None,
            positions,
            cache,
            attention_mask=attention_mask,
            inputs_embeds=x,
            deterministic=deterministic,
            last_logits_only=last_logits_only,
        )
