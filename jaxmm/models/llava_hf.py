"""Load a Hugging Face LLaVA folder (`LlavaForConditionalGeneration`: a SigLIP vision tower, a
2-layer GELU projector and a Llama / Qwen2 language model) into jaxmm params.

Supported: `vision_config.model_type == "siglip_vision_model"`, an int `vision_feature_layer`,
`vision_feature_select_strategy == "full"` (SigLIP has no class token to drop),
`projector_hidden_act == "gelu"` with biases. Anything else is a ValueError naming the field.
Both tensor naming schemes are read: `language_model.model.*` / `vision_tower.*` /
`multi_modal_projector.*` (hub checkpoints) and `model.language_model.*` / `model.vision_tower.*`
/ `model.multi_modal_projector.*` + `lm_head.*` (transformers >= 4.52 `save_pretrained`).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import flax.linen as nn
import numpy as np

from jaxmm.io.state_dict import SafetensorsShards
from jaxmm.models import hf as llm_hf
from jaxmm.models.llm_config import LLMConfig, read_hf_config
from jaxmm.models.vision import VisionConfig, siglip_params_from_hf

# (language model, lm_head, vision tower, projector) prefixes of the two naming schemes.
_SCHEMES = (
    ("language_model.model.", "language_model.lm_head.", "vision_tower.", "multi_modal_projector."),
    ("model.language_model.", "lm_head.", "model.vision_tower.", "model.multi_modal_projector."),
)


@dataclasses.dataclass(frozen=True)
class Llava:
    """A loaded LLaVA checkpoint: the LM's config and params, the vision tower's, the
    projector's (`linear_1`, `linear_2`), and the `<image>` placeholder id."""

    lm_config: LLMConfig
    lm_params: dict
    vision_config: VisionConfig
    vision_params: dict
    projector_params: dict
    image_token_id: int


def is_llava_folder(ckpt_dir: str | os.PathLike) -> bool:
    path = os.path.join(os.fspath(ckpt_dir), "config.json")
    return os.path.exists(path) and read_hf_config(path)[0].get("model_type") == "llava"


def load_llava(ckpt_dir: str | os.PathLike, dtype: str = "float32") -> Llava:
    """Reads config.json + safetensors of a LLaVA folder (names and shapes checked first)."""
    ckpt_dir = os.fspath(ckpt_dir)
    hf, where = read_hf_config(ckpt_dir)
    vision_hf = hf.get("vision_config") or {}
    checks = {
        "model_type": (hf.get("model_type"), "llava"),
        "vision_config.model_type": (vision_hf.get("model_type"), "siglip_vision_model"),
        "vision_feature_select_strategy": (hf.get("vision_feature_select_strategy"), "full"),
        "projector_hidden_act": (hf.get("projector_hidden_act", "gelu"), "gelu"),
        "multimodal_projector_bias": (hf.get("multimodal_projector_bias", True), True),
    }
    for field, (got, want) in checks.items():
        if got != want:
            raise ValueError(f"{where}: {field}={got!r} is not supported (only {want!r})")
    layer = hf.get("vision_feature_layer", -2)
    if not isinstance(layer, int):
        raise ValueError(f"{where}: vision_feature_layer={layer!r} must be one int")
    text = dict(hf["text_config"])
    text.setdefault("tie_word_embeddings", hf.get("tie_word_embeddings", False))
    lm_config = LLMConfig.from_hf(text, dtype=dtype, param_dtype=dtype)
    vision_config = VisionConfig.from_hf(
        vision_hf, feature_layer=layer, dtype=dtype, param_dtype=dtype
    )
    with SafetensorsShards.of_folder(ckpt_dir, llm_hf.SINGLE_FILE, llm_hf.INDEX_FILE) as tensors:
        lm, head, tower, proj = next(
            (s for s in _SCHEMES if s[0] + "embed_tokens.weight" in tensors), _SCHEMES[0]
        )
        maps = []
        for m in llm_hf.name_map(lm_config):
            name = m.hf_name
            if name.startswith("lm_head."):
                name = head + name[len("lm_head.") :]
            elif name.startswith("model."):
                name = lm + name[len("model.") :]
            maps.append(dataclasses.replace(m, hf_name=name))
        others = [n for n in tensors if not n.startswith((lm, head))]
        if lm_config.tie_embeddings:
            others.append(head + "weight")
        shapes = nn.meta.unbox(llm_hf.abstract_params(lm_config))
        lm_params = llm_hf.read_mapped_params(
            ckpt_dir, maps, tensors, shapes, None, "LLaVA language", others
        )
        vision_state = {n[len(tower) :]: tensors.get(n) for n in tensors if n.startswith(tower)}
        projector_state = {n[len(proj) :]: tensors.get(n) for n in tensors if n.startswith(proj)}
    vision_params = siglip_params_from_hf(vision_state, vision_config)
    projector_params = _projector_params(projector_state, where, dtype)
    image_token_id = hf.get("image_token_index", hf.get("image_token_id"))
    if not isinstance(image_token_id, int):
        raise ValueError(f"{where}: image_token_index is missing")
    return Llava(
        lm_config, lm_params, vision_config, vision_params, projector_params, image_token_id
    )


def _projector_params(state: dict[str, Any], where: str, dtype: str) -> dict:
    params = {}
    for layer in ("linear_1", "linear_2"):
        for kind in ("weight", "bias"):
            if f"{layer}.{kind}" not in state:
                raise ValueError(
                    f"{where}: checkpoint is missing multi_modal_projector.{layer}.{kind}"
                )
        params[layer] = {
            "kernel": np.asarray(state[f"{layer}.weight"], np.float32).T.astype(dtype),
            "bias": np.asarray(state[f"{layer}.bias"], np.float32).astype(dtype),
        }
    return params
