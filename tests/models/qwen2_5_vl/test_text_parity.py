"""The Qwen2.5-VL language model (jaxmm's LLM with M-RoPE) vs transformers on text and on
arbitrary 3-D positions (fp32, CPU)."""

import jax
import numpy as np
import pytest

from jaxmm.models.llm import LLM
from jaxmm.models.qwen2_5_vl.hf import load_hf
from jaxmm.models.qwen2_5_vl.mrope import rope_index

from . import tiny

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

pytestmark = pytest.mark.torch

# docs/testing.md model parity tolerance (fp32): reduction order moves logits ~1e-6.
LOGIT_ATOL = 1e-4


@pytest.fixture(scope="module")
def model_and_folder(tmp_path_factory):
    model = tiny.torch_model(torch, transformers, seed=0)
    folder = tmp_path_factory.mktemp("qwen25vl_text")
    model.save_pretrained(folder)
    return model, folder


def _text_params(folder):
    """The language model's params alone (loaded with the whole checkpoint)."""
    config, params = load_hf(folder)
    return config, params["lm"]


def _torch_logits(model, tokens, position_ids=None):
    with torch.no_grad():
        kw = {} if position_ids is None else {"position_ids": torch.as_tensor(position_ids)}
        return model(input_ids=torch.as_tensor(tokens), **kw).logits.numpy()


def test_text_only_logits(model_and_folder):
    model, folder = model_and_folder
    cfg, params = _text_params(folder)
    tokens = tiny.text_tokens(2, 24, seed=1)
    positions, deltas = rope_index(
        tokens,
        image_token_id=cfg.image_token_id,
        video_token_id=cfg.video_token_id,
        spatial_merge_size=2,
        tokens_per_second=2,
    )
    np.testing.assert_array_equal(positions, np.broadcast_to(np.arange(24), (3, 2, 24)))
    np.testing.assert_array_equal(deltas, [0, 0])
    logits, _ = jax.jit(LLM(cfg.text).apply)({"params": params}, tokens, positions)
    want = _torch_logits(model, tokens)
    assert np.abs(want).max() > 0.5
    np.testing.assert_allclose(np.asarray(logits), want, atol=LOGIT_ATOL, rtol=0)


def test_3d_positions_logits(model_and_folder):
    """Different t/h/w positions per token: every M-RoPE section is exercised."""
    model, folder = model_and_folder
    cfg, params = _text_params(folder)
    tokens = tiny.text_tokens(2, 20, seed=2)
    positions = np.random.default_rng(3).integers(0, 60, (3, 2, 20)).astype(np.int64)
    logits, _ = jax.jit(LLM(cfg.text).apply)({"params": params}, tokens, positions)
    want = _torch_logits(model, tokens, positions)
    np.testing.assert_allclose(np.asarray(logits), want, atol=LOGIT_ATOL, rtol=0)
    # The 3-D positions matter: 1-D positions from axis 0 give different logits.
    plain, _ = jax.jit(LLM(cfg.text).apply)({"params": params}, tokens, positions[0])
    assert np.abs(np.asarray(plain) - want).max() > 1e-2
