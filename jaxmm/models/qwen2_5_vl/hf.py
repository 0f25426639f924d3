"""Hugging Face Qwen2.5-VL safetensors -> jaxmm params, through the shared loader of
`jaxmm.models.hf` (header checks first, then one tensor at a time into its sharding).

The text tensors use the LLM's Qwen2 name map under `lm/`; the vision tower's map is below,
under `visual/`. Checkpoints name tensors in one of two ways, both read: the original Qwen
release and transformers' `save_pretrained` (`model.layers.*`, `visual.*`) or transformers-5
module names (`model.language_model.layers.*`, `model.visual.*`).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxmm import sharding
from jaxmm.io.state_dict import SafetensorsShards
from jaxmm.models import hf as llm_hf
from jaxmm.models.hf import INDEX_FILE, SINGLE_FILE, TensorMap
from jaxmm.models.qwen2_5_vl.config import Qwen25VLConfig
from jaxmm.models.qwen2_5_vl.model import Qwen25VL
from jaxmm.models.qwen2_5_vl.vision import vision_layout

# Per-block vision tensors: (HF name after "visual.blocks.{i}.", path in a block, kind, n_in).
_BLOCK_TENSORS = (
    ("norm1.weight", ("norm1", "scale"), "same", 1),
    ("norm2.weight", ("norm2", "scale"), "same", 1),
    ("attn.qkv.weight", ("qkv", "kernel"), "linear", 1),
    ("attn.qkv.bias", ("qkv", "bias"), "flat", 1),
    ("attn.proj.weight", ("proj", "kernel"), "linear", 2),
    ("attn.proj.bias", ("proj", "bias"), "same", 1),
    *(
        (f"mlp.{p}.{w}", (p, "kernel" if w == "weight" else "bias"), k, 1)
        for p in ("gate_proj", "up_proj", "down_proj")
        for w, k in (("weight", "linear"), ("bias", "same"))
    ),
)
_MERGER_TENSORS = (
    ("merger.ln_q.weight", ("merger", "ln_q", "scale"), "same"),
    ("merger.mlp.0.weight", ("merger", "fc1", "kernel"), "linear"),
    ("merger.mlp.0.bias", ("merger", "fc1", "bias"), "same"),
    ("merger.mlp.2.weight", ("merger", "fc2", "kernel"), "linear"),
    ("merger.mlp.2.bias", ("merger", "fc2", "bias"), "same"),
)
# (text prefix, vision prefix) of the two naming schemes.
ORIGINAL_NAMES = ("model.", "visual.")
V5_NAMES = ("model.language_model.", "model.visual.")


def vision_name_map(config: Qwen25VLConfig, prefix: str = "visual.") -> list[TensorMap]:
    maps = [
        TensorMap(f"{prefix}patch_embed.proj.weight", ("visual", "patch_embed", "kernel"), "conv")
    ]
    for i in range(config.vision.depth):
        maps += [
            TensorMap(f"{prefix}blocks.{i}.{hf}", ("visual", f"blocks_{i}", *path), kind, n_in)
            for hf, path, kind, n_in in _BLOCK_TENSORS
        ]
    maps += [TensorMap(prefix + hf, ("visual", *path), kind) for hf, path, kind in _MERGER_TENSORS]
    return maps


def name_map(config: Qwen25VLConfig, names: tuple[str, str] = ORIGINAL_NAMES) -> list[TensorMap]:
    """Every tensor of the checkpoint <-> its param leaf (text under `lm/`, vision under
    `visual/`)."""
    text_prefix, vision_prefix = names
    maps = []
    for m in llm_hf.name_map(config.text):
        hf_name = m.hf_name
        if hf_name.startswith("model."):
            hf_name = text_prefix + hf_name[len("model.") :]
        maps.append(dataclasses.replace(m, hf_name=hf_name, path=("lm", *m.path)))
    return maps + vision_name_map(config, vision_prefix)


def abstract_params(config: Qwen25VLConfig) -> Any:
    """Param shapes/dtypes with their logical-axis boxes, without allocating anything."""
    v = config.vision
    m = v.spatial_merge_size
    layout = vision_layout([(1, m, m)], v)
    tokens = jnp.zeros((1, 1), jnp.int32)
    pixels = jnp.zeros((m * m, v.patch_dim), jnp.float32)

    def init():
        return Qwen25VL(config).init(
            jax.random.key(0), tokens, None, pixel_values=pixels, image_layout=layout
        )

    return jax.eval_shape(init)["params"]


def load_hf(
    ckpt_dir: str | os.PathLike,
    *,
    mesh: jax.sharding.Mesh | None = None,
    rules: Sequence[tuple[str, Any]] | None = None,
    text_overrides: dict | None = None,
    vision_overrides: dict | None = None,
) -> tuple[Qwen25VLConfig, dict]:
    """Reads `config.json` + safetensors from a HF Qwen2.5-VL folder; returns (config, params).

    With `mesh` and `rules`, each param is created directly in its NamedSharding (from its
    logical axes); otherwise it lands on the default device."""
    ckpt_dir = os.fspath(ckpt_dir)
    config = Qwen25VLConfig.from_hf(
        ckpt_dir, text_overrides=text_overrides, vision_overrides=vision_overrides
    )
    boxed = abstract_params(config)
    shapes = nn.meta.unbox(boxed)
    shardings = None
    if mesh is not None:
        rules = rules if rules is not None else sharding.DEFAULT_RULES
        shardings = sharding.params_shardings(boxed, mesh, rules)
    with SafetensorsShards.of_folder(ckpt_dir, SINGLE_FILE, INDEX_FILE) as tensors:
        v5 = V5_NAMES[0] + "embed_tokens.weight" in tensors
        maps = name_map(config, V5_NAMES if v5 else ORIGINAL_NAMES)
        optional = ("lm_head.weight",) if config.text.tie_embeddings else ()
        params = llm_hf.read_mapped_params(
            ckpt_dir, maps, tensors, shapes, shardings, "Qwen2.5-VL", optional
        )
    return config, params
