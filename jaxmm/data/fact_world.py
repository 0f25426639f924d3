"""A procedural world of facts for the CINGS experiment (context-grounded SFT, arXiv 2506.15480).

Why: CINGS claims that training with the context inside the answer turn makes a model rely
more on the context it is given. Measuring that needs to know exactly what the model learned
in pretraining and what each context says. Here entities (made-up names) have one value per
relation; a share of the (entity, relation) facts is written into a pretraining corpus (the
model's "memory"), the rest is only ever seen in contexts. Question records come in four kinds:

    agree        context states the memorised value            gold = that value
    new          context states a fact absent from pretraining gold = the context's value
    contradict   context states another value than memorised   gold = the context's value
    closed_book  no context                                    gold = the memorised value

Contexts are a few sentences: the fact in question plus true facts about other entities, in
shuffled order. Records are SFT-ready: `messages` (user question, assistant answer) and the
passage in `context` (the CINGS modes of the SFT data decide where it goes).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

# relation -> (value vocabulary, statement templates, question template)
RELATIONS: dict[str, tuple[tuple[str, ...], tuple[str, ...], str]] = {
    "city": (
        ("Lima", "Oslo", "Cairo", "Delhi", "Quito", "Rome", "Tokyo", "Vienna", "Dakar", "Perth"),
        ("{e} lives in {v}.", "The home of {e} is in {v}.", "{e} has a house in {v}."),
        "Where does {e} live?",
    ),
    "job": (
        ("baker", "pilot", "doctor", "farmer", "singer", "lawyer", "nurse", "painter", "miner"),
        ("{e} works as a {v}.", "By trade, {e} is a {v}.", "{e} earns a living as a {v}."),
        "What is the job of {e}?",
    ),
    "color": (
        ("red", "blue", "green", "yellow", "purple", "orange", "black", "white", "pink"),
        (
            "The favourite colour of {e} is {v}.",
            "{e} likes the colour {v} best.",
            "{e} loves {v} more than any other colour.",
        ),
        "What is the favourite colour of {e}?",
    ),
    "pet": (
        ("cat", "dog", "parrot", "horse", "rabbit", "turtle", "goat", "owl", "hamster"),
        ("{e} owns a {v}.", "{e} has a pet {v}.", "{e} takes care of a {v} at home."),
        "What pet does {e} own?",
    ),
    "sport": (
        ("tennis", "golf", "chess", "rugby", "judo", "polo", "boxing", "rowing", "hockey"),
        ("{e} plays {v}.", "The sport {e} practises is {v}.", "Every weekend {e} plays {v}."),
        "Which sport does {e} play?",
    ),
}
KINDS = ("agree", "new", "contradict", "closed_book")
_SYLLABLES = "ba ko ri zu mel tan vo pra dis gel hu mor nek si lo fa ter wu".split()


@dataclass
class World:
    """Facts (entity, relation) -> value; `known` are the ones written into pretraining."""

    entities: list[str]
    facts: dict[tuple[str, str], str]
    known: set[tuple[str, str]] = field(default_factory=set)

    def statement(self, entity: str, relation: str, value: str, template: int = 0) -> str:
        templates = RELATIONS[relation][1]
        return templates[template % len(templates)].format(e=entity, v=value)

    def question(self, entity: str, relation: str) -> str:
        return RELATIONS[relation][2].format(e=entity)


def make_world(n_entities: int = 60, known_fraction: float = 0.7, seed: int = 0) -> World:
    """Entities with a value for every relation; `known_fraction` of facts are memorisable."""
    if n_entities < 4:
        raise ValueError(f"n_entities must be >= 4 (contexts need distractors), got {n_entities}")
    if not 0 < known_fraction < 1:
        raise ValueError(f"known_fraction must be in (0, 1), got {known_fraction}")
    rng = random.Random(seed)
    names: set[str] = set()
    while len(names) < n_entities:
        names.add("".join(rng.choice(_SYLLABLES) for _ in range(3)).capitalize())
    entities = sorted(names)
    rng.shuffle(entities)
    facts = {(e, r): rng.choice(RELATIONS[r][0]) for e in entities for r in RELATIONS}
    pairs = sorted(facts)
    rng.shuffle(pairs)
    known = set(pairs[: round(known_fraction * len(pairs))])
    return World(entities, facts, known)


def pretraining_corpus(world: World, repeats: int = 3, seed: int = 0) -> list[str]:
    """Every known fact stated `repeats` times with rotating templates, shuffled."""
    rng = random.Random(seed)
    lines = [
        world.statement(e, r, world.facts[(e, r)], template=i)
        for (e, r) in sorted(world.known)
        for i in range(repeats)
    ]
    rng.shuffle(lines)
    return lines


def pretraining_documents(
    world: World, repeats: int = 3, facts_per_doc: int = 2, seed: int = 0
) -> list[str]:
    """The statements of `pretraining_corpus`, grouped into documents about one entity:
    `facts_per_doc` of its known facts, each stated `repeats` times, shuffled within the doc.

    Why: in real text a fact recurs within a document; predicting its second mention from the
    first is what teaches a model to copy from its context (induction), the skill a reader of
    passages needs. One statement per example never shows that."""
    if facts_per_doc < 1:
        raise ValueError(f"facts_per_doc must be >= 1, got {facts_per_doc}")
    rng = random.Random(seed)
    by_entity: dict[str, list[str]] = {}
    for e, r in sorted(world.known):
        by_entity.setdefault(e, []).append(r)
    docs = []
    for entity in sorted(by_entity):
        relations = by_entity[entity]
        rng.shuffle(relations)
        for i in range(0, len(relations), facts_per_doc):
            lines = [
                world.statement(entity, r, world.facts[(entity, r)], template=t)
                for r in relations[i : i + facts_per_doc]
                for t in range(repeats)
            ]
            rng.shuffle(lines)
            docs.append(" ".join(lines))
    rng.shuffle(docs)
    return docs


def _context(world: World, entity: str, relation: str, value: str, rng, n_distractors: int):
    others = [p for p in world.facts if p[0] != entity]
    sentences = [world.statement(entity, relation, value, rng.randrange(3))]
    for e, r in rng.sample(others, n_distractors):
        sentences.append(world.statement(e, r, world.facts[(e, r)], rng.randrange(3)))
    rng.shuffle(sentences)
    return " ".join(sentences)


def make_record(
    world: World,
    entity: str,
    relation: str,
    kind: str,
    rng: random.Random,
    n_distractors: int = 2,
) -> dict[str, Any]:
    """One question record of `kind` about (entity, relation)."""
    if kind not in KINDS:
        raise ValueError(f"kind {kind!r} is not one of {KINDS}")
    memorised = (entity, relation) in world.known
    if kind == "new" and memorised:
        raise ValueError(
            f"kind 'new' needs a fact outside pretraining; {entity}/{relation} is in it"
        )
    if kind != "new" and not memorised:
        raise ValueError(f"kind {kind!r} needs a memorised fact; {entity}/{relation} is not")
    true_value = world.facts[(entity, relation)]
    value = true_value
    if kind == "contradict":
        value = rng.choice([v for v in RELATIONS[relation][0] if v != true_value])
    question = world.question(entity, relation)
    record: dict[str, Any] = {
        "id": f"{kind}-{entity}-{relation}",
        "kind": kind,
        "entity": entity,
        "relation": relation,
        "question": question,
        "answer": value,
        "messages": [
            {"role": "user", "content": question},
            {"role": "assistant", "content": value},
        ],
    }
    if kind != "closed_book":
        record["context"] = _context(world, entity, relation, value, rng, n_distractors)
    if memorised:
        record["memory_answer"] = true_value
    return record


def make_splits(
    world: World,
    *,
    n_train: int = 200,
    n_test_per_kind: int = 40,
    train_kinds: tuple[str, ...] = ("agree", "new"),
    n_distractors: int = 2,
    seed: int = 0,
) -> dict[str, list[dict[str, Any]]]:
    """`train` (fine-tuning records of `train_kinds`) and one test list per kind.

    Test facts are disjoint from training facts, so a test answer is never a fine-tuning label.
    """
    rng = random.Random(seed)
    known = sorted(world.known)
    unknown = sorted(set(world.facts) - world.known)
    rng.shuffle(known)
    rng.shuffle(unknown)
    n_known_test = min(len(known) // 2, 3 * n_test_per_kind)
    n_unknown_test = min(len(unknown) // 2, n_test_per_kind)
    known_test, known_train = known[:n_known_test], known[n_known_test:]
    unknown_test, unknown_train = unknown[:n_unknown_test], unknown[n_unknown_test:]

    train = []
    for i in range(n_train):
        kind = train_kinds[i % len(train_kinds)]
        pool = unknown_train if kind == "new" else known_train
        fact = pool[(i // len(train_kinds)) % len(pool)]
        train.append(make_record(world, *fact, kind, rng, n_distractors))
        train[-1]["id"] += f"-{i}"
    splits = {"train": train}
    per = max(n_known_test // 3, 1)
    for j, kind in enumerate(("agree", "contradict", "closed_book")):
        chunk = known_test[j * per : (j + 1) * per][:n_test_per_kind]
        splits[kind] = [make_record(world, e, r, kind, rng, n_distractors) for e, r in chunk]
    splits["new"] = [make_record(world, e, r, "new", rng, n_distractors) for e, r in unknown_test]
    return splits
