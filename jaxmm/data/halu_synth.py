"""Procedural source/claim pairs for hallucination detection, with gold labels; seeded.

Each pair describes one invented entity (a person, a town, a company, a river) by a few
attribute sentences (`source`) and a claim of two or three facts about it. The claim is
  * `supported`    -- every fact restates the source                   -> "faithful";
  * `contradicted` -- one fact's value is changed to a different one   -> "hallucinated";
  * `unsupported`  -- one fact is about an attribute the source omits  -> "hallucinated".
Half the pairs are supported; the rest split evenly between the two planted kinds. Every
record keeps `kind` and `planted` (the altered or invented fact, or null). The same
(n, seed) gives the same records.

    python -m jaxmm.data.halu_synth --n 20 --seed 0 --out runs/halu/synth.jsonl
"""

from __future__ import annotations

import argparse
import random
from typing import Any

from jaxmm.data.claims import FAITHFUL, HALLUCINATED, write_claims

_FIRST = ("Mara", "Tobias", "Ilse", "Kofi", "Anika", "Ruben", "Lena", "Osman", "Petra", "Yuki")
_LAST = ("Varga", "Lindqvist", "Okafor", "Brandt", "Moreau", "Castell", "Ivanek", "Sato")
_PLACE = ("Dunmere", "Karsby", "Velloria", "Ostrand", "Brixhollow", "Tamsworth", "Lune Harbor")
_COMPANY = ("Norvane Tools", "Quillfield Foods", "Hexaport Labs", "Bramble Motors", "Tidewell")
_RIVER = ("Selka", "Orrin", "Vashti", "Kell", "Amberline")
_NAMES = tuple(f"{f} {s}" for f in _FIRST for s in _LAST)

# kind -> attribute -> (sentence template, value pool); {e} is the entity's name
_TEMPLATES: dict[str, dict[str, tuple[str, tuple[Any, ...]]]] = {
    "person": {
        "born": ("{e} was born in {v}.", tuple(range(1931, 1996, 3))),
        "job": ("{e} worked as {v}.", ("a chemist", "an architect", "a violinist", "a pilot")),
        "city": ("{e} lived in {v}.", _PLACE),
        "award": ("{e} won the {v} Prize.", ("Harlow", "Kestrel", "Meridian", "Solvay")),
        "children": ("{e} had {v} children.", (1, 2, 3, 4, 5)),
    },
    "town": {
        "population": ("{e} has a population of {v}.", (1200, 4800, 9100, 15300, 27600)),
        "founded": ("{e} was founded in {v}.", tuple(range(1102, 1890, 37))),
        "river": ("{e} lies on the {v} River.", _RIVER),
        "industry": ("The main industry of {e} is {v}.", ("fishing", "mining", "wool", "tourism")),
        "mayor": ("The mayor of {e} is {v}.", _NAMES),
    },
    "company": {
        "founded": ("{e} was founded in {v}.", tuple(range(1948, 2020, 4))),
        "hq": ("{e} is headquartered in {v}.", _PLACE),
        "employees": ("{e} employs {v} people.", (40, 230, 1100, 5600, 18000)),
        "product": ("{e} makes {v}.", ("bicycles", "tea", "microscopes", "sails", "pianos")),
        "ceo": ("The chief executive of {e} is {v}.", _NAMES),
    },
}  # fmt: skip


def _entity(rng: random.Random, kind: str) -> str:
    if kind == "person":
        return f"{rng.choice(_FIRST)} {rng.choice(_LAST)}"
    if kind == "town":
        return rng.choice(_PLACE)
    return rng.choice(_COMPANY)


def _sentence(kind: str, attr: str, entity: str, value: Any) -> str:
    return _TEMPLATES[kind][attr][0].format(e=entity, v=value)


def make_pair(rng: random.Random, planted: str) -> dict[str, Any]:
    """One pair; `planted` is "supported" | "contradicted" | "unsupported"."""
    kind = rng.choice(sorted(_TEMPLATES))
    entity = _entity(rng, kind)
    attrs = sorted(_TEMPLATES[kind])
    rng.shuffle(attrs)
    in_source, held_out = attrs[:3], attrs[3:]
    values = {a: rng.choice(_TEMPLATES[kind][a][1]) for a in attrs}
    source = " ".join(_sentence(kind, a, entity, values[a]) for a in in_source)
    n_facts = rng.choice((2, 3))
    facts = [_sentence(kind, a, entity, values[a]) for a in rng.sample(in_source, n_facts)]
    fact = None
    if planted == "contradicted":
        attr = rng.choice(in_source)
        other = rng.choice([v for v in _TEMPLATES[kind][attr][1] if v != values[attr]])
        fact = _sentence(kind, attr, entity, other)
        facts = [f for f in facts if f != _sentence(kind, attr, entity, values[attr])]
        facts.insert(rng.randrange(len(facts) + 1), fact)
    elif planted == "unsupported":
        attr = rng.choice(held_out)
        fact = _sentence(kind, attr, entity, values[attr])
        facts.insert(rng.randrange(len(facts) + 1), fact)
    return {
        "source": source,
        "claim": " ".join(facts),
        "label": FAITHFUL if planted == "supported" else HALLUCINATED,
        "kind": planted,
        "planted": fact,
    }


def generate(n: int = 30, seed: int = 0) -> list[dict[str, Any]]:
    """`n` pairs with ids `synth<seed>-<i>`: half supported, a quarter each planted kind,
    in a seeded random order."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    rng = random.Random(seed)
    kinds = ["supported"] * (n - n // 2) + ["contradicted"] * (n // 4)
    kinds += ["unsupported"] * (n - len(kinds))
    rng.shuffle(kinds)
    return [{"id": f"synth{seed}-{i:03d}", **make_pair(rng, k)} for i, k in enumerate(kinds)]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    print(write_claims(args.out, generate(args.n, args.seed)), "records ->", args.out)


if __name__ == "__main__":
    main()
