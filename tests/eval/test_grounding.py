"""CINGS grounding evaluation: prompt formats, answer extraction, exact-match accounting.

The accounting is checked on a scripted generator whose answers are chosen per question, so
every expected number below is counted by hand. The prefill prompt is checked against the
training rendering of the same record in CINGS `context` mode (what the model saw must be what
it is asked to continue).
"""

from __future__ import annotations

import math

import pytest

from jaxmm.data.sft_records import Conversation, load_tokenizer, tokenize_conversation
from jaxmm.eval import grounding


def _rec(kind, entity, gold, memory=None, context=True):
    r = {"id": f"{kind}-{entity}", "kind": kind, "question": f"Where does {entity} live?",
         "answer": gold, "messages": [{"role": "user", "content": f"Where does {entity} live?"},
                                      {"role": "assistant", "content": gold}]}  # fmt: skip
    if context:
        r["context"] = f"{entity} lives in {gold}. Bo plays golf."
    if memory is not None:
        r["memory_answer"] = memory
    return r


TESTS = {
    "agree": [_rec("agree", "Ann", "Lima", "Lima"), _rec("agree", "Bob", "Oslo", "Oslo")],
    "new": [_rec("new", "Cid", "Rome")],
    "contradict": [
        _rec("contradict", "Dee", "Cairo", "Perth"),
        _rec("contradict", "Eve", "Quito", "Tokyo"),
        _rec("contradict", "Fay", "Delhi", "Vienna"),
    ],  # fmt: skip
    "closed_book": [_rec("closed_book", "Gus", "Dakar", "Dakar", context=False)],
}
# question entity -> what the scripted model writes
SCRIPT = {
    "Ann": "Lima",  # right
    "Bob": "the oslo.",  # right after normalisation
    "Cid": "## Context\nwhatever\n## Answer\nRome\nmore text",  # right: after the marker
    "Dee": "Cairo",  # follows the context
    "Eve": "Tokyo",  # answers from memory
    "Fay": "vienna",  # answers from memory
    "Gus": "Oslo",  # wrong
}


def _scripted(calls):
    def generate(conversations, continue_final):
        calls.append((conversations, continue_final))
        out = []
        for messages in conversations:
            text = " ".join(m["content"] for m in messages)
            out.append(next(v for k, v in SCRIPT.items() if f"does {k} live" in text))
        return out

    return generate


@pytest.mark.parametrize("fmt", grounding.PROMPT_FORMATS)
def test_exact_match_accounting_per_kind(fmt):
    calls = []
    metrics, rows = grounding.score(_scripted(calls), TESTS, fmt)
    assert metrics["em/agree"] == 1.0
    assert metrics["em/new"] == 1.0
    assert math.isclose(metrics["em/contradict"], 1 / 3)
    assert math.isclose(metrics["memory/contradict"], 2 / 3)
    assert metrics["em/closed_book"] == 0.0
    assert len(calls) == 1 and len(rows) == 7  # one batched call for everything
    by_id = {r["id"]: r for r in rows}
    assert by_id["new-Cid"]["answer"] == "Rome" and by_id["contradict-Eve"]["em"] is False
    # The context is in the prompt exactly where the format puts it, never for closed-book.
    conversations, flags = calls[0]
    for messages, flag, row in zip(conversations, flags, rows, strict=True):
        has_context = any("Bo plays golf" in m["content"] for m in messages)
        assert has_context == (row["kind"] != "closed_book")
        assert flag == (fmt == "prefill" and row["kind"] != "closed_book")


def test_prompt_formats():
    rec = TESTS["contradict"][0]
    user, cont = grounding.prompt(rec, "user")
    assert cont is False and len(user) == 1
    assert user[0]["content"] == rec["context"] + "\n\n" + rec["question"]
    pre, cont = grounding.prompt(rec, "prefill")
    assert cont is True and pre[0]["content"] == rec["question"]
    assert pre[1] == {"role": "assistant",
                      "content": "## Context\n" + rec["context"] + "\n## Answer\n"}  # fmt: skip
    with pytest.raises(ValueError, match="prompt format"):
        grounding.prompt(rec, "system")


def test_prefill_prompt_is_the_cings_training_prefix():
    """The tokens the CINGS model is asked to continue are the ones it was trained on, up to
    the answer; the answer tokens are exactly the trained ones after that prefix."""
    tok = load_tokenizer("smollm2")
    rec = TESTS["contradict"][0]
    conv = Conversation(tuple(rec["messages"]), (rec["context"],), "t:1")
    ex = tokenize_conversation(tok, conv, cings_mode="context")
    messages, cont = grounding.prompt(rec, "prefill")
    text = tok.apply_chat_template(messages, tokenize=False, continue_final_message=cont)
    prompt_ids = tok(text, add_special_tokens=False)["input_ids"]
    assert list(ex.ids[: len(prompt_ids)]) == prompt_ids
    assert tok.decode(ex.ids[len(prompt_ids) :]).startswith(rec["answer"])


def test_extract_answer():
    assert grounding.extract_answer("Lima") == "Lima"
    assert grounding.extract_answer("  Lima\nOslo") == "Lima"
    assert grounding.extract_answer("## Context\nOslo\n## Answer\n## Answer\nLima") == "Lima"
    assert grounding.extract_answer("") == ""


def test_mean_std_and_errors():
    assert grounding.mean_std([1.0, 2.0, 3.0]) == (2.0, 1.0)
    assert grounding.mean_std([4.0]) == (4.0, 0.0)
    with pytest.raises(ValueError, match="no test records"):
        grounding.score(_scripted([]), {}, "user")
    with pytest.raises(ValueError, match="returned 0 texts"):
        grounding.score(lambda c, f: [], TESTS, "user")
