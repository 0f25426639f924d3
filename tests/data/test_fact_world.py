"""The CINGS fact world: what pretraining states, what each context says, disjoint splits."""

from __future__ import annotations

import random

import pytest

from jaxmm.data import fact_world as fw


@pytest.fixture(scope="module")
def world():
    return fw.make_world(n_entities=40, known_fraction=0.6, seed=3)


def _sentence_about(record):
    return [s for s in record["context"].split(". ") if record["entity"] in s]


def test_world_and_corpus(world):
    assert len(world.facts) == 40 * len(fw.RELATIONS)
    assert len(world.known) == round(0.6 * len(world.facts))
    corpus = fw.pretraining_corpus(world, repeats=2)
    assert len(corpus) == 2 * len(world.known)
    text = "\n".join(corpus)
    for e, r in world.facts:
        stated = [world.statement(e, r, world.facts[(e, r)], t) for t in range(3)]
        if (e, r) in world.known:
            assert sum(s in text for s in stated) == 2
        else:  # an unknown fact is never stated, in any template
            assert not any(s in text for s in stated), (e, r)


def test_record_kinds(world):
    rng = random.Random(0)
    known = sorted(world.known)
    unknown = sorted(set(world.facts) - world.known)
    for e, r in known[:20]:
        truth = world.facts[(e, r)]
        agree = fw.make_record(world, e, r, "agree", rng)
        assert agree["answer"] == truth == agree["memory_answer"]
        (about,) = _sentence_about(agree)
        assert truth in about
        contra = fw.make_record(world, e, r, "contradict", rng)
        assert contra["answer"] != truth and contra["memory_answer"] == truth
        (about,) = _sentence_about(contra)
        assert contra["answer"] in about and truth not in about
        closed = fw.make_record(world, e, r, "closed_book", rng)
        assert "context" not in closed and closed["answer"] == truth
        assert closed["messages"][-1] == {"role": "assistant", "content": truth}
        assert len(agree["context"].split(". ")) == 3  # the fact + 2 distractors
    for e, r in unknown[:10]:
        new = fw.make_record(world, e, r, "new", rng)
        assert new["answer"] == world.facts[(e, r)] and "memory_answer" not in new
    with pytest.raises(ValueError, match="kind 'new' needs a fact outside pretraining"):
        fw.make_record(world, *known[0], "new", rng)
    with pytest.raises(ValueError, match="kind 'agree' needs a memorised fact"):
        fw.make_record(world, *unknown[0], "agree", rng)


def test_splits_are_disjoint_and_sized(world):
    splits = fw.make_splits(world, n_train=120, n_test_per_kind=15, seed=1)
    assert len(splits["train"]) == 120
    assert {r["kind"] for r in splits["train"]} == {"agree", "new"}
    train_facts = {(r["entity"], r["relation"]) for r in splits["train"]}
    for kind in fw.KINDS:
        assert 0 < len(splits[kind]) <= 15
        assert all(r["kind"] == kind for r in splits[kind])
        test_facts = {(r["entity"], r["relation"]) for r in splits[kind]}
        assert not test_facts & train_facts, kind
    assert len({r["id"] for r in splits["train"]}) == 120


def test_bad_world_arguments():
    with pytest.raises(ValueError, match="n_entities must be >= 4"):
        fw.make_world(n_entities=2)
    with pytest.raises(ValueError, match="known_fraction"):
        fw.make_world(known_fraction=1.0)


def test_pretraining_documents_group_the_corpus_by_entity():
    world = fw.make_world(20, 0.6, seed=4)
    docs = fw.pretraining_documents(world, repeats=3, facts_per_doc=2, seed=1)
    corpus = fw.pretraining_corpus(world, repeats=3)
    # The same statements, only grouped (sentences end with "." and hold no other dot).
    sentences = sorted(s.strip() + "." for d in docs for s in d.split(".") if s.strip())
    assert sentences == sorted(corpus)
    for doc in docs:
        about = {e for e in world.entities if f"{e} " in doc or doc.endswith(e)}
        assert len(about) == 1  # one entity per document
        facts = [(e, r) for (e, r) in world.known if e in about and world.facts[(e, r)] in doc]
        assert 1 <= len(facts) <= 2
    with pytest.raises(ValueError, match="facts_per_doc"):
        fw.pretraining_documents(world, facts_per_doc=0)
