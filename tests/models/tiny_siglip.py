"""A tiny random SigLIP folder as `save_pretrained` writes it, with a WordLevel tokenizer and
the image processor's config (tests/models/test_siglip.py, tests/pipelines/test_reagent_v.py)."""

from __future__ import annotations

import json
import os

import pytest

WORDS = "a the figure square circle white black red blue left right is what colour holds".split()
IMAGE_SIZE = 16


def write_tiny_siglip(folder: str, seed: int = 0) -> str:
    """A random 2-layer SigLIP (vision 16 px / patch 4, text max_length 64) saved into
    `folder` with a WordLevel tokenizer (lowercase, whitespace, `</s>` appended) and the
    image processor's config. Returns the folder."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    tokenizers = pytest.importorskip("tokenizers")
    common = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4)
    vocab = {w: i for i, w in enumerate(["<pad>", "<unk>", "</s>", *WORDS])}
    cfg = transformers.SiglipConfig(
        text_config=dict(
            common, vocab_size=len(vocab), max_position_embeddings=64, projection_size=32
        ),
        vision_config=dict(common, image_size=IMAGE_SIZE, patch_size=4),
    )
    torch.manual_seed(seed)
    model = transformers.SiglipModel(cfg).eval()
    with torch.no_grad():  # randomise norms/biases too so every tensor's layout is checked
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape))
    model.save_pretrained(folder)
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="<unk>"))
    tok.normalizer = tokenizers.normalizers.Lowercase()
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tok.post_processor = tokenizers.processors.TemplateProcessing(
        single="$A </s>", special_tokens=[("</s>", 2)]
    )
    tok.save(os.path.join(folder, "tokenizer.json"))
    with open(os.path.join(folder, "tokenizer_config.json"), "w") as f:
        json.dump(
            {
                "tokenizer_class": "PreTrainedTokenizerFast",
                "pad_token": "<pad>",
                "unk_token": "<unk>",
                "eos_token": "</s>",
                "model_max_length": 64,
            },
            f,
        )
    processor = transformers.SiglipImageProcessorPil(
        size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    )
    processor.save_pretrained(folder)
    return folder
