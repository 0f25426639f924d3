"""The CINGS experiment's bookkeeping (data per seed, RAG-shaped records, the table) and a tiny
end-to-end run through the shared trainer and the engine (slow)."""

from __future__ import annotations

import json
import os

import pytest

from jaxmm import cli
from jaxmm.tasks import cings_experiment as cx

CONFIG = os.path.join(os.path.dirname(__file__), "..", "..", "configs", "sft.py:cings_tiny")
SIZES = cx.Sizes(n_entities=30, n_train=40, n_test_per_kind=6, pretrain_steps=2, sft_steps=2,
                 vocab_size=400, max_tokens=4)  # fmt: skip


def _statements(text_records):
    """The sentences of the corpus documents (each ends with the only "." it holds)."""
    return {s.strip() + "." for r in text_records for s in r["text"].split(".") if s.strip()}


def test_seed_data_keeps_test_facts_out_of_fine_tuning_and_new_facts_out_of_pretraining(
    tmp_path,
):
    data = cx.write_seed_data(str(tmp_path), seed=1, sizes=SIZES)
    read = lambda name: [json.loads(x) for x in open(data["paths"][name])]  # noqa: E731
    corpus, train, rag = read("corpus"), read("train"), read("train_rag")
    tests = data["tests"]
    assert [len(tests[k]) for k in cx.grounding.KINDS] == [6, 6, 6, 6]
    assert len(train) == len(rag) == 40
    train_facts = {(r["entity"], r["relation"]) for r in train}
    world = cx.fact_world.make_world(SIZES.n_entities, SIZES.known_fraction, seed=1)
    statements = _statements(corpus)
    for kind, records in tests.items():
        for r in records:
            fact = (r["entity"], r["relation"])
            assert fact not in train_facts
            said = {world.statement(*fact, world.facts[fact], i) for i in range(3)}
            # Known facts are in the corpus in every template; new ones in none.
            assert (said <= statements) == (kind != "new") and (said & statements) == (
                said if kind != "new" else set()
            )
            if kind == "contradict":
                assert r["answer"] != r["memory_answer"] == world.facts[fact]
                assert r["answer"] in r["context"]
    # Same seed, same data (reruns are idempotent); another seed, another world.
    again = cx.write_seed_data(str(tmp_path / "again"), seed=1, sizes=SIZES)
    other = cx.write_seed_data(str(tmp_path / "other"), seed=2, sizes=SIZES)
    assert again["tests"] == tests and other["tests"] != tests


def test_rag_record_moves_the_context_into_the_user_turn():
    rec = {"id": "x", "question": "Where does Bo live?", "context": "Bo lives in Rome.",
           "answer": "Rome", "messages": [{"role": "user", "content": "Where does Bo live?"},
                                          {"role": "assistant", "content": "Rome"}]}  # fmt: skip
    out = cx.rag_record(rec)
    assert "context" not in out and "context" in rec  # the input is not modified
    assert out["messages"] == [
        {"role": "user", "content": "Bo lives in Rome.\n\nWhere does Bo live?"},
        {"role": "assistant", "content": "Rome"},
    ]


def test_table_is_mean_and_sample_std_in_percent():
    results = {
        0: {"cings": {"em/contradict": 0.5, "em/agree": 1.0}},
        1: {"cings": {"em/contradict": 0.7, "em/agree": 1.0}},
    }
    lines = cx.table(results, ["cings"]).splitlines()
    assert lines[2].startswith("| cings | 100.0 ± 0.0 | – | 60.0 ± 14.1 | – | – |")


def test_unknown_setting_is_named(tmp_path):
    with pytest.raises(ValueError, match="unknown settings"):
        cx.run(cli.load_config(CONFIG, []), str(tmp_path), [0], SIZES, ["cings", "rlhf"])


def test_rerun_with_other_sizes_is_an_error_before_any_work(tmp_path):
    base = cli.load_config(CONFIG, [])
    cx._check_sizes(str(tmp_path), SIZES)
    cx._check_sizes(str(tmp_path), SIZES)  # the same sizes: fine
    other = cx.dataclasses.replace(SIZES, sft_steps=3)
    with pytest.raises(ValueError, match=r"'sft_steps': \(2, 3\)"):
        cx.run(base, str(tmp_path), [0], other, ["cings"])
    assert sorted(os.listdir(tmp_path)) == ["sizes.json"]


@pytest.mark.slow
def test_tiny_run_end_to_end_and_rerun_reuses_it(tmp_path):
    base = cli.load_config(CONFIG, ["progress_bar=False"])
    said = []
    results, text = cx.run(base, str(tmp_path), [0], SIZES, ["standard", "cings"], said.append)
    for name in ("standard", "cings"):
        metrics = results[0][name]
        assert set(cx.COLUMNS) <= set(metrics)
        assert all(0.0 <= metrics[c] <= 1.0 for c in cx.COLUMNS)
        scores = json.load(open(tmp_path / "seed0" / name / "scores.json"))
        assert len(scores["predictions"]) == 24
    assert (tmp_path / "table.md").read_text().strip() == text
    assert json.load(open(tmp_path / "results.json"))["seeds"] == [0]
    # A rerun trains nothing and reads the same scores back.
    said.clear()
    again, _ = cx.run(base, str(tmp_path), [0], SIZES, ["standard", "cings"], said.append)
    assert again == results
    assert not any("pretraining" in s or "fine-tuning" in s for s in said), said
