"""`Qwen25VLConfig`: Qwen2.5-VL hyper-parameters read from a Hugging Face `config.json`.

Reads both layouts transformers writes: v5 (`text_config` + `vision_config`, rope in
`rope_parameters`) and the original Qwen release (text fields at the top level, rope in
`rope_scaling = {"type": "mrope", "mrope_section": [...]}`). The text side becomes an
`LLMConfig` (a Qwen2 decoder whose RoPE has an `mrope_section`); errors name the field.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any

from jaxmm.models.llm_config import LLMConfig, read_hf_config
from jaxmm.nn.attention import IMPLS
from jaxmm.nn.lora import LoRAConfig
from jaxmm.nn.rotary import RopeConfig

MODEL_TYPE = "qwen2_5_vl"
ARCHITECTURE = "Qwen2_5_VLForConditionalGeneration"


@dataclasses.dataclass(frozen=True)
class Qwen25VisionConfig:
    """The vision tower (transformers' `Qwen2_5_VLVisionConfig`)."""

    depth: int = 32
    hidden_size: int = 1280
    intermediate_size: int = 3420
    num_heads: int = 16
    in_channels: int = 3
    patch_size: int = 14
    temporal_patch_size: int = 2
    spatial_merge_size: int = 2
    window_size: int = 112
    out_hidden_size: int = 3584
    fullatt_block_indexes: tuple[int, ...] = (7, 15, 23, 31)
    tokens_per_second: float = 4.0  # transformers default; the released checkpoints say 2
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-6  # hard-coded in transformers' vision blocks and merger
    dtype: str = "float32"
    param_dtype: str = "float32"
    attention_impl: str = "auto"

    def __post_init__(self):
        object.__setattr__(self, "fullatt_block_indexes", tuple(self.fullatt_block_indexes))

        def need(cond, field, msg):
            if not cond:
                raise ValueError(f"Qwen25VisionConfig.{field}: {msg}")

        for f in ("depth", "hidden_size", "intermediate_size", "num_heads", "patch_size"):
            v = getattr(self, f)
            need(isinstance(v, int) and v > 0, f, f"must be a positive int, got {v!r}")
        need(
            self.hidden_size % self.num_heads == 0,
            "num_heads",
            f"hidden_size {self.hidden_size} is not a multiple of {self.num_heads} heads",
        )
        need(
            self.head_dim % 4 == 0,
            "hidden_size",
            f"head_dim {self.head_dim} must be a multiple of 4 (2-D rotary over h and w)",
        )
        bad = [i for i in self.fullatt_block_indexes if not 0 <= i < self.depth]
        need(not bad, "fullatt_block_indexes", f"{bad} are not layers of {self.depth}")
        unit = self.patch_size * self.spatial_merge_size
        need(
            self.window_size % unit == 0 and self.window_size >= unit,
            "window_size",
            f"{self.window_size} px must be a positive multiple of patch_size * "
            f"spatial_merge_size = {unit}",
        )
        need(self.attention_impl in IMPLS, "attention_impl", f"must be one of {IMPLS}")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def patch_dim(self) -> int:
        """Length of one flattened patch: channels x temporal x patch x patch."""
        return self.in_channels * self.temporal_patch_size * self.patch_size**2

    @property
    def merge_unit(self) -> int:
        return self.spatial_merge_size**2


@dataclasses.dataclass(frozen=True)
class Qwen25VLConfig:
    text: LLMConfig
    vision: Qwen25VisionConfig
    image_token_id: int = 151655
    video_token_id: int = 151656
    vision_start_token_id: int = 151652
    vision_end_token_id: int = 151653

    def __post_init__(self):
        sections = self.text.rope.mrope_section
        if len(sections) != 3 or sum(sections) != self.text.head_dim // 2:
            raise ValueError(
                f"Qwen25VLConfig: rope mrope_section {sections} must be three sizes (t, h, w) "
                f"summing to head_dim // 2 = {self.text.head_dim // 2}"
            )
        if self.vision.out_hidden_size != self.text.hidden_size:
            raise ValueError(
                f"Qwen25VLConfig: vision_config.out_hidden_size {self.vision.out_hidden_size} "
                f"!= text hidden_size {self.text.hidden_size}"
            )

    def with_lora(self, lora: LoRAConfig | None) -> Qwen25VLConfig:
        """LoRA on the language model's projections (the vision tower takes none, as in
        ColQwen2.5's adapters); `None` removes it. Use with `jaxmm.nn.lora.add_lora`."""
        return dataclasses.replace(self, text=self.text.replace(lora=lora))

    @classmethod
    def from_hf(
        cls,
        source: Mapping[str, Any] | str | os.PathLike,
        *,
        text_overrides: Mapping[str, Any] | None = None,
        vision_overrides: Mapping[str, Any] | None = None,
    ) -> Qwen25VLConfig:
        """From a HF Qwen2.5-VL `config.json` (dict, file or folder). Overrides set run-time
        fields (dtype, attention_impl, ...) of the text and vision configs."""
        hf, where = read_hf_config(source)
        model_type = hf.get("model_type")
        archs = list(hf.get("architectures") or [])
        if model_type != MODEL_TYPE and ARCHITECTURE not in archs:
            raise ValueError(
                f"{where}: model_type={model_type!r} (architectures={archs}) is not "
                f"{MODEL_TYPE!r} ({ARCHITECTURE})"
            )
        text = dict(hf.get("text_config") or hf)  # original release: text fields at top level
        vision = hf.get("vision_config")
        if not isinstance(vision, Mapping):
            raise ValueError(f"{where}: missing required field 'vision_config'")
        if text.get("use_sliding_window", False):
            raise ValueError(f"{where}: use_sliding_window=True is not supported")
        rope = _mrope_from_hf(text, hf, where)
        for key in ("rope_parameters", "rope_scaling", "rope_theta", "model_type"):
            text.pop(key, None)
        text.pop("architectures", None)
        tie = bool(hf.get("tie_word_embeddings", text.get("tie_word_embeddings", False)))
        text_cfg = LLMConfig.from_hf(
            {**text, "model_type": "qwen2", "tie_word_embeddings": tie},
            **{"rope": rope, **dict(text_overrides or {})},
        )
        ids = {}
        for key in ("image_token_id", "video_token_id"):
            ids[key] = hf.get(key, text.get(key))
            if ids[key] is None:
                raise ValueError(f"{where}: missing required field {key!r}")
        for key in ("vision_start_token_id", "vision_end_token_id"):
            ids[key] = hf.get(key, text.get(key, getattr(cls, key)))
        return cls(
            text=text_cfg,
            vision=_vision_from_hf(vision, where, vision_overrides or {}),
            **{k: int(v) for k, v in ids.items()},
        )


def _mrope_from_hf(text: Mapping, top: Mapping, where: str) -> RopeConfig:
    params = text.get("rope_parameters") or text.get("rope_scaling")
    params = params or top.get("rope_parameters") or top.get("rope_scaling") or {}
    rope_type = params.get("rope_type", params.get("type", "default"))
    if rope_type not in ("default", "mrope"):
        raise ValueError(f"{where}: rope type {rope_type!r} is not supported (mrope/default)")
    section = params.get("mrope_section")
    if not section:
        raise ValueError(f"{where}: rope_parameters/rope_scaling is missing 'mrope_section'")
    theta = params.get("rope_theta", text.get("rope_theta", top.get("rope_theta", 1000000.0)))
    return RopeConfig(theta=float(theta), mrope_section=tuple(section))


_VISION_FIELDS = {  # HF name -> Qwen25VisionConfig field
    "depth": "depth",
    "hidden_size": "hidden_size",
    "intermediate_size": "intermediate_size",
    "num_heads": "num_heads",
    "in_channels": "in_channels",
    "patch_size": "patch_size",
    "temporal_patch_size": "temporal_patch_size",
    "spatial_merge_size": "spatial_merge_size",
    "window_size": "window_size",
    "out_hidden_size": "out_hidden_size",
    "fullatt_block_indexes": "fullatt_block_indexes",
    "tokens_per_second": "tokens_per_second",
}


def _vision_from_hf(hf: Mapping, where: str, overrides: Mapping) -> Qwen25VisionConfig:
    act = hf.get("hidden_act", "silu")
    if act != "silu":
        raise ValueError(f"{where}: vision_config.hidden_act={act!r} is not supported (silu)")
    fields: dict[str, Any] = {}
    for hf_key, key in _VISION_FIELDS.items():
        value = hf.get(hf_key)
        if hf_key == "in_channels" and value is None:
            value = hf.get("in_chans")  # the original release's name
        if value is not None:
            fields[key] = value
    for key in ("patch_size", "temporal_patch_size"):
        if isinstance(fields.get(key), list | tuple):
            raise ValueError(f"{where}: vision_config.{key}={fields[key]} must be one int")
    rope = hf.get("rope_parameters") or {}
    fields["rope_theta"] = float(rope.get("rope_theta", 10000.0))
    return Qwen25VisionConfig(**{**fields, **dict(overrides)})
