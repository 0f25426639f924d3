"""Prompt sets for RL on language models: JSONL files, and a generated verifiable task.

A prompt record is `{"prompt": str}` (sent raw) or `{"messages": [...]}` (rendered with the
tokenizer's chat template and a generation prompt), plus whatever the rewards read (e.g.
`answer`). The generated `even` task asks for a number; the `regex:^\\s*[02468]` reward pays
when the first generated word is an even digit, which a tiny random model can learn in a few
dozen GRPO steps on CPU (the test of the GRPO task).
"""

from __future__ import annotations

import os
import random
from collections.abc import Sequence
from typing import Any

from jaxmm.io.jsonl import read_jsonl

DIGITS = tuple(str(i) for i in range(10))
EVEN_WORDS = ("say", "give", "write", "pick", "a", "one", "number", "digit", "please", "now")
SPECIALS = ("<pad>", "<eos>", "<unk>")


def word_level_tokenizer(words: Sequence[str]):
    """A real `tokenizers` WordLevel tokenizer (whitespace split) with <pad>/<eos>/<unk>,
    wrapped as a transformers tokenizer so the engine and the trainer can use it."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(list(SPECIALS) + [w for w in words if w not in SPECIALS])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>"
    )


def even_task_tokenizer():
    return word_level_tokenizer(DIGITS + EVEN_WORDS)


def even_prompts(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """`n` short requests for a number ("please give a number now", ...)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        words = [rng.choice(("say", "give", "write", "pick")), rng.choice(("a", "one"))]
        words.append(rng.choice(("number", "digit")))
        words += rng.sample(("please", "now"), rng.randint(0, 2))
        out.append({"id": f"even-{i}", "prompt": " ".join(words)})
    return out


def load_prompts(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Prompt records of a JSONL file; each needs `prompt` (str) or `messages` (list)."""

    def check(record: dict[str, Any]) -> None:
        if isinstance(record.get("prompt"), str) and record["prompt"].strip():
            return
        if isinstance(record.get("messages"), list) and record["messages"]:
            return
        raise ValueError("record needs a non-empty 'prompt' string or 'messages' list")

    return read_jsonl(path, validate=check, what="RL prompts")
