"""Decoder-only language model for the Llama 3.x and Qwen2/2.5 families (Flax Linen).

One module covers both families: RMSNorm, rotary embeddings (default / linear / llama3
scaling), grouped-query attention, SwiGLU MLP, tied or untied embeddings, Qwen2's qkv bias.
The config is read from a Hugging Face `config.json` (`LLMConfig.from_hf`); weights come from
`jaxmm.models.hf.load_hf`.

Call contract (used by the trainer's tasks and by the generation engine):

    model = LLM(config)
    logits, cache = model.apply({"params": params}, tokens, positions, cache=None,
                                segment_ids=None, attention_mask=None)

* `cache=None`: training / scoring forward. Causal attention, plus no attention across
  `segment_ids` [B, T] (packed sequences; positions reset per segment are passed in
  `positions`), plus key padding `attention_mask` [B, T] (1 = real token).
* `cache=KVCache`: tokens [B, T] are written at slots `lengths .. lengths + T` of each row and
  attend causally to the row's cache; slots at or past the new length are masked. The returned
  cache has `lengths += T`, or `lengths += attention_mask.sum(-1)` when a right-padded
  `attention_mask` is given (batched prompts of different lengths: the padded tail is written
  but lies past the row's length, so it is masked and later overwritten). The caller keeps
  `lengths + T <= max_len`; writes past the end are dropped.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp

from jaxmm.nn.attention import IMPLS, attention
from jaxmm.nn.lora import Linear, LoRAConfig
from jaxmm.nn.norms import RMSNorm
from jaxmm.nn.rotary import RopeConfig, apply_rope, rope_cos_sin

# model_type -> the architectures name transformers uses for the causal LM.
FAMILIES = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM"}
REMAT_POLICIES = ("none", "full", "dots")


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
        where = "config dict"
        if not isinstance(source, Mapping):
            path = os.fspath(source)
            if os.path.isdir(path):
                path = os.path.join(path, "config.json")
            if not os.path.isfile(path):
                raise FileNotFoundError(f"no HF config.json at {path!r}")
            with open(path) as f:
                source = json.load(f)
            where = path
        hf = dict(source)
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


@flax.struct.dataclass
class KVCache:
    """Preallocated keys/values for all layers: k, v [L, B, max_len, kv_heads, head_dim];
    `lengths` [B] int32 = tokens already cached per row (rows are left-aligned)."""

    k: jax.Array
    v: jax.Array
    lengths: jax.Array

    @property
    def max_len(self) -> int:
        return self.k.shape[2]

    @staticmethod
    def logical_axes() -> KVCache:
        kv = (None, "batch", None, "kv_heads", "head_dim")
        return KVCache(k=kv, v=kv, lengths=("batch",))


def init_cache(config: LLMConfig, batch: int, max_len: int, dtype: Any = None) -> KVCache:
    """An empty cache (all lengths 0) holding up to `max_len` tokens per row."""
    if batch < 1 or max_len < 1:
        raise ValueError(f"init_cache: batch={batch} and max_len={max_len} must be >= 1")
    dtype = jnp.dtype(dtype or config.dtype)
    shape = (config.num_layers, batch, max_len, config.num_kv_heads, config.head_dim)
    return KVCache(
        k=jnp.zeros(shape, dtype), v=jnp.zeros(shape, dtype), lengths=jnp.zeros((batch,), jnp.int32)
    )


def _linear(cfg: LLMConfig, features, kernel_axes, name, in_axes=1, use_bias=False) -> Linear:
    return Linear(
        features=tuple(features),
        kernel_axes=tuple(kernel_axes),
        in_axes=in_axes,
        use_bias=use_bias,
        dtype=jnp.dtype(cfg.dtype),
        param_dtype=jnp.dtype(cfg.param_dtype),
        kernel_init=nn.initializers.normal(cfg.initializer_range),
        lora=cfg.lora,
        name=name,
    )


class SelfAttention(nn.Module):
    config: LLMConfig

    @nn.compact
    def __call__(self, x, kv, cos, sin, segment_ids, attention_mask, cache_ctx, det: bool):
        """kv: None (no cache) or (k, v) buffers, [L, B, S, Hkv, D] when cache_ctx names a layer
        index, else this layer's [B, S, Hkv, D] (scanned layers). Returns (y, new kv)."""
        cfg = self.config
        h, hkv, d = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        q = _linear(cfg, (h, d), ("embed", "heads", "head_dim"), "q_proj", use_bias=cfg.qkv_bias)(
            x, det
        )
        k = _linear(
            cfg, (hkv, d), ("embed", "kv_heads", "head_dim"), "k_proj", use_bias=cfg.qkv_bias
        )(x, det)
        v = _linear(
            cfg, (hkv, d), ("embed", "kv_heads", "head_dim"), "v_proj", use_bias=cfg.qkv_bias
        )(x, det)
        q = nn.with_logical_constraint(apply_rope(q, cos, sin), ("batch", "seq", "heads", None))
        k = nn.with_logical_constraint(apply_rope(k, cos, sin), ("batch", "seq", "kv_heads", None))
        v = nn.with_logical_constraint(v, ("batch", "seq", "kv_heads", None))
        new_kv = None
        if kv is None:
            out = attention(
                q,
                k,
                v,
                causal=True,
                segment_ids=segment_ids,
                mask=attention_mask,
                impl=cfg.attention_impl,
            )
        else:
            k_buf, v_buf = kv
            layer, rows, slots, kv_mask = cache_ctx
            # Scatter the new tokens straight into the (donated) buffer: O(new tokens) writes.
            idx = (rows, slots) if layer is None else (layer, rows, slots)
            k_buf = k_buf.at[idx].set(k.astype(k_buf.dtype), mode="drop")
            v_buf = v_buf.at[idx].set(v.astype(v_buf.dtype), mode="drop")
            new_kv = (k_buf, v_buf)
            k_layer = k_buf if layer is None else k_buf[layer]
            v_layer = v_buf if layer is None else v_buf[layer]
            out = attention(
                q,
                k_layer.astype(q.dtype),
                v_layer.astype(q.dtype),
                mask=kv_mask,
                impl=cfg.attention_impl,
            )
        out = nn.with_logical_constraint(out, ("batch", "seq", "heads", None))
        y = _linear(cfg, (cfg.hidden_size,), ("heads", "head_dim", "embed"), "o_proj", in_axes=2)(
            out, det
        )
        return y, new_kv


class MLP(nn.Module):
    config: LLMConfig

    @nn.compact
    def __call__(self, x, det: bool):
        cfg = self.config
        gate = _linear(cfg, (cfg.intermediate_size,), ("embed", "mlp"), "gate_proj")(x, det)
        up = _linear(cfg, (cfg.intermediate_size,), ("embed", "mlp"), "up_proj")(x, det)
        hidden = nn.with_logical_constraint(nn.silu(gate) * up, ("batch", "seq", "mlp"))
        return _linear(cfg, (cfg.hidden_size,), ("mlp", "embed"), "down_proj")(hidden, det)


class DecoderLayer(nn.Module):
    config: LLMConfig

    @nn.compact
    def __call__(
        self, x, kv, cos, sin, segment_ids, attention_mask, cache_ctx, deterministic: bool
    ):
        cfg = self.config
        norm = lambda name: RMSNorm(cfg.rms_norm_eps, jnp.dtype(cfg.param_dtype), name=name)
        attn_out, new_kv = SelfAttention(cfg, name="self_attn")(
            norm("input_layernorm")(x),
            kv,
            cos,
            sin,
            segment_ids,
            attention_mask,
            cache_ctx,
            deterministic,
        )
        x = nn.with_logical_constraint(x + attn_out, ("batch", "seq", "embed"))
        mlp_out = MLP(cfg, name="mlp")(norm("post_attention_layernorm")(x), deterministic)
        x = nn.with_logical_constraint(x + mlp_out, ("batch", "seq", "embed"))
        return x, new_kv


def _layer_class(cfg: LLMConfig):
    if cfg.remat == "none":
        return DecoderLayer
    policy = None
    if cfg.remat == "dots":
        policy = jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims
    # static_argnums counts `self`: argument 8 is `deterministic`.
    return nn.remat(DecoderLayer, policy=policy, prevent_cse=True, static_argnums=(8,))


class LLM(nn.Module):
    """Llama / Qwen2 decoder. See the module docstring for the call contract."""

    config: LLMConfig

    def setup(self):
        cfg = self.config
        self.embed_tokens = nn.Embed(
            cfg.vocab_size,
            cfg.hidden_size,
            embedding_init=nn.with_logical_partitioning(
                nn.initializers.normal(cfg.initializer_range), ("vocab", "embed")
            ),
            dtype=jnp.dtype(cfg.dtype),
            param_dtype=jnp.dtype(cfg.param_dtype),
        )
        self.norm = RMSNorm(cfg.rms_norm_eps, jnp.dtype(cfg.param_dtype))
        if not cfg.tie_embeddings:
            self.lm_head = Linear(
                features=(cfg.vocab_size,),
                kernel_axes=("embed", "vocab"),
                dtype=jnp.dtype(cfg.dtype),
                param_dtype=jnp.dtype(cfg.param_dtype),
                kernel_init=nn.initializers.normal(cfg.initializer_range),
            )
        layer_cls = _layer_class(cfg)
        if cfg.scan_layers:
            # One layer body under lax.scan: params stacked on a leading `layers` axis;
            # compile time independent of depth. The cache's layer axis is scanned with them.
            self.layers = nn.scan(
                layer_cls,
                variable_axes={"params": 0},
                split_rngs={"params": True, "dropout": True},
                in_axes=(0,) + (nn.broadcast,) * 6,
                length=cfg.num_layers,
                metadata_params={nn.PARTITION_NAME: "layers"},
            )(cfg, name="layers")
        else:
            self.layers = [layer_cls(cfg, name=f"layers_{i}") for i in range(cfg.num_layers)]

    def embed(self, tokens: jax.Array) -> jax.Array:
        """Token embeddings [B, T, hidden] (the VLM splices image features into these)."""
        return self.embed_tokens(tokens)

    def __call__(
        self,
        tokens: jax.Array | None,
        positions: jax.Array | None = None,
        cache: KVCache | None = None,
        segment_ids: jax.Array | None = None,
        attention_mask: jax.Array | None = None,
        *,
        inputs_embeds: jax.Array | None = None,
        deterministic: bool = True,
        last_logits_only: bool = False,
    ) -> tuple[jax.Array, KVCache | None]:
        """Returns (logits [B, T, vocab], updated cache or None).

        `last_logits_only=True` returns logits [B, 1, vocab] of each row's last real token
        (the last position with attention_mask == 1, else T - 1): a prefill then never builds
        the [B, T, vocab] tensor.
        """
        cfg = self.config
        x = self.embed(tokens) if inputs_embeds is None else inputs_embeds.astype(cfg.dtype)
        b, t = x.shape[:2]
        if tokens is not None and tokens.shape != (b, t):
            raise ValueError(f"LLM: tokens {tokens.shape} must be [B, T] = {(b, t)}")
        x = nn.with_logical_constraint(x, ("batch", "seq", "embed"))
        for name, arr in (
            ("positions", positions),
            ("segment_ids", segment_ids),
            ("attention_mask", attention_mask),
        ):
            if arr is not None and arr.shape != (b, t):
                raise ValueError(f"LLM: {name} has shape {arr.shape}, expected [B, T] = {(b, t)}")

        # Each row's last real token: the last position with attention_mask == 1.
        last_index = jnp.full((b,), t - 1, jnp.int32)
        if attention_mask is not None:
            flipped = jnp.argmax(attention_mask[:, ::-1].astype(bool), axis=1)
            last_index = (t - 1 - flipped).astype(jnp.int32)
        cache_ctx = None
        if cache is not None:
            if segment_ids is not None:
                raise ValueError("LLM: segment_ids (packing) are not supported with a KV cache")
            if cache.k.shape[:2] != (cfg.num_layers, b):
                raise ValueError(
                    f"LLM: cache k {cache.k.shape} does not fit {cfg.num_layers} "
                    f"layers and batch {b}"
                )
            start = cache.lengths.astype(jnp.int32)
            step = (
                jnp.full((b,), t, jnp.int32)
                if attention_mask is None
                else (attention_mask.astype(jnp.int32).sum(-1))
            )
            new_lengths = start + step
            slots = start[:, None] + jnp.arange(t, dtype=jnp.int32)[None, :]  # [B, T]
            kv_pos = jnp.arange(cache.max_len, dtype=jnp.int32)[None, None, :]
            kv_mask = (kv_pos <= slots[:, :, None]) & (kv_pos < new_lengths[:, None, None])
            if positions is None:
                positions = slots
            rows = jnp.arange(b, dtype=jnp.int32)[:, None]
            k_all, v_all = cache.k, cache.v
            attention_mask = None
        elif positions is None:
            positions = jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t))

        cos, sin = rope_cos_sin(positions, cfg.head_dim, cfg.rope, jnp.dtype(cfg.dtype))
        if cfg.scan_layers:
            kv = None
            if cache is not None:
                kv, cache_ctx = (k_all, v_all), (None, rows, slots, kv_mask[:, None])
            x, new_kv = self.layers(
                x, kv, cos, sin, segment_ids, attention_mask, cache_ctx, deterministic
            )
            if new_kv is not None:
                k_all, v_all = new_kv
        else:
            for i, layer in enumerate(self.layers):
                kv = None
                if cache is not None:
                    kv, cache_ctx = (k_all, v_all), (i, rows, slots, kv_mask[:, None])
                x, new_kv = layer(
                    x, kv, cos, sin, segment_ids, attention_mask, cache_ctx, deterministic
                )
                if new_kv is not None:
                    k_all, v_all = new_kv
        if last_logits_only:
            x = jnp.take_along_axis(x, last_index[:, None, None], axis=1)
        x = self.norm(x)
        if cfg.tie_embeddings:
            logits = self.embed_tokens.attend(x)
        else:
            logits = self.lm_head(x)
        logits = nn.with_logical_constraint(
            logits.astype(jnp.dtype(cfg.logits_dtype)), ("batch", "seq", "vocab")
        )
        new_cache = None
        if cache is not None:
            new_cache = KVCache(k=k_all, v=v_all, lengths=new_lengths)
        return logits, new_cache
