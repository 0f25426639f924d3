"""SigLIP dual encoder against transformers' `SiglipModel` on a tiny random folder written with
`save_pretrained` (+ a WordLevel tokenizer.json, + the PIL image processor's config): image
embeds, text embeds and logits_per_image to 1e-4; preprocessing equal to
`SiglipImageProcessorPil`; named errors for a missing tensor and a shape mismatch."""

from __future__ import annotations

import json

import numpy as np
import pytest

from jaxmm.models.siglip import Preprocess, SiglipModel
from tests.models.tiny_siglip import IMAGE_SIZE, write_tiny_siglip

pytestmark = pytest.mark.torch


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_tiny_siglip(str(tmp_path_factory.mktemp("siglip")))


@pytest.fixture(scope="module")
def hf_model(folder):
    transformers = pytest.importorskip("transformers")
    return transformers.SiglipModel.from_pretrained(folder).eval()


def test_matches_transformers_siglip_model(folder, hf_model):
    import torch
    import transformers

    model = SiglipModel.from_hf(folder, attention_impl="reference")
    texts = ["a white square", "what colour is the figure", "the figure holds a red circle"]
    hf_tok = transformers.AutoTokenizer.from_pretrained(folder)
    want_ids = hf_tok(texts, padding="max_length", return_tensors="np")["input_ids"]
    ids = model.tokenize(texts)
    np.testing.assert_array_equal(ids, want_ids)
    assert ids.shape == (3, 64) and (ids[:, -1] == 0).all()  # pooled position is a pad
    pixels = np.random.default_rng(1).standard_normal((2, 3, IMAGE_SIZE, IMAGE_SIZE))
    pixels = pixels.astype(np.float32)
    with torch.no_grad():
        out = hf_model(input_ids=torch.as_tensor(ids, dtype=torch.long),
                       pixel_values=torch.as_tensor(pixels))  # fmt: skip
    images = pixels.transpose(0, 2, 3, 1)
    # fp32 CPU model parity, docs/testing.md tolerance.
    np.testing.assert_allclose(model.image_embeds(images), out.image_embeds.numpy(), atol=1e-4)
    np.testing.assert_allclose(model.text_embeds(ids), out.text_embeds.numpy(), atol=1e-4)
    np.testing.assert_allclose(
        model.logits_per_image(images, ids), out.logits_per_image.numpy(), atol=1e-4
    )
    norms = np.linalg.norm(model.image_embeds(images), axis=1)
    np.testing.assert_allclose(norms, 1.0, atol=1e-5)


def test_preprocessing_matches_siglip_image_processor(folder):
    import transformers

    frames = np.random.default_rng(2).integers(0, 256, (3, 20, 24, 3), dtype=np.uint8)
    processor = transformers.SiglipImageProcessorPil.from_pretrained(folder)
    want = processor(images=list(frames), return_tensors="np")["pixel_values"]
    got = Preprocess.from_hf(folder, IMAGE_SIZE)(frames)
    np.testing.assert_allclose(got, want.transpose(0, 2, 3, 1), atol=1e-6)
    assert Preprocess.from_hf(folder, IMAGE_SIZE) == Preprocess(IMAGE_SIZE)  # SigLIP defaults


def test_named_errors_for_missing_tensor_shape_and_folder(folder, tmp_path):
    import shutil

    from safetensors.numpy import load_file, save_file

    with pytest.raises(FileNotFoundError, match="no config.json"):
        SiglipModel.from_hf(tmp_path / "nowhere")
    bad = tmp_path / "missing"
    shutil.copytree(folder, bad)
    state = load_file(bad / "model.safetensors")
    save_file({k: v for k, v in state.items() if k != "text_model.head.bias"},
              bad / "model.safetensors")  # fmt: skip
    with pytest.raises(ValueError, match="missing 'text_model.head.bias'"):
        SiglipModel.from_hf(bad)
    bad = tmp_path / "shape"
    shutil.copytree(folder, bad)
    cfg = json.loads((bad / "config.json").read_text())
    cfg["text_config"]["max_position_embeddings"] = 32
    (bad / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=r"position_embedding.*\(64, 32\).*\(32, 32\)"):
        SiglipModel.from_hf(bad)
