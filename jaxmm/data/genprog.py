"""Input records for the `genprog` pipeline (GenerationPrograms): loaders for ASQA / LFQA
style JSON and a procedural multi-document QA generator with known gold sources.

Records: {"id", "question", "docs": [{"title", "text"}], "answers": [[aliases], ...],
"gold_docs": [1-based passage numbers]} (+ "mode" when asked), one JSON object per line.

    python -m jaxmm.data.genprog --out=runs/genprog/synthetic.jsonl --n=20 --seed=0
"""

from __future__ import annotations

import argparse
import json
import os
import random
from collections.abc import Iterator
from typing import Any

from jaxmm.io.jsonl import write_jsonl

Record = dict[str, Any]

_SYLLABLES = ["ka", "lo", "mer", "vin", "dra", "tor", "sel", "qua", "bel", "zan", "rho", "ul"]
_COUNTRIES = ["Arvenia", "Bostria", "Calmora", "Deltany", "Estrova", "Fennland", "Gorvia"]
_PRODUCTS = ["glass", "copper bells", "wool cloth", "paper", "clocks", "salt", "ceramic tiles"]
_RIVERS = ["Oska", "Velt", "Marn", "Tiber Nor", "Asle", "Quill"]
_FILLER = [
    "{e} has a busy market square.",
    "Visitors to {e} often mention its narrow streets.",
    "The climate around {e} is mild in summer.",
    "Local stories about {e} are told at a yearly festival.",
]


def _name(rng: random.Random) -> str:
    return "".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(2, 3))).capitalize()


def _facts(rng: random.Random) -> dict[str, str]:
    return {
        "country": rng.choice(_COUNTRIES),
        "year": str(rng.randint(1100, 1900)),
        "product": rng.choice(_PRODUCTS),
        "river": rng.choice(_RIVERS),
    }


_SENT = {
    "country": "{e} is a town in {country}.",
    "year": "{e} was founded in {year}.",
    "product": "{e} is known for making {product}.",
    "river": "{e} lies on the river {river}.",
}
_QUESTIONS = {
    ("country", "year"): "In which country is {e}, and when was it founded?",
    ("product", "river"): "What is {e} known for making, and on which river does it lie?",
    ("country", "product"): "Where is {e}, and what is it known for making?",
    ("year", "river"): "When was {e} founded, and on which river does it lie?",
}


def synthetic_records(n: int = 20, seed: int = 0, n_distractors: int = 2) -> list[Record]:
    """`n` two-hop questions about invented towns: the two facts sit in two different
    passages (the gold sources, each with a filler sentence), shuffled among `n_distractors`
    passages about other towns stating the same attributes with other values. Deterministic
    in (`n`, `seed`, `n_distractors`); names never collide within a record."""
    if not 1 <= n <= 10_000:
        raise ValueError(f"n must be in 1..10000, got {n}")
    rng = random.Random(seed)
    out = []
    for i in range(n):
        names: list[str] = []
        while len(names) < 1 + n_distractors:
            if (name := _name(rng)) not in names:
                names.append(name)
        entity, others = names[0], names[1:]
        (a, b), template = rng.choice(sorted(_QUESTIONS.items()))
        facts = _facts(rng)
        passages = []
        for attr in (a, b):
            filler = rng.choice(_FILLER).format(e=entity)
            fact = _SENT[attr].format(e=entity, **facts)
            body = [fact, filler] if rng.random() < 0.5 else [filler, fact]
            passages.append(({"title": entity, "text": " ".join(body)}, True))
        for other in others:
            f = _facts(rng)
            body = [_SENT[x].format(e=other, **f) for x in (a, b)]
            body.append(rng.choice(_FILLER).format(e=other))
            passages.append(({"title": other, "text": " ".join(body)}, False))
        rng.shuffle(passages)
        out.append(
            {
                "id": f"synth-{seed}-{i}",
                "question": template.format(e=entity),
                "docs": [p for p, _ in passages],
                "answers": [[facts[a]], [facts[b]]],
                "gold_docs": [j for j, (_, gold) in enumerate(passages, start=1) if gold],
            }
        )
    return out


def _items(path: str | os.PathLike) -> Iterator[tuple[int, dict[str, Any]]]:
    """Records of a JSON list, a JSON object of records ({id: record}) or JSONL."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        data = [json.loads(line) for line in text.splitlines() if line.strip()]
    if isinstance(data, dict):
        data = [{"id": k, **v} for k, v in data.items()]
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a JSON list, an object of records or JSONL")
    yield from enumerate(data)


def load_qa_json(path: str | os.PathLike, n_docs: int = 5) -> list[Record]:
    """ASQA (ALCE's `asqa_*.json`: question, docs [{title, text}], qa_pairs [{short_answers}],
    sample_id) or LFQA-style (question, context: str | [str], optional answers) -> records
    with the first `n_docs` passages. Raises ValueError naming the item and field."""
    out = []
    for i, item in _items(path):
        where = f"{path}: item {i}"
        if not isinstance(item, dict) or not isinstance(item.get("question"), str):
            raise ValueError(f"{where}: field 'question' must be a string")
        rec: Record = {"id": str(item.get("sample_id", item.get("id", i))), "question": ""}
        rec["question"] = item["question"]
        if "docs" in item:
            docs = [
                {"title": d.get("title", ""), "text": d["text"]} if isinstance(d, dict) else d
                for d in item["docs"][:n_docs]
            ]
            rec["docs"] = docs
        elif "context" in item:
            ctx = item["context"]
            rec["docs"] = [ctx] if isinstance(ctx, str) else list(ctx)[:n_docs]
        else:
            raise ValueError(f"{where}: needs a field 'docs' or 'context'")
        if "qa_pairs" in item:
            rec["answers"] = [list(qa["short_answers"]) for qa in item["qa_pairs"]]
        elif isinstance(item.get("answers"), list):
            rec["answers"] = item["answers"]
        out.append(rec)
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--n", type=int, default=20, help="synthetic records")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--from_json", help="convert an ASQA / LFQA JSON file instead")
    ap.add_argument("--n_docs", type=int, default=5)
    ap.add_argument("--mode", choices=["program", "posthoc", "direct"])
    args = ap.parse_args(argv)
    if args.from_json:
        records = load_qa_json(args.from_json, args.n_docs)
    else:
        records = synthetic_records(args.n, args.seed)
    if args.mode:
        records = [r | {"mode": args.mode} for r in records]
    write_jsonl(args.out, records)
    print(f"wrote {len(records)} records to {args.out}")


if __name__ == "__main__":
    main()
