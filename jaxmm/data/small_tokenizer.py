"""A small byte-level BPE tokenizer trained on a corpus, with another tokenizer's chat format.

Why: a tiny model over a 49K-token vocabulary spends nearly all its compute on the output
projection (on this project's 2-core CPU, ~2.5 s per step of 8 x 128 tokens for a 2-layer
hidden-64 Llama over SmolLM2's vocabulary). Experiments on a closed procedural language (the
CINGS fact world) only need that language's pieces. The result keeps `like`'s special tokens
(BOS/EOS/pad, `<|im_start|>` ...) and chat template, so prompts render exactly as they do for
`like` (e.g. SmolLM2's ChatML with its system prompt); only the vocabulary is smaller.
"""

from __future__ import annotations

from collections.abc import Iterable


def train_chat_tokenizer(texts: Iterable[str], like, vocab_size: int = 512):
    """A `PreTrainedTokenizerFast` trained on `texts` with `like`'s specials and template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = list(dict.fromkeys(like.all_special_tokens))
    if not like.chat_template:
        raise ValueError(f"tokenizer {like.name_or_path!r} has no chat template to copy")
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    if vocab_size < len(alphabet) + len(specials):
        raise ValueError(
            f"vocab_size={vocab_size} is below the byte alphabet plus specials "
            f"({len(alphabet) + len(specials)})"
        )
    tok = Tokenizer(models.BPE())
    # Spaces are pieces of their own, so a word is the same tokens after a space and at the
    # start of a line ("lives in Quito." / "## Answer\nQuito"): copying a word from a passage
    # into an answer is then a plain token copy, not a learnt ' Quito' -> 'Qu' 'ito' mapping.
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(" ", behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=specials, initial_alphabet=alphabet
    )
    tok.train_from_iterator(texts, trainer)
    names = ("bos_token", "eos_token", "pad_token", "unk_token")
    kw = {n: getattr(like, n) for n in names if getattr(like, n, None) is not None}
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, **kw)
    fast.chat_template = like.chat_template
    return fast
