"""A HF LLaVA folder (SigLIP tower + projector + Llama) loaded into the engine: logits equal to
transformers' `LlavaForConditionalGeneration` on a tiny random model, images included, and the
engine's greedy tokens equal to transformers' `generate`."""

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.torch

IMG = 3  # "<|system|>" of the test tokenizer, as the `<image>` token


@pytest.fixture(scope="module")
def llava_dir(tmp_path_factory):
    from transformers import (
        AutoTokenizer,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        SiglipVisionConfig,
    )

    from tests.generate.fixtures import EOS, build_tokenizer

    out = tmp_path_factory.mktemp("llava")
    tok = build_tokenizer(out)
    vocab = len(AutoTokenizer.from_pretrained(tok))
    vision = SiglipVisionConfig(
        image_size=16, patch_size=8, hidden_size=16, intermediate_size=32,
        num_hidden_layers=3, num_attention_heads=2,
    )  # fmt: skip
    text = LlamaConfig(
        vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=8, max_position_embeddings=128,
        eos_token_id=EOS,
    )  # fmt: skip
    config = LlavaConfig(
        vision_config=vision, text_config=text, image_token_index=IMG,
        vision_feature_layer=-2, vision_feature_select_strategy="full",
    )  # fmt: skip
    torch.manual_seed(0)
    model = LlavaForConditionalGeneration(config).eval()
    with torch.no_grad():  # larger weights: peaked logits, images that matter
        for name, p in model.named_parameters():
            if "norm" not in name:
                p.normal_(0.0, 0.3 if "projector" in name else 0.1)
    model.save_pretrained(out)
    with open(out / "preprocessor_config.json", "w") as f:
        json.dump({"image_mean": [0.5, 0.4, 0.3], "image_std": [0.2, 0.25, 0.3]}, f)
    return str(out), model


def _inputs(seed):
    rng = np.random.default_rng(seed)
    ids = [0, 20, 21] + [IMG] * 4 + [22, 23] + [IMG] * 4 + [24, 25]
    pixels = rng.standard_normal((2, 16, 16, 3)).astype(np.float32)  # preprocessed, NHWC
    return ids, pixels


def test_llava_folder_matches_transformers(llava_dir):
    import jax.numpy as jnp

    from jaxmm.generate.engine import Engine
    from jaxmm.generate.params import GenerationParams
    from jaxmm.models import llava_hf, llm

    path, model = llava_dir
    engine = Engine.from_pretrained(path, max_seq_len=64, max_batch=2, prefill_chunk=8)
    enc = engine.image_encoder
    assert (enc.image_token_id, enc.tokens_per_image, enc.image_size) == (IMG, 4, 16)
    assert enc.mean == (0.5, 0.4, 0.3) and enc.std == (0.2, 0.25, 0.3)
    loaded = llava_hf.load_llava(path)
    ids, pixels = _inputs(0)
    with torch.no_grad():
        want = (
            model(
                input_ids=torch.tensor([ids]),
                pixel_values=torch.from_numpy(pixels.transpose(0, 3, 1, 2).copy()),
            )
            .logits[0]
            .numpy()
        )
    feats = enc.encode_fn(enc.params, pixels)
    tokens = jnp.asarray([ids])
    embeds = enc.embed_fn(engine.params, tokens)
    is_img = (tokens == IMG)[..., None]
    nth = jnp.cumsum(tokens == IMG, axis=1) - 1
    embeds = jnp.where(is_img, feats[jnp.clip(nth, 0)], embeds)
    got, _ = llm.LLM(loaded.lm_config).apply(
        {"params": engine.params}, tokens, inputs_embeds=embeds
    )
    np.testing.assert_allclose(np.asarray(got[0]), want, atol=2e-4, rtol=2e-4)

    with torch.no_grad():
        out = model.generate(
            input_ids=torch.tensor([ids]),
            pixel_values=torch.from_numpy(pixels.transpose(0, 3, 1, 2).copy()),
            max_new_tokens=6, do_sample=False,
        )[0, len(ids) :].tolist()  # fmt: skip
    (c,) = engine.generate([ids], GenerationParams(max_tokens=6), [pixels])
    from tests.generate.fixtures import EOS

    assert c.token_ids == [t for t in out if t != EOS][: len(c.token_ids)]
    assert len(c.token_ids) == (out.index(EOS) if EOS in out else 6)


def test_unsupported_llava_configs_name_the_field(llava_dir, tmp_path):
    import shutil

    from jaxmm.models import llava_hf

    path, _ = llava_dir
    for field, value in (
        ("vision_feature_select_strategy", "default"),
        ("vision_feature_layer", [-2, -1]),
    ):
        bad = tmp_path / field
        shutil.copytree(path, bad)
        cfg = json.load(open(bad / "config.json"))
        cfg[field] = value
        json.dump(cfg, open(bad / "config.json", "w"))
        with pytest.raises(ValueError, match=field):
            llava_hf.load_llava(bad)
