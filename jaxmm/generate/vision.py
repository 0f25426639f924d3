"""The engine's image input: how images become LM input embeddings (LLaVA-style).

An `ImageEncoder` bundles the jittable vision tower + projector (`encode_fn(params, images
[N, S, S, 3] float) -> [N * tokens_per_image, E]`), the LM's token embedding
(`embed_fn(lm_params, tokens) -> [B, T, E]`, so the engine can splice features into it), the
placeholder token id and the preprocessing (resize to S, scale to [0, 1], normalise). The
prompt carries `tokens_per_image` placeholder ids per image (the chat builder expands each
image part into them); prefill replaces their embeddings by the image features, in order.

`tiny_random_encoder` builds a random SigLIP-style tower for a real LM: it exercises every
code path of a VLM (orchestration, batching, caching) but has learnt nothing, so what the
model says about an image is noise.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxmm.generate.image_parts import ImageInputError
from jaxmm.generate.steps import ImageSplice, bucket
from jaxmm.models import llava_hf, llm, vision

# The text that stands for one image in a rendered chat prompt before it is tokenised (the
# prompt builder splits on it and inserts the placeholder ids between the pieces).
IMAGE_MARKER = "<|jaxmm:image|>"
# Reserved tokens of SmolLM2's tokenizer (code-pretraining markers) that chat never uses.
_UNUSED_TOKENS = ("<empty_output>", "<jupyter_script>")


@dataclasses.dataclass(frozen=True)
class ImageEncoder:
    """Everything the engine needs to take images (see module docstring).

    `mean`/`std` normalise [0, 1] pixels per channel (SigLIP: 0.5 / 0.5); `resample` is the
    PIL filter of the resize (2 bilinear, 3 bicubic as in SigLIP's processor)."""

    encode_fn: Callable[[Any, jax.Array], jax.Array]
    params: Any
    embed_fn: Callable[[Any, jax.Array], jax.Array]
    image_token_id: int
    tokens_per_image: int
    image_size: int
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    resample: int = 2
    name: str = "vision"

    def __post_init__(self):
        if self.tokens_per_image < 1 or self.image_size < 1:
            raise ValueError(
                f"ImageEncoder: tokens_per_image={self.tokens_per_image} and "
                f"image_size={self.image_size} must be >= 1"
            )

    def preprocess(self, images: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
        """uint8 RGB images (a [N, H, W, 3] array or a list of [H, W, 3], any size) ->
        float32 [N, S, S, 3] resized and normalised; a float [N, S, S, 3] array is taken as
        already preprocessed."""
        s = self.image_size
        if isinstance(images, np.ndarray) and images.dtype.kind == "f":
            if images.ndim != 4 or images.shape[1:] != (s, s, 3):
                raise ImageInputError(
                    f"preprocessed images must be float [N, {s}, {s}, 3], got {images.shape}"
                )
            return images.astype(np.float32)
        from PIL import Image

        out = np.empty((len(images), s, s, 3), np.float32)
        for i, img in enumerate(images):
            img = np.asarray(img)
            if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
                raise ImageInputError(
                    f"images[{i}] must be uint8 [H, W, 3] (RGB), got {img.dtype} {img.shape}"
                )
            if img.shape[:2] != (s, s):
                img = np.asarray(Image.fromarray(img).resize((s, s), self.resample))
            out[i] = img
        mean, std = np.asarray(self.mean, np.float32), np.asarray(self.std, np.float32)
        return (out / 255.0 - mean) / std

    def tokenize(self, tokenizer: Any, text: str, n_images: int) -> list[int]:
        """Ids of a rendered chat prompt holding `n_images` IMAGE_MARKERs, each replaced by
        `tokens_per_image` placeholder ids (the text around them tokenised piecewise, as
        LLaVA processors do around their special image token)."""
        pieces = text.split(IMAGE_MARKER)
        if len(pieces) != n_images + 1:  # the template dropped or repeated a message
            raise ImageInputError(
                f"the chat template kept {len(pieces) - 1} of {n_images} image parts"
            )
        ids: list[int] = []
        for i, piece in enumerate(pieces):
            if i:
                ids += [self.image_token_id] * self.tokens_per_image
            if piece:
                ids += tokenizer(piece, add_special_tokens=False)["input_ids"]
        return ids

    def check(self, prompt_ids: Sequence[int], images: Any) -> np.ndarray | None:
        """A request's images preprocessed (None for none), after checking that the prompt
        holds exactly `tokens_per_image` placeholders per image."""
        n_images = 0 if images is None else len(images)
        slots = sum(t == self.image_token_id for t in prompt_ids)
        if slots != n_images * self.tokens_per_image:
            raise ImageInputError(
                f"the prompt has {slots} image placeholder tokens (id {self.image_token_id}) "
                f"but {n_images} images x {self.tokens_per_image} tokens need "
                f"{n_images * self.tokens_per_image}"
            )
        return self.preprocess(images) if n_images else None

    def splice(
        self, encode: Callable[[Any, Any], jax.Array], rows: Sequence[np.ndarray | None]
    ) -> ImageSplice:
        """One prefill's image features: every distinct row's images (preprocessed) encoded
        by `encode` (the jitted `encode_fn`) in one call, the image count padded to a power
        of two by repeating the first image; row b's n-th placeholder reads
        `feats[feat_index[b, n]]`. Rows repeated as padding share their features."""
        owners = {id(p): p for p in rows if p is not None}
        pixels = list(owners.values())
        n = sum(len(p) for p in pixels)
        pad = np.repeat(pixels[0][:1], bucket(n, cap=1 << 30, minimum=1) - n, axis=0)
        feats = encode(self.params, np.concatenate([*pixels, pad]))  # [images * tpi, E]
        tpi = self.tokens_per_image
        start, offset = {}, 0
        for key, p in owners.items():
            start[key], offset = offset, offset + len(p) * tpi
        width = bucket(max(len(p) for p in pixels) * tpi, cap=1 << 30, minimum=1)
        index = np.zeros((len(rows), width), np.int32)
        for i, p in enumerate(rows):
            if p is not None:
                index[i, : len(p) * tpi] = start[id(p)] + np.arange(len(p) * tpi)
        return ImageSplice(self.embed_fn, self.image_token_id, feats, index)


def llm_embed_fn(config: llm.LLMConfig) -> Callable[[Any, jax.Array], jax.Array]:
    """The token embedding of `jaxmm.models.llm.LLM` as `embed_fn(lm_params, tokens)`."""
    model = llm.LLM(config)
    return lambda params, tokens: model.apply({"params": params}, tokens, method=llm.LLM.embed)


def tower_encode_fn(
    vision_config: vision.VisionConfig, lm_hidden: int, dtype: str = "float32"
) -> Callable[[Any, jax.Array], jax.Array]:
    """`encode_fn` of a SigLIP-style `VisionEncoder` + LLaVA `Projector` whose params are
    `{"vision": ..., "projector": ...}` (the names inside `jaxmm.models.vision.VLM`)."""
    tower = vision.VisionEncoder(vision_config)
    projector = vision.Projector(lm_hidden, dtype, dtype)

    def encode(params: Any, images: jax.Array) -> jax.Array:
        feats = tower.apply({"params": params["vision"]}, images)
        feats = projector.apply({"params": params["projector"]}, feats)
        return feats.reshape(-1, feats.shape[-1])

    return encode


def placeholder_token(tokenizer: Any) -> int:
    """An id of the tokenizer that chat text never produces, for the image placeholders."""
    vocab = tokenizer.get_vocab()
    for tok in _UNUSED_TOKENS:
        if tok in vocab:
            return int(vocab[tok])
    raise ValueError(
        f"the tokenizer has none of the reserved tokens {list(_UNUSED_TOKENS)} to use as the "
        "image placeholder; pass image_token_id explicitly"
    )


def llava_encoder(model_dir: str, llava: llava_hf.Llava) -> ImageEncoder:
    """The image encoder of a loaded LLaVA folder; pixel statistics and size from its
    `preprocessor_config.json` when present (resize to the tower's size, no crop)."""
    cfg = llava.vision_config
    pre = {}
    path = os.path.join(model_dir, "preprocessor_config.json")
    if os.path.exists(path):
        with open(path) as f:
            pre = json.load(f)
    mean = tuple(pre.get("image_mean", (0.5, 0.5, 0.5)))
    std = tuple(pre.get("image_std", (0.5, 0.5, 0.5)))
    return ImageEncoder(
        encode_fn=tower_encode_fn(cfg, llava.lm_config.hidden_size, llava.lm_config.dtype),
        params={"vision": llava.vision_params, "projector": llava.projector_params},
        embed_fn=llm_embed_fn(llava.lm_config),
        image_token_id=llava.image_token_id,
        tokens_per_image=cfg.num_patches,
        image_size=cfg.image_size,
        mean=mean,
        std=std,
        resample=int(pre.get("resample", 3)),
        name="llava",
    )


TINY_VISION = vision.VisionConfig(
    image_size=64, patch_size=16, hidden_size=64, intermediate_size=128, num_layers=2, num_heads=4
)


def tiny_random_encoder(
    lm_config: llm.LLMConfig, image_token_id: int, seed: int = 0
) -> ImageEncoder:
    """A random 2-layer SigLIP-style tower (64-px images, 16-px patches: 16 tokens per image)
    and projector into `lm_config`'s width. Orchestration only: it has learnt nothing."""
    cfg = TINY_VISION
    encode = tower_encode_fn(cfg, lm_config.hidden_size)
    k1, k2 = jax.random.split(jax.random.key(seed))
    dummy = jnp.zeros((1, cfg.image_size, cfg.image_size, 3), jnp.float32)
    v_params = vision.VisionEncoder(cfg).init(k1, dummy)["params"]
    p_params = vision.Projector(lm_config.hidden_size).init(
        k2, jnp.zeros((1, cfg.num_patches, cfg.hidden_size))
    )["params"]
    params = jax.tree.map(
        lambda x: x.unbox() if hasattr(x, "unbox") else x,
        {"vision": v_params, "projector": p_params},
        is_leaf=lambda x: hasattr(x, "unbox"),
    )
    return ImageEncoder(
        encode_fn=encode,
        params=params,
        embed_fn=llm_embed_fn(lm_config),
        image_token_id=image_token_id,
        tokens_per_image=cfg.num_patches,
        image_size=cfg.image_size,
        name="tiny_random",
    )
