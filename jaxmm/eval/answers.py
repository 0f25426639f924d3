"""Short-answer matching: SQuAD-style normalisation, exact match and ALCE str-EM.

One home for "is this generated answer the gold one", used by GenerationPrograms and the CINGS
experiment alike.
"""

from __future__ import annotations

import re
from collections.abc import Sequence


def normalize(text: str) -> str:
    """Lower case, punctuation and articles (a/an/the) removed, whitespace collapsed."""
    text = re.sub(r"\b(a|an|the)\b", " ", re.sub(r"[^\w\s]", " ", text.lower()))
    return " ".join(text.split())


def exact_match(prediction: str, gold: str | Sequence[str]) -> bool:
    """Normalised equality with the gold answer or any of its aliases."""
    golds = [gold] if isinstance(gold, str) else gold
    return any(normalize(prediction) == normalize(g) for g in golds)


def answer_str_em(answer: str, answers: Sequence[str | Sequence[str]]) -> float | None:
    """ALCE str-EM: the fraction of gold answers (each with aliases) found in the answer."""
    if not answers:
        return None
    norm = f" {normalize(answer)} "
    hits = [
        any(f" {normalize(a)} " in norm for a in ([g] if isinstance(g, str) else g))
        for g in answers
    ]
    return sum(hits) / len(hits)
