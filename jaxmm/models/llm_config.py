"""`LLMConfig`: the decoder's hyper-parameters, read from a Hugging Face `config.json`.

Reads the Llama and Qwen2 families in both rope forms (transformers-5 `rope_parameters`, older
`rope_theta` + `rope_scaling`) and writes back a `config.json` transformers loads. Unknown
families, rope types and unsupported options fail with an error naming the field.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from typing import Any

from jaxmm.nn.attention import IMPLS
from jaxmm.nn.lora import LoRAConfig
from jaxmm.nn.rotary import RopeConfig

# model_type -> the architectures name transformers uses for the causal LM.
FAMILIES = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM"}
REMAT_POLICIES = ("none", "full", "dots")


def read_hf_config(source: Mapping[str, Any] | str | os.PathLike) -> tuple[dict, str]:
    """A HF `config.json` as a dict (from a dict, the file, or its folder), and where it came
    from for error messages. The one reader every `from_hf` uses."""
    if isinstance(source, Mapping):
        return dict(source), "config dict"
    path = os.fspath(source)
    if os.path.isdir(path):
        path = os.path.join(path, "config.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no HF config.json at {path!r}")
    with open(path) as f:
        return json.load(f), path


@dataclasses.dataclass(frozen=True)
class LLMConfig:
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float = 1e-6
    rope: RopeConfig = RopeConfig()
    tie_embeddings: bool = False
    qkv_bias: bool = False
    max_position_embeddings: int = 8192
    model_type: str = "llama"
    initializer_range: float = 0.02
    bos_token_id: int | None = None
    eos_token_ids: tuple[int, ...] = ()
    pad_token_id: int | None = None
    # Run-time choices (not part of the checkpoint).
    dtype: str = "float32"  # compute dtype
    param_dtype: str = "float32"
    logits_dtype: str = "float32"
    attention_impl: str = "auto"  # auto | reference | xla | cudnn
    remat: str = "none"  # none | full | dots (save matmul outputs)
    scan_layers: bool = False  # params stacked [num_layers, ...] under a `layers` logical axis
    lora: LoRAConfig | None = None

    def __post_init__(self):
        def need(cond, field, msg):
            if not cond:
                raise ValueError(f"LLMConfig.{field}: {msg}")

        for f in (
            "vocab_size",
            "hidden_size",
            "intermediate_size",
            "num_layers",
            "num_heads",
            "num_kv_heads",
            "head_dim",
        ):
            need(
                isinstance(getattr(self, f), int) and getattr(self, f) > 0,
                f,
                f"must be a positive int, got {getattr(self, f)!r}",
            )
        need(
            self.num_heads % self.num_kv_heads == 0,
            "num_kv_heads",
            f"{self.num_heads} heads are not a multiple of {self.num_kv_heads} kv heads",
        )
        need(
            self.model_type in FAMILIES,
            "model_type",
            f"{self.model_type!r} is not one of {sorted(FAMILIES)}",
        )
        need(self.attention_impl in IMPLS, "attention_impl", f"must be one of {IMPLS}")
        need(self.remat in REMAT_POLICIES, "remat", f"must be one of {REMAT_POLICIES}")
        for f in ("dtype", "param_dtype", "logits_dtype"):
            need(
                getattr(self, f) in ("float32", "bfloat16", "float16"),
                f,
                f"{getattr(self, f)!r} is not float32/bfloat16/float16",
            )

    def replace(self, **changes) -> LLMConfig:
        return dataclasses.replace(self, **changes)

    @property
    def num_params(self) -> int:
        """Parameter count (embeddings included, LoRA excluded)."""
        e, m, d = self.hidden_size, self.intermediate_size, self.head_dim
        attn = e * d * (self.num_heads * 2 + self.num_kv_heads * 2)
        if self.qkv_bias:
            attn += d * (self.num_heads + 2 * self.num_kv_heads)
        layer = attn + 3 * e * m + 2 * e
        head = 0 if self.tie_embeddings else self.vocab_size * e
        return self.vocab_size * e + self.num_layers * layer + e + head

    @classmethod
    def from_hf(cls, source: Mapping[str, Any] | str | os.PathLike, **overrides) -> LLMConfig:
        """Builds the config from a HF `config.json` (a dict, the file, or its folder).

        Reads both rope forms: transformers-5 `rope_parameters` (theta inside) and the older
        top-level `rope_theta` + `rope_scaling`. `overrides` set run-time fields (dtype, ...).
        """
        hf, where = read_hf_config(source)
        model_type = _family(hf, where)

        def get(key, default=None, required=False):
            if key not in hf or hf[key] is None:
                if required:
                    raise ValueError(f"{where}: missing required field {key!r}")
                return default
            return hf[key]

        act = get("hidden_act", "silu")
        if act != "silu":
            raise ValueError(f"{where}: hidden_act={act!r} is not supported (only 'silu')")
        if model_type == "llama" and (get("attention_bias", False) or get("mlp_bias", False)):
            raise ValueError(f"{where}: Llama attention_bias/mlp_bias=True is not supported")
        if model_type == "qwen2" and get("use_sliding_window", False):
            raise ValueError(f"{where}: Qwen2 use_sliding_window=True is not supported")
        heads = get("num_attention_heads", required=True)
        hidden = get("hidden_size", required=True)
        eos = get("eos_token_id", ())
        eos = tuple(eos) if isinstance(eos, list | tuple) else (int(eos),)
        fields = dict(
            vocab_size=get("vocab_size", required=True),
            hidden_size=hidden,
            intermediate_size=get("intermediate_size", required=True),
            num_layers=get("num_hidden_layers", required=True),
            num_heads=heads,
            num_kv_heads=get("num_key_value_heads", heads),
            head_dim=get("head_dim", hidden // heads),
            rms_norm_eps=float(get("rms_norm_eps", 1e-6)),
            rope=_rope_from_hf(hf, where),
            tie_embeddings=bool(get("tie_word_embeddings", False)),
            qkv_bias=model_type == "qwen2",
            max_position_embeddings=get("max_position_embeddings", 8192),
            model_type=model_type,
            initializer_range=float(get("initializer_range", 0.02)),
            bos_token_id=get("bos_token_id"),
            eos_token_ids=eos,
            pad_token_id=get("pad_token_id"),
        )
        return cls(**{**fields, **overrides})

    def to_hf(self) -> dict[str, Any]:
        """A `config.json` dict transformers loads (old-style rope fields, widest support)."""
        rope = self.rope
        scaling = None
        if rope.rope_type == "linear":
            scaling = {"rope_type": "linear", "factor": rope.factor}
        elif rope.rope_type == "llama3":
            scaling = {
                "rope_type": "llama3",
                "factor": rope.factor,
                "low_freq_factor": rope.low_freq_factor,
                "high_freq_factor": rope.high_freq_factor,
                "original_max_position_embeddings": rope.original_max_positions,
            }
        eos = list(self.eos_token_ids)
        out = {
            "architectures": [FAMILIES[self.model_type]],
            "model_type": self.model_type,
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_heads,
            "num_key_value_heads": self.num_kv_heads,
            "head_dim": self.head_dim,
            "hidden_act": "silu",
            "rms_norm_eps": self.rms_norm_eps,
            "rope_theta": rope.theta,
            "rope_scaling": scaling,
            "tie_word_embeddings": self.tie_embeddings,
            "max_position_embeddings": self.max_position_embeddings,
            "initializer_range": self.initializer_range,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": eos[0] if len(eos) == 1 else (eos or None),
            "pad_token_id": self.pad_token_id,
            "torch_dtype": self.param_dtype,
        }
        if self.model_type == "llama":
            out.update(attention_bias=False, mlp_bias=False)
        else:
            out.update(use_sliding_window=False, sliding_window=None)
        return out


def _family(hf: Mapping[str, Any], where: str) -> str:
    model_type = hf.get("model_type")
    archs = list(hf.get("architectures") or [])
    if model_type is None and archs:
        by_arch = {v: k for k, v in FAMILIES.items()}
        model_type = next((by_arch[a] for a in archs if a in by_arch), None)
    if model_type not in FAMILIES:
        raise ValueError(
            f"{where}: unsupported model_type={hf.get('model_type')!r} "
            f"(architectures={archs}); jaxmm's LLM supports model_type in {sorted(FAMILIES)} "
            f"({sorted(FAMILIES.values())})"
        )
    unknown = [a for a in archs if a not in FAMILIES.values()]
    if unknown:
        raise ValueError(
            f"{where}: unsupported architectures {unknown}; supported: {sorted(FAMILIES.values())}"
        )
    return model_type


def _rope_from_hf(hf: Mapping[str, Any], where: str) -> RopeConfig:
    params = hf.get("rope_parameters")
    if (
        isinstance(params, Mapping)
        and params
        and all(isinstance(v, Mapping) for v in params.values())
    ):  # per-layer-type form: {"full_attention": {...}, ...}
        params = params.get("full_attention") or next(iter(params.values()))
    if isinstance(params, Mapping) and params:
        theta = params.get("rope_theta", hf.get("rope_theta", 10000.0))
        scaling = params
    else:
        theta = hf.get("rope_theta", 10000.0)
        scaling = hf.get("rope_scaling") or {}
    rope_type = scaling.get("rope_type", scaling.get("type", "default")) or "default"
    try:
        if rope_type == "default":
            return RopeConfig(theta=float(theta))
        if rope_type == "linear":
            return RopeConfig(
                theta=float(theta), rope_type="linear", factor=float(scaling["factor"])
            )
        if rope_type == "llama3":
            return RopeConfig(
                theta=float(theta),
                rope_type="llama3",
                factor=float(scaling["factor"]),
                low_freq_factor=float(scaling["low_freq_factor"]),
                high_freq_factor=float(scaling["high_freq_factor"]),
                original_max_positions=int(scaling["original_max_position_embeddings"]),
            )
    except KeyError as e:
        raise ValueError(f"{where}: rope scaling {rope_type!r} is missing field {e}") from None
    raise ValueError(
        f"{where}: rope scaling type {rope_type!r} is not supported (default, linear, llama3)"
    )
