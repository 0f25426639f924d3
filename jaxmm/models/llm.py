"""Decoder-only language model for the Llama 3.x and Qwen2/2.5 families (Flax Linen).

One module covers both families: RMSNorm, rotary embeddings (default / linear / llama3
scaling), grouped-query attention, SwiGLU MLP, tied or untied embeddings, Qwen2's qkv bias.
The config is read from a Hugging Face `config.json` (`LLMConfig.from_hf`); weights come from
`jaxmm.models.hf.load_hf`.

Call contract (used by the trainer's tasks and by the generation engine):

    model = LLM(config)
    logits, cache = model.apply({"params": params}, tokens, positions, cache=None,
                                segment_ids=None, attention_mask=None)

`positions` is [B, T], or [3, B, T] (temporal, height, width) when `config.rope.mrope_section`
is set (Qwen2/2.5-VL M-RoPE; `jaxmm.models.qwen2_5_vl.mrope.rope_index` computes them).

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

from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp

from jaxmm.models.llm_config import FAMILIES, REMAT_POLICIES, LLMConfig
from jaxmm.nn.attention import attention
from jaxmm.nn.lora import Linear
from jaxmm.nn.norms import RMSNorm
from jaxmm.nn.rotary import apply_rope, rope_cos_sin

__all__ = [
    "FAMILIES",
    "HEAD_PARAMS",
    "LLM",
    "KVCache",
    "LLMConfig",
    "REMAT_POLICIES",
    "head_params",
    "init_cache",
]

# Top-level param collections `LLM.logits_from_hidden` reads (tied: the embedding table).
HEAD_PARAMS = ("embed_tokens", "lm_head")


def head_params(params: dict) -> dict:
    """The part of an LLM's params that its lm head reads."""
    return {k: params[k] for k in HEAD_PARAMS if k in params}


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
        return_hidden: bool = False,
    ) -> tuple[jax.Array, KVCache | None]:
        """Returns (logits [B, T, vocab], updated cache or None).

        `return_hidden=True` returns the final-norm output [B, T, hidden] in place of the
        logits, for a loss that applies `logits_from_hidden` chunk by chunk.

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
        mrope = bool(cfg.rope.mrope_section)
        if mrope and positions is not None and positions.ndim == 3:
            if positions.shape != (3, b, t):
                raise ValueError(
                    f"LLM: M-RoPE positions have shape {positions.shape}, expected "
                    f"[3, B, T] = {(3, b, t)} or [B, T]"
                )
            mrope_positions, positions = positions, None
        else:
            mrope_positions = None
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
            if positions is None and mrope_positions is None:
                positions = slots
            rows = jnp.arange(b, dtype=jnp.int32)[:, None]
            k_all, v_all = cache.k, cache.v
            attention_mask = None
        elif positions is None and mrope_positions is None:
            positions = jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t))

        if mrope:  # [B, T] positions mean the same position on all three M-RoPE axes
            positions = mrope_positions if mrope_positions is not None else positions[None]
            positions = jnp.broadcast_to(positions, (3, b, t))
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
        out = x if return_hidden else self.logits_from_hidden(x)
        new_cache = None
        if cache is not None:
            new_cache = KVCache(k=k_all, v=v_all, lengths=new_lengths)
        return out, new_cache

    def logits_from_hidden(self, x: jax.Array) -> jax.Array:
        """The lm head: final-norm output [..., hidden] -> logits [..., vocab] (logits_dtype).

        Reads only the params named in `HEAD_PARAMS`, so a chunked loss can apply it alone."""
        cfg = self.config
        logits = self.embed_tokens.attend(x) if cfg.tie_embeddings else self.lm_head(x)
        axes = ("batch", "seq", "vocab")[-logits.ndim :]
        return nn.with_logical_constraint(logits.astype(jnp.dtype(cfg.logits_dtype)), axes)
