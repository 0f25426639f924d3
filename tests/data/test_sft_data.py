"""SFT data: assistant-only masks on real chat templates, CINGS modes, record formats, bad
records, packing layout."""

import json

import numpy as np
import pytest

from jaxmm.data import sft_synthetic
from jaxmm.data.openthoughts import validate_sharegpt
from jaxmm.data.packing import build_examples, first_fit, make_row, pack
from jaxmm.data.sft_records import (
    Conversation,
    TemplateError,
    iter_raw_records,
    load_tokenizer,
    tokenize_conversation,
)
from tests.data import chat_templates

MULTI_TURN = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "What is the capital of France?"},
    {"role": "assistant", "content": "The capital is Paris."},
    {"role": "user", "content": "Solve 3*x + 4 = 10."},
    {"role": "assistant", "content": "<think> 3*x = 6 </think> x = 2"},
]


@pytest.fixture(scope="module")
def smollm2():
    return load_tokenizer("smollm2")


def _tokenizer(family, smollm2):
    return smollm2 if family == "smollm2" else chat_templates.build(family)


def _runs(tok, ids, weights, value=1):
    """Decoded text of each maximal run of tokens whose weight == value."""
    runs, cur = [], []
    for t, w in zip(ids, weights, strict=True):
        if w == value:
            cur.append(int(t))
        elif cur:
            runs.append(tok.decode(cur))
            cur = []
    if cur:
        runs.append(tok.decode(cur))
    return runs


def _example(tok, messages, context=(), mode="no_context"):
    return tokenize_conversation(tok, Conversation(tuple(messages), tuple(context), "t:1"),
                                 cings_mode=mode)  # fmt: skip


EOT = {"llama3": "<|eot_id|>", "qwen2": "<|im_end|>", "smollm2": "<|im_end|>"}


@pytest.mark.parametrize("family", ["llama3", "qwen2", "smollm2"])
def test_mask_is_each_assistant_turn_plus_its_end_of_turn_token(family, smollm2):
    tok = _tokenizer(family, smollm2)
    ex = _example(tok, MULTI_TURN)
    # The trained tokens are exactly the two assistant contents, each with its end-of-turn
    # token, and nothing of the system/user turns or the role headers.
    assert _runs(tok, ex.ids, ex.weights) == [
        "The capital is Paris." + EOT[family],
        "<think> 3*x = 6 </think> x = 2" + EOT[family],
    ]
    # Untrained + trained tokens are the whole rendering (the template's own text).
    rendered = tok.apply_chat_template(MULTI_TURN, tokenize=False)
    assert tok.decode(ex.ids) == rendered
    assert ex.weights.dtype == np.int32 and set(np.unique(ex.weights)) == {0, 1}


def test_llama3_trim_keeps_the_mask_on_the_trimmed_content(smollm2):
    tok = chat_templates.build("llama3")
    msgs = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "  Paris.\n"}]
    assert _runs(tok, _example(tok, msgs).ids, _example(tok, msgs).weights) == ["Paris.<|eot_id|>"]


def test_generation_marker_template_gives_transformers_assistant_mask():
    """An independent reference: transformers' own `{% generation %}` assistant mask."""
    tok = chat_templates.build("chatml_generation")
    msgs = MULTI_TURN[:2] + [{"role": "assistant", "content": "  Paris, with spaces.  "}]
    msgs += MULTI_TURN[3:]
    ex = _example(tok, msgs)
    ref = tok.apply_chat_template(
        msgs, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
    )
    assert list(ex.ids) == ref["input_ids"]
    assert list(ex.weights) == ref["assistant_masks"]


CINGS_MSGS = [
    {"role": "user", "content": "What is the capital of Zorbia?"},
    {"role": "assistant", "content": "The capital of Zorbia is Quelt."},
]
PASSAGES = ["Zorbia is a small country. The capital of Zorbia is Quelt.", "Rivers are long."]


@pytest.mark.parametrize("mode", ["context", "no_context", "no_mask"])
def test_cings_modes_on_the_real_smollm2_template(mode, smollm2):
    ex = _example(smollm2, CINGS_MSGS, PASSAGES, mode)
    text = smollm2.decode(ex.ids)
    body = "\n".join(PASSAGES)
    answer = "The capital of Zorbia is Quelt.<|im_end|>"
    trained = _runs(smollm2, ex.ids, ex.weights)
    if mode == "no_context":
        assert "## Context" not in text and trained == [answer]
        return
    assert "<|im_start|>assistant\n## Context\n" + body + "\n## Answer\n" + answer in text
    # Where the assistant turn starts (after its header), everything is trained except,
    # in `context` mode, exactly the passage tokens.
    start = int(np.flatnonzero(ex.weights)[0])
    assert smollm2.decode(ex.ids[start:]).startswith("## Context\n")
    turn_w = ex.weights[start:-1]  # the final "\n" after <|im_end|> is not part of the turn
    if mode == "no_mask":
        assert turn_w.all() and trained == ["## Context\n" + body + "\n## Answer\n" + answer]
    else:
        assert trained == ["## Context\n", "\n## Answer\n" + answer]
        zero = np.flatnonzero(turn_w == 0)
        assert smollm2.decode(ex.ids[start:][zero]) == body  # 0 exactly over the body
        assert np.all(np.diff(zero) == 1)  # one contiguous block


def test_chat_sharegpt_jsonl_and_parquet_give_the_same_examples(tmp_path, smollm2):
    import pyarrow as pa
    import pyarrow.parquet as pq

    names = {"system": "system", "user": "human", "assistant": "gpt"}
    chat = {"messages": MULTI_TURN}
    share = {"conversations": [{"from": names[m["role"]], "value": m["content"]}
                               for m in MULTI_TURN]}  # fmt: skip
    (tmp_path / "a.jsonl").write_text(json.dumps(chat) + "\n\n" + json.dumps(share) + "\n")
    # One table with both shapes: each row has one of the two columns null.
    schema = pa.unify_schemas([pa.Table.from_pylist([r]).schema for r in (share, chat)])
    pq.write_table(pa.Table.from_pylist([share, chat], schema=schema), tmp_path / "b.parquet")
    recs = list(iter_raw_records(tmp_path / "a.jsonl")) + list(
        iter_raw_records(tmp_path / "b.parquet")
    )
    assert [w for w, _ in recs] == [
        f"{tmp_path}/a.jsonl:1",
        f"{tmp_path}/a.jsonl:3",
        f"{tmp_path}/b.parquet:row 1",
        f"{tmp_path}/b.parquet:row 2",
    ]
    examples, report = build_examples(recs, smollm2, seq_len=256)
    assert report.examples == 4
    for ex in examples[1:]:
        np.testing.assert_array_equal(ex.ids, examples[0].ids)
        np.testing.assert_array_equal(ex.weights, examples[0].weights)


BAD_LINES = [
    json.dumps({"messages": MULTI_TURN[1:3]}),  # 1 good
    json.dumps({"messages": [{"content": "no role"}, MULTI_TURN[2]]}),  # 2 missing role
    json.dumps({"conversations": [{"from": "robot", "value": "x"}]}),  # 3 unknown role
    "",  # 4 blank
    json.dumps({"messages": [MULTI_TURN[1], {"role": "assistant", "content": " "}]}),  # 5
    "{not json",  # 6
    json.dumps({"messages": [MULTI_TURN[1]]}),  # 7 no assistant turn
    json.dumps({"messages": [MULTI_TURN[1], {"role": "assistant", "content": "x " * 300}]}),
]


def test_bad_records_name_file_and_line_or_are_counted(tmp_path, smollm2):
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(BAD_LINES) + "\n")
    for first_bad, lines in ((2, BAD_LINES), (3, BAD_LINES[:1] + BAD_LINES[2:])):
        p = tmp_path / f"bad{first_bad}.jsonl"
        p.write_text("\n".join(lines) + "\n")
        with pytest.raises(ValueError, match=rf"bad{first_bad}\.jsonl:2: .*"):
            build_examples(iter_raw_records(p), smollm2, seq_len=64)
    with pytest.raises(ValueError, match=r"bad\.jsonl:5: messages\[1\] is an empty assistant"):
        build_examples(
            (r for r in iter_raw_records(path) if not r[0].endswith((":2", ":3"))),
            smollm2,
            seq_len=64,
        )
    with pytest.raises(ValueError, match=r"bad\.jsonl:8: \d+ tokens > seq_len=64"):
        build_examples(
            (r for r in iter_raw_records(path) if r[0].endswith((":1", ":8"))), smollm2, seq_len=64
        )
    for policy, truncated in (("truncate", 1), ("skip", 0)):
        examples, report = build_examples(
            iter_raw_records(path), smollm2, seq_len=64, on_bad_record="skip", on_too_long=policy
        )
        assert report.records == 7 and report.truncated == truncated
        assert len(examples) == report.examples == 1 + truncated
        want = {"missing_role": 1, "unknown_role": 1, "empty_assistant": 1, "bad_json": 1,
                "no_assistant": 1} | ({"too_long": 1} if policy == "skip" else {})  # fmt: skip
        assert dict(report.skipped) == want
        assert report.as_metrics()["data/skipped"] == sum(want.values())
        assert all(len(ex.ids) <= 65 for ex in examples)


def test_missing_chat_template_is_a_named_error(smollm2):
    tok = chat_templates.build("qwen2")
    tok.chat_template = None
    with pytest.raises(TemplateError, match="has no chat template; set config.data.chat_template"):
        build_examples([("x:1", {"messages": MULTI_TURN})], tok, seq_len=64)
    # An override works without the tokenizer's own template.
    examples, _ = build_examples(
        [("x:1", {"messages": MULTI_TURN})], tok, seq_len=128, chat_template=chat_templates.QWEN2
    )
    assert len(examples) == 1


def test_missing_context_in_cings_mode_is_named(smollm2):
    with pytest.raises(ValueError, match=r"x:7: cings_mode='context' needs 'context'"):
        build_examples([("x:7", {"messages": CINGS_MSGS})], smollm2, seq_len=64,
                       cings_mode="context")  # fmt: skip


def test_first_fit_and_rows_reset_positions_per_example(smollm2):
    assert first_fit([5, 4, 3, 2, 6], 8) == [[0, 2], [1, 3], [4]]
    recs = sft_synthetic.generate("chat", 40, seed=1)
    examples, _ = build_examples(
        ((f"g:{i}", r) for i, r in enumerate(recs)), smollm2, seq_len=128, on_too_long="truncate"
    )
    rows = pack(examples, 128)
    assert sorted(i for r in rows for i in r) == list(range(len(examples)))  # each once
    assert len(rows) < len(examples)
    row_ids = next(r for r in rows if len(r) >= 2)
    row = make_row([examples[j] for j in row_ids], 128, pad_id=2)
    o = 0
    for k, j in enumerate(row_ids, start=1):
        ex, n = examples[j], len(examples[j].ids) - 1
        np.testing.assert_array_equal(row["positions"][o : o + n], np.arange(n))
        assert (row["segment_ids"][o : o + n] == k).all()
        np.testing.assert_array_equal(row["tokens"][o : o + n], ex.ids[:-1])
        np.testing.assert_array_equal(row["targets"][o : o + n], ex.ids[1:])
        np.testing.assert_array_equal(row["loss_mask"][o : o + n], ex.weights[1:])
        o += n
    assert (row["segment_ids"][o:] == 0).all() and (row["loss_mask"][o:] == 0).all()


def test_generated_openthoughts_rows_are_the_pipeline_format(smollm2):
    rows = sft_synthetic.generate("openthoughts", 10)
    for row in rows:
        validate_sharegpt(row)  # the curation pipeline's own check
    ex = tokenize_conversation(
        smollm2, Conversation(tuple({"role": {"human": "user", "gpt": "assistant"}[t["from"]],
                                     "content": t["value"]} for t in rows[0]["conversations"]),
                              (), "g:0"))  # fmt: skip
    (trained,) = _runs(smollm2, ex.ids, ex.weights)
    assert trained.startswith("<think>\n") and "</think>\n\n" in trained
    assert trained.endswith("<|im_end|>")
