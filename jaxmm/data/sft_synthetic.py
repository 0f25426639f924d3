"""Generated SFT records, deterministic by seed: the data of the tiny configs and the tests.

Three kinds, each in the shape real data has, so they run through the same reader and mask:

- `chat`: `messages` records (system / multi-turn sometimes) with arithmetic answers whose
  lengths vary a lot (short answers and long worked ones), so packing has something to do;
- `cings`: single-turn questions about invented facts, with the passages in `context`
  (plus a distractor passage);
- `openthoughts`: sharegpt rows with `<think>...</think>` traces, built by the curation
  pipeline's own stages (`reasoning_questions.generate_questions` -> answers ->
  `openthoughts.to_sharegpt`), with the teacher replaced by a deterministic solver.
"""

from __future__ import annotations

import random
import re
from typing import Any

from jaxmm.data.openthoughts import to_sharegpt
from jaxmm.data.reasoning_questions import generate_questions

KINDS = ("chat", "cings", "openthoughts")
_SYLLABLES = ["ka", "lo", "mi", "ra", "tu", "ve", "zo", "ni", "pe", "sha", "qu", "dor"]


def _name(rng: random.Random, n: int = 3) -> str:
    return "".join(rng.choice(_SYLLABLES) for _ in range(n)).capitalize()


def _chat(i: int, rng: random.Random) -> dict[str, Any]:
    a, b = rng.randint(1, 99), rng.randint(1, 99)
    answer = f"{a} + {b} = {a + b}."
    if rng.random() < 0.3:  # a long worked answer
        steps = " ".join(f"Step {k}: {a} + {k} = {a + k}." for k in range(1, rng.randint(4, 12)))
        answer = f"Let us count up from {a}. {steps} So {answer}"
    messages = [{"role": "user", "content": f"What is {a} + {b}?"}, {"role": "assistant",
                "content": answer}]  # fmt: skip
    if rng.random() < 0.3:
        messages.insert(0, {"role": "system", "content": "You are a careful calculator."})
    if rng.random() < 0.3:
        c = rng.randint(1, 9)
        messages += [
            {"role": "user", "content": f"And plus {c}?"},
            {"role": "assistant", "content": f"{a + b} + {c} = {a + b + c}."},
        ]
    return {"id": f"chat-{i}", "messages": messages}


def _cings(i: int, rng: random.Random) -> dict[str, Any]:
    country, capital, other = _name(rng), _name(rng, 2), _name(rng)
    passages = [
        f"{country} is a small country. The capital of {country} is {capital}.",
        f"{other} is known for its rivers and its {_name(rng, 2).lower()} festival.",
    ]
    rng.shuffle(passages)
    return {
        "id": f"cings-{i}",
        "messages": [
            {"role": "user", "content": f"What is the capital of {country}?"},
            {"role": "assistant", "content": f"The capital of {country} is {capital}."},
        ],
        "context": passages,
    }


def _solve(question: str) -> str:
    """A teacher stand-in: a short reasoning trace and an answer for a generated question."""
    if m := re.match(r"Solve for x: (\d+)\*x \+ (-?\d+) = (-?\d+)\.", question):
        a, b, c = (int(g) for g in m.groups())
        x = (c - b) // a
        return (
            f"<think>\n{a}*x = {c} - {b} = {c - b}.\nx = {c - b} / {a} = {x}.\n</think>\n\nx = {x}"
        )
    if m := re.match(r"Compute ([\d +*-]+)\.", question):
        expr = m.group(1)
        value = eval(expr, {"__builtins__": {}})  # digits and + - * only (matched above)
        return f"<think>\nEvaluate {expr} with * before + and -.\n</think>\n\n{value}"
    if m := re.match(
        r"What is term number (\d+) of the arithmetic sequence (\d+), (\d+)", question
    ):
        n, first, second = (int(g) for g in m.groups())
        step = second - first
        term = first + (n - 1) * step
        return (
            f"<think>\nThe step is {second} - {first} = {step}.\nTerm {n} is {first} + "
            f"({n} - 1) * {step} = {term}.\n</think>\n\n{term}"
        )
    task = question.removeprefix("Write a Python function that ").rstrip(".")
    return f"<think>\nI need a function that {task}.\n</think>\n\ndef solve(data):\n    ..."


def generate(kind: str, n: int, seed: int = 0) -> list[dict[str, Any]]:
    """`n` records of `kind` (see the module docstring), the same list for the same seed."""
    if kind not in KINDS:
        raise ValueError(f"generated data kind {kind!r} is not one of {KINDS}")
    if kind == "openthoughts":
        questions = generate_questions(n, seed)
        rows, _ = to_sharegpt([{**q, "answers": [_solve(q["question"])]} for q in questions])
        return rows
    rng = random.Random(seed)
    make = _chat if kind == "chat" else _cings
    return [make(i, rng) for i in range(n)]
