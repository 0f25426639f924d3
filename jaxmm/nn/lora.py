"""LoRA (Hu et al. 2021) on any named linear layer, as a Dense wrapper.

`Linear` is the projection every jaxmm LM layer uses. When a `LoRAConfig` is given and the
layer's module path matches one of its `targets`, it adds two low-rank factors beside the
frozen `kernel`:   y = x W (+ b) + (alpha / rank) * dropout(x) A B,
(alpha / sqrt(rank) with `use_rslora`, Kalajdzievski 2023, as in peft)
with `lora_a` [in..., rank] (random) and `lora_b` [rank, out...] (zeros, so training starts
from the base model). The factors are ordinary params in the same tree, which gives:

* `trainable_mask(params)`: True on LoRA leaves only, for `optax.masked` / `Task.trainable_mask`;
* `merge_lora(params, lora)`: W += (alpha / rank) A B, LoRA leaves dropped (plain model again);
* `save_adapters` / `load_adapters`: the LoRA leaves alone, as safetensors.

Targets are glob patterns matched against the module name (`q_proj`) or the full module path
(`layers_3/self_attn/q_proj`), so `("q_proj", "v_proj")` or `("layers_1*/mlp/*",)` both work.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import json
import os
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxmm.io.state_dict import load_state_dict, save_state_dict

LORA_KEYS = ("lora_a", "lora_b")


@dataclasses.dataclass(frozen=True)
class LoRAConfig:
    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    use_rslora: bool = False  # scale alpha / sqrt(rank) instead of alpha / rank

    def __post_init__(self):
        if self.rank < 1:
            raise ValueError(f"LoRAConfig.rank must be >= 1, got {self.rank}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"LoRAConfig.dropout must be in [0, 1), got {self.dropout}")
        if isinstance(self.targets, str) or not self.targets:
            raise ValueError(f"LoRAConfig.targets must be a non-empty tuple, got {self.targets!r}")
        object.__setattr__(self, "targets", tuple(self.targets))

    @property
    def scale(self) -> float:
        if self.use_rslora:
            return self.alpha / self.rank**0.5
        return self.alpha / self.rank

    def matches(self, path: Sequence[str]) -> bool:
        full = "/".join(path)
        name = path[-1] if path else ""
        return any(
            fnmatch.fnmatchcase(full, p) or fnmatch.fnmatchcase(name, p) for p in self.targets
        )


class Linear(nn.Module):
    """Dense layer contracting the last `in_axes` input dims into `features` (DenseGeneral-like),
    with logical-axis names on its params and an optional LoRA branch."""

    features: tuple[int, ...]
    kernel_axes: tuple[str | None, ...]
    in_axes: int = 1
    use_bias: bool = False
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    kernel_init: Any = nn.initializers.normal(0.02)
    lora: LoRAConfig | None = None

    @nn.compact
    def __call__(self, x: jax.Array, deterministic: bool = True) -> jax.Array:
        in_shape = x.shape[x.ndim - self.in_axes :]
        if len(self.kernel_axes) != self.in_axes + len(self.features):
            raise ValueError(
                f"{self.name}: kernel_axes {self.kernel_axes} do not match "
                f"in {in_shape} + out {self.features}"
            )
        kernel = self.param(
            "kernel",
            nn.with_logical_partitioning(self.kernel_init, self.kernel_axes),
            (*in_shape, *self.features),
            self.param_dtype,
        )
        x = x.astype(self.dtype)
        contract = (tuple(range(x.ndim - self.in_axes, x.ndim)), tuple(range(self.in_axes)))
        y = jax.lax.dot_general(x, kernel.astype(self.dtype), (contract, ((), ())))
        if self.use_bias:
            bias = self.param(
                "bias",
                nn.with_logical_partitioning(
                    nn.initializers.zeros, self.kernel_axes[self.in_axes :]
                ),
                self.features,
                self.param_dtype,
            )
            y = y + bias.astype(self.dtype)
        if self.lora is not None and self.lora.matches(self.scope.path):
            y = y + self._lora_branch(x, in_shape, contract, deterministic)
        return y

    def _lora_branch(self, x, in_shape, contract, deterministic):
        lora = self.lora
        fan_in = int(np.prod(in_shape))
        a = self.param(
            "lora_a",
            nn.with_logical_partitioning(
                nn.initializers.normal(fan_in**-0.5), (*self.kernel_axes[: self.in_axes], None)
            ),
            (*in_shape, lora.rank),
            self.param_dtype,
        )
        b = self.param(
            "lora_b",
            nn.with_logical_partitioning(
                nn.initializers.zeros, (None, *self.kernel_axes[self.in_axes :])
            ),
            (lora.rank, *self.features),
            self.param_dtype,
        )
        if lora.dropout > 0.0:
            x = nn.Dropout(lora.dropout)(x, deterministic=deterministic)
        h = jax.lax.dot_general(x, a.astype(self.dtype), (contract, ((), ())))
        return jnp.tensordot(h, b.astype(self.dtype), axes=1) * jnp.asarray(lora.scale, self.dtype)


def _is_lora_leaf(path) -> bool:
    return any(getattr(k, "key", None) in LORA_KEYS for k in path[-1:])


def trainable_mask(params: Any) -> Any:
    """Pytree of bools: True on LoRA factors, False on the frozen base params."""
    return jax.tree_util.tree_map_with_path(lambda p, _: _is_lora_leaf(p), params)


def merge_lora(params: Any, lora: LoRAConfig) -> Any:
    """Folds every (lora_a, lora_b) pair into its kernel; returns params without LoRA leaves
    (use them with the same model config minus `lora`)."""

    def merge(node):
        if not isinstance(node, dict):
            return node
        if "lora_a" in node and "lora_b" in node:
            node = dict(node)
            a, b = node.pop("lora_a"), node.pop("lora_b")
            kernel = node["kernel"]
            a32, b32 = a.astype(jnp.float32), b.astype(jnp.float32)
            if a.ndim + b.ndim - 2 == kernel.ndim:
                delta = jnp.tensordot(a32, b32, axes=1)
            else:  # scanned layers: a [L, in..., r], b [L, r, out...]
                delta = jax.vmap(lambda x, y: jnp.tensordot(x, y, axes=1))(a32, b32)
            node["kernel"] = (kernel.astype(jnp.float32) + lora.scale * delta).astype(kernel.dtype)
            return node
        return {k: merge(v) for k, v in node.items()}

    return merge(nn.meta.unbox(params))


def lora_state(params: Any) -> dict[str, np.ndarray]:
    """The LoRA leaves alone, flattened to {'layers_0/self_attn/q_proj/lora_a': array}."""
    flat = {}
    for path, leaf in jax.tree_util.tree_leaves_with_path(nn.meta.unbox(params)):
        if _is_lora_leaf(path):
            flat["/".join(str(k.key) for k in path)] = np.asarray(jax.device_get(leaf))
    return flat


def save_adapters(params: Any, lora: LoRAConfig, out_dir: str) -> None:
    """Writes `adapter.safetensors` (LoRA leaves only) and `adapter_config.json`."""
    tensors = lora_state(params)
    if not tensors:
        raise ValueError("save_adapters: params contain no lora_a/lora_b leaves")
    os.makedirs(out_dir, exist_ok=True)
    save_state_dict(tensors, os.path.join(out_dir, "adapter.safetensors"))
    with open(os.path.join(out_dir, "adapter_config.json"), "w") as f:
        json.dump(dataclasses.asdict(lora), f, indent=2)


def load_adapters(params: Any, adapter_dir: str) -> tuple[Any, LoRAConfig]:
    """Returns params with their LoRA leaves replaced by the saved ones (shapes checked)."""
    with open(os.path.join(adapter_dir, "adapter_config.json")) as f:
        cfg = json.load(f)
    lora = LoRAConfig(**{**cfg, "targets": tuple(cfg["targets"])})
    saved = load_state_dict(os.path.join(adapter_dir, "adapter.safetensors"), what="LoRA adapter")
    params = nn.meta.unbox(params)
    expected = {
        "/".join(str(k.key) for k in p): leaf
        for p, leaf in jax.tree_util.tree_leaves_with_path(params)
        if _is_lora_leaf(p)
    }
    missing = sorted(set(expected) - set(saved))
    extra = sorted(set(saved) - set(expected))
    if missing or extra:
        raise ValueError(
            f"adapter in {adapter_dir} does not fit the params: missing {missing[:5]}, "
            f"unexpected {extra[:5]} (was the model built with the same LoRA targets?)"
        )

    def replace(path, leaf):
        if not _is_lora_leaf(path):
            return leaf
        name = "/".join(str(k.key) for k in path)
        new = saved[name]
        if new.shape != leaf.shape:
            raise ValueError(
                f"adapter tensor {name}: saved shape {new.shape} != model shape {leaf.shape}"
            )
        new = np.asarray(new).astype(leaf.dtype)
        if isinstance(leaf, jax.Array):
            return jax.device_put(new, leaf.sharding)
        return jnp.asarray(new)

    return jax.tree_util.tree_map_with_path(replace, params), lora


def add_lora(base_params: Any, abstract_params: Any, rng: jax.Array) -> Any:
    """Base params (e.g. from `load_hf`) + fresh LoRA factors, without re-initialising the base.

    `abstract_params`: `jax.eval_shape` of the LoRA model's init (shapes only). lora_a gets
    N(0, 1/fan_in), lora_b zeros (so the model starts equal to the base); every other leaf is
    taken from `base_params`, whose structure must match.
    """
    abstract_params = nn.meta.unbox(abstract_params)
    base = nn.meta.unbox(base_params)
    leaves = jax.tree_util.tree_leaves_with_path(abstract_params)
    keys = iter(jax.random.split(rng, max(1, len(leaves))))

    def build(path, shape):
        name = "/".join(str(k.key) for k in path)
        if _is_lora_leaf(path):
            if path[-1].key == "lora_b":
                return jnp.zeros(shape.shape, shape.dtype)
            fan_in = int(np.prod(shape.shape[:-1]))
            return (jax.random.normal(next(keys), shape.shape) * fan_in**-0.5).astype(shape.dtype)
        node = base
        try:
            for k in path:
                node = node[k.key]
        except (KeyError, TypeError):
            raise ValueError(f"add_lora: base params have no leaf {name}") from None
        if tuple(node.shape) != tuple(shape.shape):
            raise ValueError(
                f"add_lora: base leaf {name} has shape {node.shape}, the LoRA "
                f"model expects {shape.shape}"
            )
        return node

    return jax.tree_util.tree_map_with_path(build, abstract_params)
