"""Reward functions for RL on language models (GRPO): completion text -> score.

A reward is named by a spec string so configs stay plain data:

    exact              1 if the completion equals the record's `answer` (normalised, SQuAD style)
    contains           1 if the normalised answer occurs in the completion as whole words
    regex:<pattern>    1 if `re.search(pattern, completion)` matches (format rewards)
    python:<mod>:<fn>  fn(completion: str, record: dict) -> float, imported from a module
    judge:<backend>    1 if a model behind `jaxmm.generate.backend_spec` says the completion
                       answers the record's `prompt` correctly (reference: `answer` if present)

`combined(specs, weights)` sums weighted rewards. Unknown specs fail at config time.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from jaxmm.eval.answers import answer_str_em, exact_match
from jaxmm.generate.backend_spec import backend_from_spec
from jaxmm.generate.params import GenerationParams

Reward = Callable[[str, Mapping[str, Any]], float]


def _needs_answer(name: str, record: Mapping[str, Any]) -> str:
    if "answer" not in record:
        raise ValueError(f"reward {name!r} needs an 'answer' field in every prompt record")
    return str(record["answer"])


def _judge(spec: str) -> Reward:
    backend = backend_from_spec(spec)
    params = GenerationParams(max_tokens=4, temperature=0.0)

    def reward(completion: str, record: Mapping[str, Any]) -> float:
        reference = f"\nReference answer: {record['answer']}" if "answer" in record else ""
        messages = [
            {
                "role": "user",
                "content": f"Question: {record.get('prompt', '')}{reference}\n"
                f"Answer to grade: {completion}\nIs the answer correct? Reply Yes or No.",
            }
        ]
        (verdict,) = backend.chat([messages], params)
        return 1.0 if verdict.strip().lower().startswith("yes") else 0.0

    return reward


def make_reward(spec: str) -> Reward:
    """The reward named by `spec` (see the module docstring)."""
    if spec == "exact":
        return lambda c, r: float(exact_match(c, _needs_answer(spec, r)))
    if spec == "contains":
        return lambda c, r: float(answer_str_em(c, [_needs_answer(spec, r)]) or 0.0)
    kind, _, arg = spec.partition(":")
    if kind == "regex" and arg:
        pattern = re.compile(arg)
        return lambda c, r: float(pattern.search(c) is not None)
    if kind == "python" and ":" in arg:
        module, _, name = arg.rpartition(":")
        fn = getattr(importlib.import_module(module), name, None)
        if not callable(fn):
            raise ValueError(f"reward {spec!r}: {module} has no callable {name!r}")
        return lambda c, r: float(fn(c, r))
    if kind == "judge" and arg:
        return _judge(arg)
    raise ValueError(
        f"unknown reward {spec!r}; use exact, contains, regex:<pattern>, "
        "python:<module>:<function> or judge:<backend spec>"
    )


def combined(specs: Sequence[str], weights: Sequence[float] | None = None) -> Reward:
    """Weighted sum of several rewards (weights default to 1)."""
    if not specs:
        raise ValueError("at least one reward is needed")
    weights = list(weights) if weights else [1.0] * len(specs)
    if len(weights) != len(specs):
        raise ValueError(f"{len(specs)} rewards but {len(weights)} weights")
    fns = [make_reward(s) for s in specs]
    return lambda c, r: sum(w * f(c, r) for w, f in zip(weights, fns, strict=True))
