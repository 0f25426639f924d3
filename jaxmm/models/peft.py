"""Hugging Face `peft` LoRA adapters <-> jaxmm LoRA params, so released adapters run here and
adapters trained here load with `peft.PeftModel.from_pretrained`.

The format is what `PeftModel.save_pretrained` writes: `adapter_config.json` plus
`adapter_model.safetensors` with tensors named
`base_model.model.model.layers.{i}.self_attn.q_proj.lora_A.weight` ([r, in]) and
`...lora_B.weight` ([out, r]); `modules_to_save` modules are stored whole under their plain
names (`base_model.model.lm_head.weight`). A LoRA factor maps like the HF linear weight of its
layer (`hf.name_map`): lora_A is [r, in] as W is [out, in], so jaxmm's lora_a
[in..., r] = A.T reshaped, and lora_b [r, out...] = B.T reshaped.

Supported: peft_type LORA on the seven Llama/Qwen2 projections (any subset of layers, target
lists or regexes), `use_rslora`, `lora_dropout`, `modules_to_save` of any base tensor jaxmm
has (with tied embeddings only under peft's `ensure_weight_tying`; without it peft unties
them). Anything else (DoRA, LoRA on embeddings or lm_head, bias training, per-module
rank/alpha patterns, other peft types) raises `PeftAdapterError`.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxmm.io.state_dict import load_state_dict, save_state_dict
from jaxmm.models.hf import TensorMap, _to_host, abstract_params, name_map
from jaxmm.models.llm_config import LLMConfig
from jaxmm.nn.lora import LORA_KEYS, LoRAConfig

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILES = ("adapter_model.safetensors", "adapter_model.bin")
PREFIX = "base_model.model."
# Module names jaxmm's LLM can carry LoRA on (the Linear layers inside each decoder layer).
LORA_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
_TIED = ("model.embed_tokens.weight", "lm_head.weight")  # one tensor when tied
_LORA_NAME = re.compile(r"^(?P<module>.+)\.lora_(?P<ab>[AB])\.weight$")
_LAYER_MODULE = re.compile(r"^model\.layers\.(?P<i>\d+)\.(?P<rest>.+)$")
# Config fields that change the math in ways jaxmm does not implement when set (truthy).
_UNSUPPORTED = ("use_dora", "lora_bias", "fan_in_fan_out", "use_qalora", "rank_pattern")
_UNSUPPORTED += ("alpha_pattern", "layer_replication", "trainable_token_indices")
_UNSUPPORTED += ("target_parameters", "alora_invocation_tokens")


class PeftAdapterError(ValueError):
    """An adapter jaxmm cannot apply to this model (unsupported option or wrong base)."""


def _read_config(adapter_dir: str) -> dict[str, Any]:
    path = os.path.join(adapter_dir, CONFIG_FILE)
    if not os.path.isfile(path):
        present = sorted(os.listdir(adapter_dir)) if os.path.isdir(adapter_dir) else "no folder"
        raise FileNotFoundError(f"peft adapter: no {CONFIG_FILE} in {adapter_dir!r} ({present})")
    with open(path) as f:
        cfg = json.load(f)
    peft_type = cfg.get("peft_type")
    if peft_type is None and "targets" in cfg:
        raise PeftAdapterError(
            f"{path}: a jaxmm adapter (save_adapters), not a peft one: use "
            "jaxmm.nn.lora.load_adapters"
        )
    if peft_type != "LORA":
        raise PeftAdapterError(f"{path}: peft_type {peft_type!r} is not supported (only LORA)")
    for field in _UNSUPPORTED:
        if cfg.get(field):
            raise PeftAdapterError(f"{path}: {field}={cfg[field]!r} is not supported by jaxmm")
    if cfg.get("bias", "none") != "none":
        raise PeftAdapterError(f"{path}: bias={cfg['bias']!r} is not supported (only 'none')")
    return cfg


def _read_tensors(adapter_dir: str) -> dict[str, np.ndarray]:
    for name in WEIGHTS_FILES:
        path = os.path.join(adapter_dir, name)
        if os.path.isfile(path):
            return load_state_dict(path, what="peft adapter")
    raise FileNotFoundError(f"peft adapter: none of {list(WEIGHTS_FILES)} in {adapter_dir!r}")


def _maps_by_name(config: LLMConfig) -> dict[str, tuple[TensorMap, int | None]]:
    """HF tensor name -> (its TensorMap, layer index in a stacked param or None)."""
    out = {}
    for m in name_map(config):
        for i, name in enumerate(m.hf_names()):
            out[name] = (m, i if m.stacked_layers else None)
    return out


def _check_targets(cfg: dict[str, Any], where: str) -> None:
    targets = cfg.get("target_modules")
    if isinstance(targets, str):  # a regex over module names, or "all-linear"
        return
    for target in targets or ():
        module = target.split(".")[-1]
        if module not in LORA_MODULES:
            hint = " (LoRA on embeddings / lm_head is not supported)" * (
                module in ("embed_tokens", "lm_head")
            )
            raise PeftAdapterError(
                f"{where}: target module {target!r} is not a jaxmm LoRA module "
                f"{list(LORA_MODULES)}{hint}"
            )


def _lora_targets(modules: set[tuple[int, str]], config: LLMConfig) -> tuple[str, ...]:
    """jaxmm targets selecting exactly the adapter's modules: names when every layer has the
    same set, else per-layer paths (`layers_3/self_attn/q_proj`)."""
    names = sorted({rest.split(".")[-1] for _, rest in modules})
    if len(modules) == len(names) * config.num_layers:
        return tuple(names)
    if config.scan_layers:
        raise PeftAdapterError(
            "the adapter targets different modules in different layers; load it into a model "
            "with scan_layers=False"
        )
    return tuple(sorted(f"layers_{i}/{rest.replace('.', '/')}" for i, rest in modules))


def load_peft_adapter(
    params: Any,
    config: LLMConfig,
    adapter_dir: str | os.PathLike,
    *,
    expected_base_model: str | None = None,
) -> tuple[Any, LoRAConfig]:
    """Base params (from `load_hf`) + a peft LoRA adapter -> (params, lora).

    Returns params for `LLM(config.replace(lora=lora))`: base leaves kept (any LoRA leaves in
    `params` are replaced), LoRA leaves built for exactly the adapter's modules, and
    `modules_to_save` tensors replacing their base leaves. Every name and shape is checked
    before anything is built. `expected_base_model`: raise if the adapter names another base.
    """
    adapter_dir = os.fspath(adapter_dir)
    cfg = _read_config(adapter_dir)
    where = os.path.join(adapter_dir, CONFIG_FILE)
    base_name = cfg.get("base_model_name_or_path")
    if expected_base_model is not None and base_name is not None:
        same = base_name == expected_base_model or (
            base_name.rstrip("/").split("/")[-1] == expected_base_model.rstrip("/").split("/")[-1]
        )
        if not same:
            raise PeftAdapterError(
                f"{where}: adapter was trained on base_model_name_or_path={base_name!r}, "
                f"expected {expected_base_model!r}"
            )
    _check_targets(cfg, where)
    rank = int(cfg.get("r", 8))  # peft defaults
    lora, full = _split(_read_tensors(adapter_dir), cfg, config, adapter_dir)
    values = _jax_values(lora, full, rank, config, adapter_dir)
    lora_cfg = LoRAConfig(
        rank=rank,
        alpha=float(cfg.get("lora_alpha", 8)),
        dropout=float(cfg.get("lora_dropout") or 0.0),
        targets=_lora_targets(set(lora), config),
        use_rslora=bool(cfg.get("use_rslora", False)),
    )
    return _assemble(params, config.replace(lora=lora_cfg), values), lora_cfg


def _split(
    tensors: dict[str, np.ndarray], cfg: dict[str, Any], config: LLMConfig, adapter_dir: str
) -> tuple[dict[tuple[int, str], dict[str, np.ndarray]], dict[str, np.ndarray]]:
    """Adapter tensors -> ({(layer, "self_attn.q_proj"): {"A": .., "B": ..}},
    {modules_to_save HF name: tensor}), rejecting names this model has no place for."""
    by_name = _maps_by_name(config)
    lora: dict[tuple[int, str], dict[str, np.ndarray]] = {}
    full: dict[str, np.ndarray] = {}
    for key, value in sorted(tensors.items(), key=lambda kv: ".lora_" not in kv[0]):
        name = key[len(PREFIX) :] if key.startswith(PREFIX) else key
        name = re.sub(r"\.modules_to_save\.[^.]+\.", ".", name)  # older / unusual spellings
        found = _LORA_NAME.match(name)
        if found is None:
            if config.tie_embeddings and name in _TIED:
                if not cfg.get("ensure_weight_tying"):
                    raise PeftAdapterError(
                        f"{adapter_dir}: modules_to_save holds {key!r} of a model with tied "
                        "embeddings without ensure_weight_tying; peft unties lm_head from "
                        "embed_tokens there, which jaxmm's tied LLM cannot express"
                    )
                name = _TIED[0]
                if name in full and not np.array_equal(full[name], value):
                    raise PeftAdapterError(f"{adapter_dir}: tied embed_tokens and lm_head differ")
            elif name not in by_name:
                raise PeftAdapterError(
                    f"{adapter_dir}: tensor {key!r} has no counterpart in this model "
                    f"({config.model_type}, {config.num_layers} layers; lora_embedding_* and "
                    "bias tensors are not supported)"
                )
            full[name] = value
            continue
        module, ab = found["module"], found["ab"]
        layer = _LAYER_MODULE.match(module)
        if layer is None or layer["rest"].split(".")[-1] not in LORA_MODULES:
            raise PeftAdapterError(
                f"{adapter_dir}: tensor {key!r}: LoRA on {module!r} is not supported "
                f"(jaxmm LoRA modules: {list(LORA_MODULES)})"
            )
        i = int(layer["i"])
        if i >= config.num_layers:
            raise PeftAdapterError(
                f"{adapter_dir}: tensor {key!r} is for layer {i}, but the model has "
                f"{config.num_layers} layers (adapter for another base model?)"
            )
        if f"{module}.weight" not in by_name:
            raise PeftAdapterError(f"{adapter_dir}: LoRA on {module!r}: no such module in jaxmm")
        lora.setdefault((i, layer["rest"]), {})[ab] = value
    if not lora:
        raise PeftAdapterError(f"{adapter_dir}: adapter holds no lora_A/lora_B tensors")
    for (i, rest), ab in lora.items():
        if set(ab) != {"A", "B"}:
            raise PeftAdapterError(
                f"{adapter_dir}: model.layers.{i}.{rest} has lora_{''.join(ab)} but not both"
            )
    return lora, full


def _jax_values(
    lora: dict[tuple[int, str], dict[str, np.ndarray]],
    full: dict[str, np.ndarray],
    rank: int,
    config: LLMConfig,
    adapter_dir: str,
) -> dict[tuple[str, ...], Any]:
    """Shape-checked tensors in jaxmm layout: {param path: array, or {layer: array} for a
    stacked param}."""
    by_name = _maps_by_name(config)
    shapes = nn.meta.unbox(abstract_params(config.replace(lora=None)))

    def leaf_shape(m: TensorMap) -> tuple[int, ...]:
        shape = tuple(_get(shapes, m.path).shape)
        return shape[1:] if m.stacked_layers else shape

    def put(path: tuple[str, ...], index: int | None, value: np.ndarray) -> None:
        if index is None:
            values[path] = value
        else:
            values.setdefault(path, {})[index] = value

    values: dict[tuple[str, ...], Any] = {}
    for (i, rest), ab in sorted(lora.items()):
        module = f"model.layers.{i}.{rest}"
        m, index = by_name[f"{module}.weight"]
        kernel = leaf_shape(m)
        ins, outs = kernel[: m.n_in], kernel[m.n_in :]
        a_map = TensorMap(f"{module}.lora_A.weight", m.path, "linear", m.n_in)
        b_map = TensorMap(f"{module}.lora_B.weight", m.path, "linear", 1)
        for t_map, shape, value in (
            (a_map, (*ins, rank), ab["A"]),
            (b_map, (rank, *outs), ab["B"]),
        ):
            want = t_map.hf_shape(shape)
            if tuple(value.shape) != want:
                raise PeftAdapterError(
                    f"{adapter_dir}: tensor {PREFIX}{t_map.hf_name} has shape "
                    f"{tuple(value.shape)}, the model (r={rank}, kernel {kernel}) needs {want} "
                    "(adapter for another base model?)"
                )
        put((*m.path[:-1], "lora_a"), index, a_map.to_jax(ab["A"], (*ins, rank)))
        put((*m.path[:-1], "lora_b"), index, b_map.to_jax(ab["B"], (rank, *outs)))
    for name, value in full.items():
        m, index = by_name[name]
        want = m.hf_shape(leaf_shape(m))
        if tuple(value.shape) != want:
            raise PeftAdapterError(
                f"{adapter_dir}: modules_to_save tensor {PREFIX}{name} has shape "
                f"{tuple(value.shape)}, the model needs {want} (adapter for another base model?)"
            )
        put(m.path, index, m.to_jax(value, leaf_shape(m)))
    return values


def _assemble(params: Any, config: LLMConfig, values: dict[tuple[str, ...], Any]) -> Any:
    """Params of `LLM(config)`: `values` where given, else the leaf of `params`."""
    base = nn.meta.unbox(params)

    def build(path, shape):
        keys = tuple(str(k.key) for k in path)
        old = _get(base, keys)
        new = values.get(keys)
        if isinstance(new, dict):  # stacked layers: fill the given layers
            fits = old is not None and tuple(old.shape) == tuple(shape.shape)
            stack = np.array(old) if fits else np.zeros(shape.shape, shape.dtype)
            for i, v in new.items():
                stack[i] = v
            new = stack
        if new is None:
            if keys[-1] in LORA_KEYS:
                raise PeftAdapterError(f"the adapter has no tensor for {'/'.join(keys)}")
            if old is None:
                raise PeftAdapterError(f"params have no leaf {'/'.join(keys)}")
            if tuple(old.shape) != tuple(shape.shape):
                raise PeftAdapterError(
                    f"param {'/'.join(keys)} has shape {old.shape}, config implies {shape.shape}"
                )
            return old
        new = np.asarray(new).astype(shape.dtype)
        if isinstance(old, jax.Array) and old.shape == new.shape:
            return jax.device_put(new, old.sharding)
        return jnp.asarray(new)

    return jax.tree_util.tree_map_with_path(build, nn.meta.unbox(abstract_params(config)))


def _get(tree: Any, path: Sequence[str]) -> Any:
    """The leaf or subtree at `path`, or None."""
    for key in path:
        if not isinstance(tree, dict) or key not in tree:
            return None
        tree = tree[key]
    return tree


def save_peft_adapter(
    params: Any,
    config: LLMConfig,
    lora: LoRAConfig,
    out_dir: str | os.PathLike,
    base_model_name_or_path: str | None = None,
    *,
    modules_to_save: Sequence[str] = (),
) -> None:
    """Writes the LoRA leaves of `params` as a peft adapter (`adapter_config.json` +
    `adapter_model.safetensors`) that `PeftModel.from_pretrained(hf_model, out_dir)` loads.

    `modules_to_save`: peft module names (`lm_head`, `embed_tokens`, `norm`) whose full
    tensors are stored too, for models that trained them. Multi-host: every process gathers,
    process 0 writes; the weights are written before the config, each atomically.
    """
    out_dir = os.fspath(out_dir)
    tree = nn.meta.unbox(params)
    tensors, modules = _lora_tensors(tree, config, lora)
    tensors.update(_full_tensors(tree, config, modules_to_save))
    names = sorted({mod.split(".")[-1] for mod in modules})
    if len(modules) == len(names) * config.num_layers:
        targets: list[str] | str = names
    else:  # only some layers: an exact regex (peft full-matches it against module names)
        targets = "|".join(re.escape(mod) for mod in sorted(modules))
    adapter_config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base_model_name_or_path,
        "r": lora.rank,
        "lora_alpha": lora.alpha,
        "lora_dropout": lora.dropout,
        "use_rslora": lora.use_rslora,
        "target_modules": targets,
        "modules_to_save": list(modules_to_save) or None,
        "ensure_weight_tying": bool(modules_to_save) and config.tie_embeddings,
        "bias": "none",
        "fan_in_fan_out": False,
        "use_dora": False,
        "init_lora_weights": True,
        "inference_mode": True,
        "rank_pattern": {},
        "alpha_pattern": {},
    }
    if jax.process_index() != 0:
        return
    os.makedirs(out_dir, exist_ok=True)
    save_state_dict(tensors, os.path.join(out_dir, WEIGHTS_FILES[0]), metadata={"format": "pt"})
    path = os.path.join(out_dir, CONFIG_FILE)
    with open(path + ".tmp", "w") as f:
        json.dump(adapter_config, f, indent=2)
    os.replace(path + ".tmp", path)


def _module_of(hf_name: str) -> str:
    return hf_name.removesuffix(".weight").removesuffix(".bias")


def _matches(target: str, module: str) -> bool:
    """peft's rule for a target list: the module name equals it or ends with `.target`."""
    return module == target or module.endswith(f".{target}")


def _lora_tensors(
    tree: Any, config: LLMConfig, lora: LoRAConfig
) -> tuple[dict[str, np.ndarray], list[str]]:
    """peft-named lora_A / lora_B tensors of every LoRA pair, and the HF modules they are on."""
    tensors: dict[str, np.ndarray] = {}
    modules: list[str] = []
    for m in name_map(config):
        node = _get(tree, m.path[:-1])
        if m.kind != "linear" or not isinstance(node, dict) or "lora_a" not in node:
            continue
        a, b = (_to_host(node[k]) for k in LORA_KEYS)
        if a.shape[-1] != lora.rank:
            raise PeftAdapterError(
                f"save_peft_adapter: {'/'.join(m.path[:-1])}/lora_a has rank {a.shape[-1]}, "
                f"LoRAConfig.rank is {lora.rank}"
            )
        a_map = TensorMap("", m.path, "linear", m.n_in)
        b_map = TensorMap("", m.path, "linear", 1)
        for i, name in enumerate(m.hf_names()):
            module = _module_of(name)
            a_i, b_i = (a[i], b[i]) if m.stacked_layers else (a, b)
            tensors[f"{PREFIX}{module}.lora_A.weight"] = a_map.to_hf(a_i)
            tensors[f"{PREFIX}{module}.lora_B.weight"] = b_map.to_hf(b_i)
            modules.append(module)
    if not modules:
        raise PeftAdapterError("save_peft_adapter: params contain no lora_a/lora_b leaves")
    return tensors, modules


def _full_tensors(
    tree: Any, config: LLMConfig, modules_to_save: Sequence[str]
) -> dict[str, np.ndarray]:
    """Whole tensors of the `modules_to_save` modules, under their plain peft names."""
    tensors: dict[str, np.ndarray] = {}
    found: set[str] = set()
    for m in name_map(config):
        names = m.hf_names()
        if config.tie_embeddings and m.path[0] == "embed_tokens":  # peft's ensure_weight_tying
            names = list(_TIED)
        hits = [n for n in modules_to_save if any(_matches(n, _module_of(x)) for x in names)]
        if not hits:
            continue
        found.update(hits)
        value = _to_host(_get(tree, m.path))
        for i, name in enumerate(names):
            tensors[PREFIX + name] = m.to_hf(value[i] if m.stacked_layers else value)
    unknown = [n for n in modules_to_save if n not in found]
    if unknown:
        raise PeftAdapterError(
            f"save_peft_adapter: modules_to_save {unknown} name no module of this model"
        )
    return tensors
