"""CLaMR inputs in Qwen2.5-VL's layout, on a checkpoint folder's own tokenizer.json (the tiny
byte-level BPE of tests/models/qwen2_5_vl/tiny.py; Qwen's special tokens at the tiny config's
ids: <|image_pad|> 250, <|video_pad|> 251, <|vision_start|> 252, <|vision_end|> 253,
<|endoftext|> 254)."""

import functools

import numpy as np
import pytest

from configs.clamr import get_config
from jaxmm.data.multivent import MultiventSplit, Video, modality_id
from jaxmm.models.clamr_inputs import (
    ClamrInputs,
    EmptyDocumentError,
    InputConfig,
    QueryTooLongError,
    load_tokenizer,
    qwen_layout,
)
from tests.models.qwen2_5_vl.tiny import tiny_tokenizer, write_folder

VIDEO_PAD, VSTART, VEND, EOT = 251, 252, 253, 254
N_VIS = 8
BUDGETS = (("ocr", 4), ("asr", 6), ("description", 5))
DOC = {
    "ocr": "KALOMI",
    "asr": "the reporter talks about the tenvos festival",
    "description": "a storm in rome",
}


@functools.lru_cache(maxsize=1)
def _tokenizer():
    return tiny_tokenizer()


def _inputs(**kw) -> ClamrInputs:
    cfg = dict(query_len=24, num_buffer_tokens=10, num_visual_tokens=N_VIS, budgets=BUDGETS)
    tok = _tokenizer()
    return ClamrInputs(tok, InputConfig(**(cfg | kw)), qwen_layout(tok))


def _text(ids) -> str:
    return _tokenizer().decode([int(i) for i in ids])


def test_query_is_prefix_text_then_ten_endoftext_buffers_padded():
    inputs = _inputs()
    ids, mask = inputs.queries(["a red circle", "x"])
    assert ids.shape == mask.shape == (2, 24)
    # "Query: a red circle" is 10 BPE tokens (Q uer y : Ġa Ġre d Ġc ir cle), then 10 buffers
    assert mask[0].tolist() == [1] * 20 + [0] * 4
    assert _text(ids[0, :10]) == "Query: a red circle"
    assert ids[0, :4].tolist() == [48, 232, 88, 25]  # no BOS / [CLS] in front
    assert (ids[0, 10:] == EOT).all()  # buffers and padding are both <|endoftext|>
    with pytest.raises(QueryTooLongError, match="query 0 .* query_len is 24"):
        inputs.queries(["red " * 10])


def test_document_is_the_vision_run_then_labelled_fields_within_budgets():
    inputs = _inputs()
    docs = inputs.documents([DOC])
    ids, mod, mask = docs.ids[0], docs.modality[0], docs.mask[0]
    # run: start + 8 video pads + end; labels " OCR:" 3, " ASR:" 3, " Description:" 5 tokens
    assert inputs.doc_len == 1 + N_VIS + 1 + (3 + 4) + (3 + 6) + (5 + 5) == 36
    assert ids.shape == (36,) and mask.sum() == 36  # every field fills its budget here
    assert ids[:10].tolist() == [VSTART, *[VIDEO_PAD] * N_VIS, VEND]
    assert mod[:10].tolist() == [0, *[1] * N_VIS, 0]
    assert mod[10:].tolist() == [0] * 3 + [2] * 4 + [0] * 3 + [3] * 6 + [0] * 5 + [4] * 5
    assert _text(ids[10:13]) == " OCR:" and _text(ids[17:20]) == " ASR:"
    assert _text(ids[mod == modality_id("ocr")]) == " KALOMI"
    # over-long fields are cut to their own budgets: ASR 6 of 9 tokens, description 5 of 10
    assert _text(ids[mod == modality_id("speech")]) == " the reporter talks about the t"
    assert _text(ids[mod == modality_id("description")]) == " a storm"


def test_empty_fields_keep_fixed_length_and_an_empty_document_is_named():
    inputs = _inputs()
    docs = inputs.documents([{"ocr": "", "asr": "  ", "description": "rome"}])
    mod = docs.modality[0]
    assert docs.ids.shape == (1, inputs.doc_len)
    assert not (mod == 2).any() and not (mod == 3).any() and (mod == 4).sum() > 0
    no_frames = inputs.documents([{"description": "rome"}], has_frames=[False])
    assert VSTART not in no_frames.ids[0] and (no_frames.modality[0] != 1).all()
    with pytest.raises(EmptyDocumentError, match="document v7: no frames and no text"):
        inputs.documents([{"ocr": " "}], has_frames=[False], names=["v7"])


def test_tokenizer_from_another_checkpoint_is_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="tokenizer.json missing"):
        load_tokenizer(tmp_path / "config.json")
    with pytest.raises(ValueError, match=r"<\|video_pad\|> is id 251, the model config says 7"):
        qwen_layout(_tokenizer(), expect={"<|video_pad|>": 7})
    from tokenizers import Tokenizer, models

    bert_like = Tokenizer(models.WordLevel({"[PAD]": 0, "[UNK]": 1}, unk_token="[UNK]"))
    with pytest.raises(ValueError, match="need a Qwen2.5-VL tokenizer"):
        qwen_layout(bert_like)


def test_qwen_task_builds_documents_from_the_folder_tokenizer(tmp_path):
    """The task's placeholder count is t·h·w/4 of its frames; missing frames are named."""
    from jaxmm import tasks

    c = get_config("qwen_tiny")
    c.model.model_dir = str(write_folder(tmp_path / "m", weights=False))
    task = tasks.build(c)
    # 4 frames of 56 px, 14-px patches: grid (2, 4, 4) -> 2 * 4 * 4 / 4 = 8 merged tokens
    assert task.inputs.config.num_visual_tokens == N_VIS
    split = MultiventSplit(
        videos={"v0": Video("v0", (), ocr="KALOMI", asr="", description="rome")},
        queries={},
        qrels={},
    )
    with pytest.raises(ValueError, match="video 'v0' has no frames"):
        task.video_arrays(split, ["v0"])
    docs = task.inputs.documents([DOC])
    assert (docs.ids[0] == VIDEO_PAD).sum() == N_VIS
    c.data.frame_size = 50
    with pytest.raises(ValueError, match="frame_size=50: .* multiple of 28 px"):
        tasks.build(c)
    assert np.array_equal(docs.ids[0, [0, N_VIS + 1]], [VSTART, VEND])
