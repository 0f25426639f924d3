"""Hallucination-detection metrics: detection quality and reasoning-trace quality.

Detection (gold and predicted labels "hallucinated" / "faithful", positive class
"hallucinated"): accuracy, balanced accuracy (mean of the two class recalls) and F1 of the
positive class. A missing prediction (unparsable model output) counts as wrong: it is scored
as the opposite of the gold label.

Trace quality (CLATTER, arXiv 2506.05243):
  * evidence grounding -- a quoted span counts as found when it occurs in the source after
    normalisation (case, whitespace, punctuation) or fuzzily: a `difflib` ratio of at least
    `FUZZY_THRESHOLD` against some window of the source with about as many words;
  * aggregation consistency -- the verdict agrees with the rule "faithful only if every
    sub-claim is supported";
  * atomicity -- a sub-claim is atomic when it has at most `ATOMIC_MAX_WORDS` words and no
    conjunction (`CONJUNCTIONS`, or a ';').
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Sequence

HALLUCINATED, FAITHFUL = "hallucinated", "faithful"
SUBCLAIM_LABELS = ("supported", "unsupported", "contradicted")
FUZZY_THRESHOLD = 0.85
ATOMIC_MAX_WORDS = 15
CONJUNCTIONS = frozenset(("and", "or", "but", "while", "whereas", "although", "because"))

_WORD = re.compile(r"[a-z0-9]+(?:['.][a-z0-9]+)*")


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def quote_in_source(quote: str, source: str, threshold: float = FUZZY_THRESHOLD) -> bool:
    """Whether `quote` occurs in `source`, exactly after normalisation or fuzzily."""
    q_words, s_words = _words(quote), _words(source)
    if not q_words:
        return False
    q, s = " ".join(q_words), " ".join(s_words)
    if q in s:
        return True
    n = len(q_words)
    for width in {max(1, n - 1), n, n + 1}:
        for start in range(max(1, len(s_words) - width + 1)):
            window = " ".join(s_words[start : start + width])
            matcher = difflib.SequenceMatcher(None, q, window, autojunk=False)
            if matcher.quick_ratio() >= threshold and matcher.ratio() >= threshold:
                return True
    return False


def rule_verdict(labels: Sequence[str | None]) -> str | None:
    """ "faithful" iff every sub-claim is supported; None when a label is missing or empty."""
    if not labels or any(lab not in SUBCLAIM_LABELS for lab in labels):
        return None
    return FAITHFUL if all(lab == "supported" for lab in labels) else HALLUCINATED


def conjunction_count(text: str) -> int:
    return sum(w in CONJUNCTIONS for w in _words(text)) + text.count(";")


def is_atomic(text: str) -> bool:
    return len(_words(text)) <= ATOMIC_MAX_WORDS and conjunction_count(text) == 0


def detection_metrics(gold: Sequence[str], pred: Sequence[str | None]) -> dict[str, float]:
    """accuracy, balanced_accuracy, f1_hallucinated over paired labels (None = wrong)."""
    if len(gold) != len(pred):
        raise ValueError(f"{len(gold)} gold labels but {len(pred)} predictions")
    if not gold:
        return {}
    scored = [
        p if p is not None else (FAITHFUL if g == HALLUCINATED else HALLUCINATED)
        for g, p in zip(gold, pred, strict=True)
    ]
    pairs = list(zip(gold, scored, strict=True))
    tp = pairs.count((HALLUCINATED, HALLUCINATED))
    tn = pairs.count((FAITHFUL, FAITHFUL))
    fp = pairs.count((FAITHFUL, HALLUCINATED))
    fn = pairs.count((HALLUCINATED, FAITHFUL))
    recalls = [r for r in (_div(tp, tp + fn), _div(tn, tn + fp)) if r is not None]
    return {
        "accuracy": (tp + tn) / len(gold),
        "balanced_accuracy": sum(recalls) / len(recalls),
        "f1_hallucinated": _div(2 * tp, 2 * tp + fp + fn) or 0.0,
    }


def _div(a: float, b: float) -> float | None:
    return a / b if b else None


def trace_quality(
    source: str, subclaims: Iterable[dict], verdict: str | None
) -> dict[str, int | float | bool | None]:
    """Per-record counts for `trace_metrics`: quotes (found in the source), sub-claims
    (with no evidence, atomic, words, conjunctions), aggregation consistency (None when the
    verdict or a sub-claim label is missing)."""
    subclaims = list(subclaims)
    quotes = [q for c in subclaims for q in c.get("evidence", [])]
    rule = rule_verdict([c.get("label") for c in subclaims])
    return {
        "quotes": len(quotes),
        "quotes_in_source": sum(quote_in_source(q, source) for q in quotes),
        "subclaims": len(subclaims),
        "subclaims_without_evidence": sum(not c.get("evidence") for c in subclaims),
        "subclaims_atomic": sum(is_atomic(c["text"]) for c in subclaims),
        "subclaim_words": sum(len(_words(c["text"])) for c in subclaims),
        "subclaim_conjunctions": sum(conjunction_count(c["text"]) for c in subclaims),
        "aggregation_consistent": None if rule is None or verdict is None else rule == verdict,
    }


def trace_metrics(qualities: Sequence[dict]) -> dict[str, float]:
    """Pooled over records: evidence_in_source (found quotes / quotes),
    evidence_missing_rate, aggregation_consistency (over records where it is defined),
    atomic_rate, mean_subclaim_words, mean_subclaim_conjunctions, mean_subclaims."""
    if not qualities:
        return {}
    total = {k: sum(q[k] for q in qualities) for k in qualities[0] if k != "aggregation_consistent"}
    consistent = [q["aggregation_consistent"] for q in qualities]
    consistent = [c for c in consistent if c is not None]
    out = {"mean_subclaims": total["subclaims"] / len(qualities)}
    if total["quotes"]:
        out["evidence_in_source"] = total["quotes_in_source"] / total["quotes"]
    if consistent:
        out["aggregation_consistency"] = sum(consistent) / len(consistent)
    if total["subclaims"]:
        n = total["subclaims"]
        out["evidence_missing_rate"] = total["subclaims_without_evidence"] / n
        out["atomic_rate"] = total["subclaims_atomic"] / n
        out["mean_subclaim_words"] = total["subclaim_words"] / n
        out["mean_subclaim_conjunctions"] = total["subclaim_conjunctions"] / n
    return out
