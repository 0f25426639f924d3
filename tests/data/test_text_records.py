"""Raw-text SFT records (pretraining data) and the small BPE tokenizer with a borrowed chat
format, both used by the CINGS experiment."""

from __future__ import annotations

import pytest

from jaxmm.data import fact_world
from jaxmm.data.packing import build_examples, make_row
from jaxmm.data.sft_records import load_tokenizer
from jaxmm.data.small_tokenizer import train_chat_tokenizer

CONVO = [{"role": "user", "content": "Where does Bako live?"},
         {"role": "assistant", "content": "Lima"}]  # fmt: skip


@pytest.fixture(scope="module")
def smollm2():
    return load_tokenizer("smollm2")


@pytest.fixture(scope="module")
def small(smollm2):
    world = fact_world.make_world(40, 0.5, seed=3)
    texts = [world.statement(e, r, v, i) for (e, r), v in world.facts.items() for i in (0, 1, 2)]
    texts += [smollm2.apply_chat_template(CONVO, tokenize=False)] * 50
    return train_chat_tokenizer(texts, smollm2, vocab_size=400)


def test_text_records_train_every_token_and_end_with_eos(smollm2):
    records = [("c:1", {"text": "Bako lives in Lima."}), ("c:2", {"text": "Zu owns a cat."})]
    examples, report = build_examples(records, smollm2, seq_len=32)
    assert report.examples == 2 and report.skipped == {}
    for ex, (_, r) in zip(examples, records, strict=True):
        assert ex.ids[-1] == smollm2.eos_token_id
        assert smollm2.decode(ex.ids[:-1]) == r["text"]
        assert ex.weights.all()
    row = make_row(examples, 32, smollm2.pad_token_id)
    n = sum(len(ex.ids) - 1 for ex in examples)
    # Every target of both examples is trained (the EOS included), nothing past them.
    assert row["loss_mask"][:n].all() and not row["loss_mask"][n:].any()
    assert row["targets"][len(examples[0].ids) - 2] == smollm2.eos_token_id


def test_empty_text_is_a_bad_record(smollm2):
    with pytest.raises(ValueError, match="c:1: field 'text'"):
        build_examples([("c:1", {"text": "  "})], smollm2, seq_len=32)
    _, report = build_examples([("c:1", {"text": ""}), ("c:2", {"text": "ok"})], smollm2,
                               seq_len=32, on_bad_record="skip")  # fmt: skip
    assert report.skipped == {"missing_content": 1} and report.examples == 1


def test_chat_records_beside_text_records_keep_their_mask(smollm2):
    records = [("a:1", {"text": "Bako lives in Lima."}), ("a:2", {"messages": CONVO})]
    examples, _ = build_examples(records, smollm2, seq_len=64)
    assert not examples[1].weights.all()  # the prompt is not trained


def test_small_tokenizer_renders_like_the_original(small, smollm2):
    assert len(small) <= 400
    text = smollm2.apply_chat_template(CONVO, tokenize=False)
    assert small.apply_chat_template(CONVO, tokenize=False) == text
    ids = small(text, add_special_tokens=False)["input_ids"]
    assert small.decode(ids) == text
    pieces = small.convert_ids_to_tokens(ids)
    for special in ("<|im_start|>", "<|im_end|>"):
        assert special in pieces  # one piece each, never split
    assert (small.eos_token, small.pad_token) == (smollm2.eos_token, smollm2.pad_token)
    # The template's text, seen often, is merged: far fewer pieces than bytes.
    assert len(ids) < len(text.encode()) / 2


def _contains(seq, sub):
    return any(seq[i : i + len(sub)] == sub for i in range(len(seq) - len(sub) + 1))


@pytest.mark.parametrize("word", ["lives", "Lima", "owns"])
def test_small_tokenizer_words_are_the_same_tokens_after_a_space_and_at_a_line_start(small, word):
    alone = small.tokenize(word)
    assert _contains(small.tokenize(f"Bako {word} in."), alone)
    assert small.tokenize(f"## Answer\n{word}")[-len(alone) :] == alone


def test_small_tokenizer_too_small_vocab_is_named(smollm2):
    with pytest.raises(ValueError, match="vocab_size=100"):
        train_chat_tokenizer(["a b c"], smollm2, vocab_size=100)
