"""CLaMR inputs and model on the real all-MiniLM-L6-v2 tokenizer and weights (1 layer, fast)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmm.data.multivent import modality_id
from jaxmm.models.clamr import (
    Clamr,
    MiniLMBackbone,
    encode_documents,
    encode_queries,
    load_minilm,
)
from jaxmm.models.clamr_inputs import (
    ClamrInputs,
    EmptyDocumentError,
    InputConfig,
    QueryTooLongError,
)
from jaxmm.models.text_encoder import BertEncoder, minilm_model_dir

N_VIS = 8  # 2 frames x 4 patches (16 px frames, patch 8)
BUDGETS = (("ocr", 4), ("asr", 6), ("description", 5))
DOC = {
    "ocr": "KALOMI",
    "asr": "the reporter talks about the tenvos festival",
    "description": "a storm in rome",
}


@functools.lru_cache(maxsize=1)
def _minilm():
    return load_minilm(minilm_model_dir(), num_layers=1)


def _inputs(**kw) -> ClamrInputs:
    cfg = dict(query_len=24, num_buffer_tokens=10, num_visual_tokens=N_VIS, budgets=BUDGETS)
    return ClamrInputs(_minilm()[2], InputConfig(**(cfg | kw)))


def _decode(inputs, ids):
    return inputs.tokenizer.decode([int(i) for i in ids])


def test_query_layout_has_buffer_tokens_and_fixed_length():
    inputs = _inputs()
    ids, mask = inputs.queries(["a red circle", "x"])
    assert ids.shape == mask.shape == (2, 24)
    n = int(mask[0].sum())
    assert (ids[0, 0], ids[0, n - 1]) == (*inputs.layout.query_open, *inputs.layout.query_close)
    assert list(ids[0, n - 11 : n - 1]) == [inputs.layout.buffer] * 10
    assert _decode(inputs, ids[0, 1 : n - 11]) == "query : a red circle"
    assert not mask[0, n:].any() and (ids[0, n:] == inputs.pad).all()
    with pytest.raises(QueryTooLongError, match="query 0 .* query_len is 24"):
        inputs.queries(["word " * 20])


def test_document_modality_ids_follow_the_layout():
    """Frames first (id 1), then each text field under its own id (MultiVENT's ids)."""
    inputs = _inputs()
    docs = inputs.documents([DOC])
    ids, mod = docs.ids[0], docs.modality[0]
    assert ids.shape == (inputs.doc_len,) and inputs.doc_len <= 2048
    assert mod[0] == 0 and (mod[1 : 1 + N_VIS] == modality_id("video")).all()
    assert (ids[1 : 1 + N_VIS] == inputs.vis).all()
    assert _decode(inputs, ids[mod == modality_id("ocr")]) == "kalomi"
    # the ASR budget is 6 tokens: "tenvos" (ten ##vos) is cut
    assert _decode(inputs, ids[mod == modality_id("speech")]) == "the reporter talks about the ten"
    assert _decode(inputs, ids[mod == modality_id("description")]) == "a storm in rome"
    assert (mod[docs.mask[0] == 0] == 0).all()  # padding and [SEP] are never scored
    labels = _decode(inputs, ids[(mod == 0) & (docs.mask[0] == 1)][1:-1])
    assert labels == "ocr : asr : description :"


def test_overlong_text_is_truncated_to_its_budget():
    inputs = _inputs()
    long_asr = " ".join(["festival"] * 50)
    docs = inputs.documents([DOC | {"asr": long_asr}])
    assert (docs.modality[0] == modality_id("asr")).sum() == dict(BUDGETS)["asr"]
    assert docs.ids.shape[1] == inputs.doc_len  # the document length does not grow
    with pytest.raises(ValueError, match="max_doc_len"):
        _inputs(max_doc_len=20)


def test_empty_document_is_named():
    inputs = _inputs()
    with pytest.raises(EmptyDocumentError, match="document vid-7"):
        inputs.documents([{"ocr": " ", "asr": "", "description": ""}], [False], names=["vid-7"])
    docs = inputs.documents([{"ocr": "", "asr": "", "description": ""}], [True])
    assert set(np.unique(docs.modality)) == {0, 1}  # frames alone are a document


def test_separate_passes_keep_the_same_tokens_and_ids():
    inputs = _inputs()
    joint = inputs.documents([DOC])
    sep = inputs.documents([DOC], separate=True)
    assert sep.ids.shape == (1, 4, inputs.pass_len)
    for k in range(1, 5):
        assert (sep.modality[0, k - 1] > 0).sum() == (joint.modality[0] == k).sum()
        assert set(np.unique(sep.modality[0, k - 1])) == {0, k}
        np.testing.assert_array_equal(
            sep.ids[0, k - 1][sep.modality[0, k - 1] == k], joint.ids[0][joint.modality[0] == k]
        )


# ------------------------------------------------------------------------------ model


def _model_and_params(pooling="tokens"):
    config, bert_params, _ = _minilm()
    model = Clamr(MiniLMBackbone(config, patch=8), dim=32, pooling=pooling)
    inputs = _inputs()
    docs = inputs.documents([DOC, DOC | {"ocr": "ZARPEL"}])
    frames = jax.random.uniform(jax.random.key(0), (2, 2, 16, 16, 3))
    params = model.init(jax.random.key(1), docs.ids, docs.mask, docs.modality, frames)["params"]
    params = jax.tree.map(lambda x: x.unbox() if hasattr(x, "unbox") else x, params,
                          is_leaf=lambda x: hasattr(x, "unbox"))  # fmt: skip
    params = {**params, "backbone": {**params["backbone"], "bert": bert_params}}
    return model, params, inputs, docs, frames


def test_embeddings_are_unit_norm_and_padding_is_zero():
    model, params, inputs, docs, frames = _model_and_params()
    emb, mod = encode_documents(model, params, docs.ids, docs.mask, docs.modality, frames)
    emb, mod = np.asarray(emb), np.asarray(mod)
    assert emb.shape == (*docs.ids.shape, 32)
    norms = np.linalg.norm(emb, axis=-1)
    np.testing.assert_allclose(norms[mod > 0], 1.0, atol=1e-5)
    assert (norms[mod == 0] == 0).all()  # padding, [CLS]/[SEP] and field labels zeroed
    np.testing.assert_array_equal(mod, docs.modality)
    q_ids, q_mask = inputs.queries(["the on-screen text says kalomi"])
    q_emb, q_keep = encode_queries(model, params, q_ids, q_mask)
    q_norms = np.linalg.norm(np.asarray(q_emb), axis=-1)
    np.testing.assert_allclose(q_norms[q_mask == 1], 1.0, atol=1e-5)
    assert (q_norms[q_mask == 0] == 0).all() and (np.asarray(q_keep) == (q_mask == 1)).all()


def test_joint_encoding_contextualises_text_with_frames_and_separate_does_not():
    """Changing only the frames moves the OCR tokens' embeddings in the joint sequence (they
    attend to the frame tokens) but not in the per-modality passes."""
    model, params, inputs, docs, frames = _model_and_params()
    other = frames[::-1]  # swap the two documents' frames
    ocr = docs.modality == modality_id("ocr")
    a, _ = encode_documents(model, params, docs.ids, docs.mask, docs.modality, frames)
    b, _ = encode_documents(model, params, docs.ids, docs.mask, docs.modality, other)
    assert np.abs(np.asarray(a - b)[ocr]).max() > 1e-3
    vis = docs.modality == 1
    assert np.abs(np.asarray(a - b)[vis]).max() > 1e-3  # the frames are really spliced in

    sep = inputs.documents([DOC, DOC | {"ocr": "ZARPEL"}], separate=True)
    a, m = encode_documents(model, params, sep.ids, sep.mask, sep.modality, frames)
    b, _ = encode_documents(model, params, sep.ids, sep.mask, sep.modality, other)
    assert a.shape == (2, 4 * inputs.pass_len, 32)
    text = np.asarray(m) > 1
    np.testing.assert_allclose(np.asarray(a)[text], np.asarray(b)[text], atol=1e-6)
    assert np.abs(np.asarray(a - b)[np.asarray(m) == 1]).max() > 1e-3


def test_mean_pooling_is_one_unit_vector():
    model, params, _, docs, frames = _model_and_params("mean")
    emb, keep = encode_documents(model, params, docs.ids, docs.mask, docs.modality, frames)
    assert emb.shape == (2, 1, 32) and np.asarray(keep).tolist() == [[1], [1]]
    np.testing.assert_allclose(np.linalg.norm(np.asarray(emb), axis=-1), 1.0, atol=1e-5)


def test_bert_inputs_embeds_of_the_word_embeddings_change_nothing():
    config, bert_params, _ = _minilm()
    ids = jnp.array([[101, 7592, 2088, 102, 0]])
    mask = jnp.array([[1, 1, 1, 1, 0]])
    enc = BertEncoder(config)
    plain = enc.apply({"params": bert_params}, ids, mask)
    words = jnp.asarray(bert_params["word_embeddings"]["embedding"])[ids]
    spliced = enc.apply({"params": bert_params}, ids, mask, inputs_embeds=words)
    np.testing.assert_allclose(np.asarray(plain), np.asarray(spliced), atol=1e-6)
    partial = enc.apply(
        {"params": bert_params}, ids, mask, inputs_embeds=jnp.zeros_like(words),
        embeds_mask=jnp.array([[False, True, False, False, False]]),
    )  # fmt: skip
    assert np.abs(np.asarray(partial - plain)).max() > 1e-3
