"""A tiny random transformers Qwen2.5-VL for the parity tests (fp32, CPU).

Norm scales and biases are randomised too, so a layout mistake in any tensor shows. The text
head_dim is 16 with mrope_section (2, 3, 3): unequal sections, so a section-order bug shows.
The vision window (56 px = 2 merged tokens) is smaller than the test grids, so the windowed
and full-attention layers differ.
"""

from __future__ import annotations

import numpy as np

IMAGE_TOKEN, VIDEO_TOKEN, VISION_START, VISION_END = 250, 251, 252, 253
VOCAB = 256


def hf_config(transformers, tie: bool = False):
    return transformers.Qwen2_5_VLConfig(
        text_config=dict(
            vocab_size=VOCAB,
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            rms_norm_eps=1e-5,
            rope_parameters={"rope_type": "default", "mrope_section": [2, 3, 3], "rope_theta": 1e4},
            bos_token_id=None,
            eos_token_id=None,
        ),
        vision_config=dict(
            depth=3,
            hidden_size=32,
            intermediate_size=64,
            num_heads=2,
            out_hidden_size=64,
            window_size=56,
            fullatt_block_indexes=[1],
            tokens_per_second=2,
        ),
        image_token_id=IMAGE_TOKEN,
        video_token_id=VIDEO_TOKEN,
        vision_start_token_id=VISION_START,
        vision_end_token_id=VISION_END,
        tie_word_embeddings=tie,
    )


def torch_model(torch, transformers, seed: int = 0, tie: bool = False):
    torch.manual_seed(seed)
    model = transformers.Qwen2_5_VLForConditionalGeneration(hf_config(transformers, tie))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            if name.endswith(("norm.weight", "norm1.weight", "norm2.weight", "ln_q.weight")):
                p.copy_(1.0 + 0.1 * noise)
            else:
                p.copy_(0.08 * noise)
    return model.eval()


def text_tokens(batch: int, length: int, seed: int) -> np.ndarray:
    """Random text ids below the special ids."""
    return np.random.default_rng(seed).integers(0, 240, (batch, length), dtype=np.int64)


# Qwen's special tokens under their real names, at the tiny config's ids (250..255).
SPECIAL_TOKENS = (
    "<|image_pad|>",
    "<|video_pad|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|endoftext|>",
    "<|im_start|>",
)


def tiny_tokenizer():
    """A byte-level BPE `tokenizers.Tokenizer` (as Qwen's, 250 entries learned from printable
    ASCII and the procedural corpus' words) + Qwen's special tokens at ids 250..255."""
    import string

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from jaxmm.data import clamr_synth

    words = [
        *clamr_synth.COLORS,
        *clamr_synth.SHAPES,
        *clamr_synth.MOTIONS,
        *clamr_synth._SYLLABLES,
        *(s.upper() for s in clamr_synth._SYLLABLES),
        *clamr_synth.QUERY_TEMPLATES.values(),
        "Query: OCR: ASR: Description: hello and welcome, today the reporter talks about the",
        "festival a news report on the in today",
    ]
    # every word as its own frequent line: the merges then spell whole words
    corpus = [string.printable] + [" " + w for w in " ".join(words).split()] * 20
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB - len(SPECIAL_TOKENS), show_progress=False)
    tok.train_from_iterator(corpus, trainer)
    if tok.get_vocab_size() != VOCAB - len(SPECIAL_TOKENS):
        raise AssertionError(f"tiny BPE learned {tok.get_vocab_size()} entries, want 250")
    tok.add_special_tokens(list(SPECIAL_TOKENS))
    assert tok.token_to_id("<|video_pad|>") == VIDEO_TOKEN
    assert tok.token_to_id("<|vision_start|>") == VISION_START
    return tok


def write_folder(folder, *, weights: bool = True, seed: int = 0):
    """A tiny Qwen2.5-VL HF folder: config.json + tokenizer.json (+ model.safetensors of the
    random torch model, `save_pretrained`, with `weights`). Returns the folder."""
    import json
    from pathlib import Path

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if weights:
        import torch
        import transformers

        torch_model(torch, transformers, seed=seed).save_pretrained(folder)
    else:
        from tests.models.qwen2_5_vl.test_config import V5

        (folder / "config.json").write_text(json.dumps(V5))
    tiny_tokenizer().save(str(folder / "tokenizer.json"))
    return folder


if __name__ == "__main__":  # python -m tests.models.qwen2_5_vl.tiny <folder>
    import sys

    print(write_folder(sys.argv[1]))
