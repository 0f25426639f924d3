"""Hugging Face safetensors <-> jaxmm LLM params, with one name map per family.

Loading reads one tensor at a time from the (possibly sharded) checkpoint, converts it to the
jaxmm layout on the host and places it straight into its target sharding with
`jax.make_array_from_callback` (each device receives only its shard; there is never more than
one host copy of one tensor, and never a copy per device). Saving writes `config.json` plus
`model.safetensors` (or `model-0000i-of-0000n.safetensors` + index) that `transformers` loads.

Layouts: a HF linear weight is [out, in]; a jaxmm kernel is [in..., out...] with heads split out
(q_proj [embed, heads, head_dim], o_proj [heads, head_dim, embed]), so a kernel is
`W.T.reshape(kernel_shape)` and back.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxmm import sharding
from jaxmm.io.state_dict import SafetensorsShards, save_state_dict
from jaxmm.models.llm import LLM, LLMConfig

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
# Tensors some checkpoints carry that the model recomputes or does not use.
_IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)


@dataclasses.dataclass(frozen=True)
class TensorMap:
    """One HF tensor <-> one jaxmm param leaf.

    kind: "linear" (HF [out, in] weight; the kernel's first `n_in` dims form `in`),
    "flat" (HF 1-D bias of a kernel with split heads), "same" (identical layout),
    "conv" (HF [out, *in] weight, e.g. a Conv3d's, as a kernel [*in, out]).
    """

    hf_name: str
    path: tuple[str, ...]
    kind: str = "same"
    n_in: int = 1
    stacked_layers: int = 0  # > 0: one param [L, ...] <- L tensors named hf_name.format(i=i)

    def hf_names(self) -> list[str]:
        if not self.stacked_layers:
            return [self.hf_name]
        return [self.hf_name.format(i=i) for i in range(self.stacked_layers)]

    def hf_shape(self, shape: Sequence[int]) -> tuple[int, ...]:
        if self.kind == "linear":
            return (math.prod(shape[self.n_in :]), math.prod(shape[: self.n_in]))
        if self.kind == "flat":
            return (math.prod(shape),)
        if self.kind == "conv":
            return (shape[-1], *shape[:-1])
        return tuple(shape)

    def to_jax(self, w: np.ndarray, shape: Sequence[int]) -> np.ndarray:
        if self.kind == "conv":
            return np.moveaxis(w, 0, -1).reshape(shape)
        return (w.T if self.kind == "linear" else w).reshape(shape)

    def to_hf(self, p: np.ndarray) -> np.ndarray:
        if self.kind == "conv":
            return np.ascontiguousarray(np.moveaxis(p, -1, 0))
        if self.kind == "linear":
            return np.ascontiguousarray(p.reshape(self.hf_shape(p.shape)[::-1]).T)
        return p.reshape(self.hf_shape(p.shape))


# Per-layer tensors: (HF name after "model.layers.{i}.", param path inside a layer, kind, n_in).
_LAYER_TENSORS = (
    ("input_layernorm.weight", ("input_layernorm", "scale"), "same", 1),
    ("post_attention_layernorm.weight", ("post_attention_layernorm", "scale"), "same", 1),
    ("self_attn.q_proj.weight", ("self_attn", "q_proj", "kernel"), "linear", 1),
    ("self_attn.k_proj.weight", ("self_attn", "k_proj", "kernel"), "linear", 1),
    ("self_attn.v_proj.weight", ("self_attn", "v_proj", "kernel"), "linear", 1),
    ("self_attn.o_proj.weight", ("self_attn", "o_proj", "kernel"), "linear", 2),
    ("mlp.gate_proj.weight", ("mlp", "gate_proj", "kernel"), "linear", 1),
    ("mlp.up_proj.weight", ("mlp", "up_proj", "kernel"), "linear", 1),
    ("mlp.down_proj.weight", ("mlp", "down_proj", "kernel"), "linear", 1),
)
_QKV_BIAS = tuple(
    (f"self_attn.{p}.bias", ("self_attn", p, "bias"), "flat", 1)
    for p in ("q_proj", "k_proj", "v_proj")
)


def name_map(config: LLMConfig) -> list[TensorMap]:
    """The Llama / Qwen2 name map (both families share the transformers naming). With
    `config.scan_layers`, each per-layer tensor kind maps to one stacked `layers/...` param."""
    maps = [TensorMap("model.embed_tokens.weight", ("embed_tokens", "embedding"))]
    layer_tensors = _LAYER_TENSORS + (_QKV_BIAS if config.qkv_bias else ())
    for hf, path, kind, n_in in layer_tensors:
        if config.scan_layers:
            maps.append(
                TensorMap(
                    f"model.layers.{{i}}.{hf}",
                    ("layers", *path),
                    kind,
                    n_in,
                    stacked_layers=config.num_layers,
                )
            )
        else:
            maps += [
                TensorMap(f"model.layers.{i}.{hf}", (f"layers_{i}", *path), kind, n_in)
                for i in range(config.num_layers)
            ]
    maps.append(TensorMap("model.norm.weight", ("norm", "scale")))
    if not config.tie_embeddings:
        maps.append(TensorMap("lm_head.weight", ("lm_head", "kernel"), "linear"))
    return maps


def abstract_params(config: LLMConfig) -> Any:
    """Param shapes/dtypes with their logical-axis boxes, without allocating anything."""
    tokens = jnp.zeros((1, 1), jnp.int32)
    variables = jax.eval_shape(lambda: LLM(config).init(jax.random.key(0), tokens, tokens))
    return variables["params"]


def _get_leaf(tree: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        tree = tree[key]
    return tree


def _set_leaf(tree: dict, path: tuple[str, ...], value: Any) -> None:
    for key in path[:-1]:
        tree = tree.setdefault(key, {})
    tree[path[-1]] = value


def load_hf(
    ckpt_dir: str | os.PathLike,
    *,
    mesh: jax.sharding.Mesh | None = None,
    rules: Sequence[tuple[str, Any]] | None = None,
    **config_overrides,
) -> tuple[LLMConfig, dict]:
    """Reads `config.json` + safetensors from a HF folder; returns (config, params).

    With `mesh` and `rules`, each param is created directly in its NamedSharding (from its
    logical axes); otherwise it lands on the default device. Params take
    `config.param_dtype` (pass `param_dtype="bfloat16"` to override). All names and shapes
    are checked against the checkpoint headers before any tensor is read.
    """
    ckpt_dir = os.fspath(ckpt_dir)
    config = LLMConfig.from_hf(ckpt_dir, **config_overrides)
    boxed = abstract_params(config)
    shapes = nn.meta.unbox(boxed)
    shardings = None
    if mesh is not None:
        shardings = sharding.params_shardings(
            boxed, mesh, rules if rules is not None else sharding.DEFAULT_RULES
        )
    with SafetensorsShards.of_folder(ckpt_dir, SINGLE_FILE, INDEX_FILE) as tensors:
        params = _read_params(ckpt_dir, config, tensors, shapes, shardings)
    return config, params


def _read_params(
    ckpt_dir: str,
    config: LLMConfig,
    tensors: SafetensorsShards,
    shapes: Any,
    shardings: Any | None,
) -> dict:
    """Checks every name and shape from the headers, then reads and places one tensor at a
    time."""
    # Some tied checkpoints still store lm_head.weight.
    optional = ("lm_head.weight",) if config.tie_embeddings else ()
    return read_mapped_params(
        ckpt_dir, name_map(config), tensors, shapes, shardings, config.model_type, optional
    )


def read_mapped_params(
    ckpt_dir: str,
    maps: Sequence[TensorMap],
    tensors: SafetensorsShards,
    shapes: Any,
    shardings: Any | None,
    what: str,
    optional: Sequence[str] = (),
) -> dict:
    """Loads the params `maps` name from an open checkpoint (any model family): checks every
    name and shape from the headers first (missing or unused tensors are errors, except
    `optional` names and recomputed buffers), then reads, converts and places one tensor at a
    time. `shapes`: the unboxed abstract params; `shardings`: their NamedShardings or None."""
    # 1. Names and shapes, from the headers only.
    missing = [n for m in maps for n in m.hf_names() if n not in tensors]
    if missing:
        raise ValueError(
            f"{ckpt_dir}: checkpoint is missing {len(missing)} tensors for a "
            f"{what} model, e.g. {missing[:5]}"
        )
    known = {n for m in maps for n in m.hf_names()} | set(optional)
    unexpected = [n for n in tensors if n not in known and not n.endswith(_IGNORED_SUFFIXES)]
    if unexpected:
        raise ValueError(
            f"{ckpt_dir}: checkpoint has {len(unexpected)} tensors this "
            f"{what} config does not use, e.g. {sorted(unexpected)[:5]}"
        )
    for m in maps:
        want = tuple(_get_leaf(shapes, m.path).shape)
        want_hf = m.hf_shape(want[1:] if m.stacked_layers else want)
        for name in m.hf_names():
            hf_shape = tensors.shape(name)
            if hf_shape != want_hf:
                raise ValueError(
                    f"{ckpt_dir}: tensor {name} has shape {hf_shape}, but the "
                    f"config implies {want_hf} (param {'/'.join(m.path)} {want})"
                )

    # 2. One tensor at a time: read, convert, place.
    params: dict = {}
    for m in maps:
        target = _get_leaf(shapes, m.path)
        if m.stacked_layers:  # one host copy of this stacked param, never one per device
            host = np.stack(
                [
                    m.to_jax(tensors.get(n), target.shape[1:]).astype(target.dtype)
                    for n in m.hf_names()
                ]
            )
        else:
            host = m.to_jax(tensors.get(m.hf_name), target.shape)
            host = np.asarray(host).astype(target.dtype)
        if shardings is None:
            arr = jnp.asarray(host)
        else:
            arr = jax.make_array_from_callback(
                host.shape, _get_leaf(shardings, m.path), lambda idx, h=host: h[idx]
            )
        _set_leaf(params, m.path, arr)
        del host
    return params


def hf_state_dict(params: Any, config: LLMConfig) -> dict[str, np.ndarray]:
    """Params -> {hf_name: numpy array in the HF layout} (gathered to this host)."""
    params = nn.meta.unbox(params)
    for path, _ in jax.tree_util.tree_leaves_with_path(params):
        if getattr(path[-1], "key", None) in ("lora_a", "lora_b"):
            raise ValueError(
                "params hold LoRA factors; merge them first "
                "(jaxmm.nn.lora.merge_lora) or save them with save_adapters (jaxmm format) "
                "or jaxmm.models.peft.save_peft_adapter (peft format)"
            )
    out = {}
    for m in name_map(config):
        try:
            leaf = _get_leaf(params, m.path)
        except (KeyError, TypeError):
            raise ValueError(f"params have no leaf {'/'.join(m.path)} (for {m.hf_name})") from None
        value = _to_host(leaf)
        if m.stacked_layers:
            out.update({n: m.to_hf(value[i]) for i, n in enumerate(m.hf_names())})
        else:
            out[m.hf_name] = m.to_hf(value)
    return out


def _to_host(x: Any) -> np.ndarray:
    """The full value on this host, also for arrays sharded across processes."""
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(jax.device_get(x))


def save_hf(
    params: Any,
    config: LLMConfig,
    out_dir: str | os.PathLike,
    *,
    max_shard_bytes: int | None = None,
) -> list[str]:
    """Writes config.json + safetensors (sharded with an index past `max_shard_bytes`).

    Files are written under temporary names and renamed, so a crash never leaves a
    half-written checkpoint under the final names. Multi-host: every process gathers, only
    process 0 writes. Returns the files written (empty on other processes).
    """
    out_dir = os.fspath(out_dir)
    tensors = hf_state_dict(params, config)
    if jax.process_index() != 0:
        return []
    os.makedirs(out_dir, exist_ok=True)
    shards: list[dict[str, np.ndarray]] = [{}]
    size = 0
    for name, arr in tensors.items():
        if max_shard_bytes and shards[-1] and size + arr.nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = arr
        size += arr.nbytes
    if len(shards) == 1:
        names = [SINGLE_FILE]
    else:
        names = [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    written = []

    def commit(name: str, write) -> None:
        final = os.path.join(out_dir, name)
        tmp = final + ".tmp"
        write(tmp)
        os.replace(tmp, final)
        written.append(final)

    for name, shard in zip(names, shards, strict=True):
        final = os.path.join(out_dir, name)
        save_state_dict(shard, final, metadata={"format": "pt"})  # atomic: temp file + rename
        written.append(final)
    if len(shards) > 1:
        index = {
            "metadata": {"total_size": int(sum(a.nbytes for a in tensors.values()))},
            "weight_map": {t: n for n, s in zip(names, shards, strict=True) for t in s},
        }
        commit(INDEX_FILE, lambda p: _write_json(index, p))
    commit("config.json", lambda p: _write_json(config.to_hf(), p))
    return written


def _write_json(obj: Any, path: str) -> None:
    with open(path, "w") as f:
        json.dump(obj, f, indent=2)
