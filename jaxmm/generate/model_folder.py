"""Reading a model folder's metadata: checks that run before any weight is read, and its EOS ids.

A folder without tokenizer files used to fail only after every weight was loaded, with a
`transformers` message about sentencepiece/tiktoken that never says the files are missing; a
tokenizer with more tokens than the model has embedding rows gave NaN logits at run time.
Both are now errors that name the folder, raised before the weights load.
"""

from __future__ import annotations

import json
import os
from typing import Any

# Files `AutoTokenizer` can build a tokenizer from (fast JSON, sentencepiece, BPE vocab,
# WordPiece vocab, Mistral tekken). A `.gguf` file carries its tokenizer inside.
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer.model",
    "vocab.json",
    "vocab.txt",
    "spiece.model",
    "sentencepiece.bpe.model",
    "tekken.json",
)


def require_tokenizer_files(model_dir: str | os.PathLike) -> None:
    """FileNotFoundError naming the folder and the files it lacks, unless it has a tokenizer."""
    model_dir = os.fspath(model_dir)
    names = set(os.listdir(model_dir)) if os.path.isdir(model_dir) else set()
    if names & set(TOKENIZER_FILES) or any(n.endswith(".tiktoken") for n in names):
        return
    raise FileNotFoundError(
        f"model_dir {model_dir!r} has no tokenizer files: expected one of "
        f"{', '.join(TOKENIZER_FILES)} (or a *.tiktoken file). Copy them from the original "
        "checkpoint next to config.json, or pass the model's .gguf file, which carries its "
        "tokenizer."
    )


def check_vocab_fits(tokenizer: Any, vocab_size: int, model_dir: str) -> None:
    """ValueError unless every token id of `tokenizer` has an embedding row in the model.

    Fewer tokens than rows is normal (rows padded to a multiple of 64/128); more means some
    ids would index past the embedding table.
    """
    n_tokens = len(tokenizer)
    if n_tokens > vocab_size:
        raise ValueError(
            f"model_dir {model_dir!r}: the tokenizer has {n_tokens} tokens but the model's "
            f"embedding has {vocab_size} rows (config.json vocab_size); ids >= {vocab_size} "
            "would have no embedding. Is the tokenizer from another model?"
        )


def load_tokenizer(model_dir: str, vocab_size: int) -> Any:
    """The folder's Hugging Face tokenizer, checked (files present, fits the vocabulary)."""
    require_tokenizer_files(model_dir)
    from transformers import AutoTokenizer  # heavy; only when loading a folder

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    check_vocab_fits(tokenizer, vocab_size, model_dir)
    return tokenizer


def eos_from_folder(model_dir: str, tokenizer: Any) -> list[int]:
    """EOS ids from generation_config.json (Llama 3 lists several) plus the tokenizer's."""
    ids: set[int] = set()
    path = os.path.join(model_dir, "generation_config.json")
    if os.path.exists(path):
        with open(path) as f:
            eos = json.load(f).get("eos_token_id")
        if isinstance(eos, int):
            ids.add(eos)
        elif isinstance(eos, list):
            ids.update(int(e) for e in eos)
    if getattr(tokenizer, "eos_token_id", None) is not None:
        ids.add(int(tokenizer.eos_token_id))
    return sorted(ids)
