"""Procedural math and code questions of known difficulty, deterministic by seed.

The small stand-in for OpenThoughts' question sources (arXiv 2506.04178): every record is
`{"id", "domain", "source", "question", "difficulty"}` with `difficulty` an integer 1-10 set by
how the question was built (more terms, larger numbers, harder task). Sources per domain:

- math: `gen-math-algebra` (solve a*x + b = c), `gen-math-arith` (sum/product chains),
  `gen-math-sequence` (n-th term of an arithmetic sequence);
- code: `gen-code-lists` and `gen-code-strings` (write-a-function tasks from a table of
  tasks ranked by difficulty).

Records alternate math, code, math, ...; every fifth record (ids 4, 9, 14, ...) is an exact
copy (same domain, source, question, difficulty; new id) of the record four places before it,
so math duplicates exercise the dedup stage and code duplicates the "no dedup for code" rule.
`SOURCE_RANKING` is the best-first order of the sources per domain that the mix stage uses.
"""

from __future__ import annotations

import random
from typing import Any

SOURCE_RANKING: dict[str, list[str]] = {
    "math": ["gen-math-algebra", "gen-math-arith", "gen-math-sequence"],
    "code": ["gen-code-lists", "gen-code-strings"],
}

# (difficulty, task) pairs; {k} is filled with a small integer
_CODE_TASKS: dict[str, list[tuple[int, str]]] = {
    "gen-code-lists": [
        (1, "returns the sum of a list of integers"),
        (3, "returns the {k} largest values of a list, largest first"),
        (5, "rotates a list to the right by {k} positions in place"),
        (7, "returns the length of the longest strictly increasing subsequence of a list"),
        (9, "counts the inversions of a list of {k}00000 integers in O(n log n) time"),
    ],
    "gen-code-strings": [
        (1, "reverses a string"),
        (2, "counts the vowels in a string"),
        (4, "checks whether a string is a palindrome, ignoring case and punctuation"),
        (6, "returns every substring of length {k} that occurs more than once in a string"),
        (8, "returns the minimum number of edits turning one string into another"),
        (10, "finds the shortest string containing each of {k} given strings as a substring"),
    ],
}


def _algebra(rng: random.Random) -> tuple[str, int]:
    difficulty = rng.randint(1, 10)
    scale = 10**difficulty // 10 + 9  # 10, 19, 109, ...: larger coefficients are harder
    a, x, b = rng.randint(2, scale), rng.randint(-scale, scale), rng.randint(-scale, scale)
    return f"Solve for x: {a}*x + {b} = {a * x + b}.", difficulty


def _arith(rng: random.Random) -> tuple[str, int]:
    difficulty = rng.randint(1, 10)
    terms = [str(rng.randint(2, 9 * difficulty)) for _ in range(difficulty + 1)]
    ops = [rng.choice(["+", "-", "*"]) for _ in range(difficulty)]
    expr = terms[0] + "".join(f" {op} {t}" for op, t in zip(ops, terms[1:], strict=True))
    return f"Compute {expr}.", difficulty


def _sequence(rng: random.Random) -> tuple[str, int]:
    difficulty = rng.randint(1, 10)
    first, step = rng.randint(1, 20), rng.randint(2, 3 + difficulty * 5)
    n = rng.randint(5, 10 * difficulty + 5)
    shown = ", ".join(str(first + i * step) for i in range(3))
    return f"What is term number {n} of the arithmetic sequence {shown}, ...?", difficulty


def _code(source: str, rng: random.Random) -> tuple[str, int]:
    difficulty, task = rng.choice(_CODE_TASKS[source])
    task = task.format(k=rng.randint(2, 5))
    return f"Write a Python function that {task}.", difficulty


_MATH = {"gen-math-algebra": _algebra, "gen-math-arith": _arith, "gen-math-sequence": _sequence}


def generate_questions(n: int = 24, seed: int = 0) -> list[dict[str, Any]]:
    """`n` question records (see the module docstring), the same list for the same seed."""
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    rng = random.Random(seed)
    records: list[dict[str, Any]] = []
    counters = {"math": 0, "code": 0}
    for i in range(n):
        if i % 5 == 4:  # exact duplicate of the record four places back (same domain)
            records.append({**records[i - 4], "id": f"q{i:03d}"})
            continue
        domain = "math" if i % 2 == 0 else "code"
        sources = SOURCE_RANKING[domain]
        source = sources[counters[domain] % len(sources)]
        counters[domain] += 1
        if domain == "math":
            question, difficulty = _MATH[source](rng)
        else:
            question, difficulty = _code(source, rng)
        records.append(
            {
                "id": f"q{i:03d}",
                "domain": domain,
                "source": source,
                "question": question,
                "difficulty": difficulty,
            }
        )
    return records
