"""Claim-verification JSONL (`source`, `claim` or `text`, `label`) -> pipeline input records.

One record per line: `source` (a string or a list of strings), the text to check in `claim`
or `text`, and an optional gold `label`. Labels from the usual claim-verification and
hallucination datasets are normalised to `"hallucinated"` / `"faithful"` (`normalize_label`):
booleans and 0/1 mean "hallucinated?", and FEVER/SciFact-style words map by meaning
(`SUPPORTS` -> faithful, `REFUTES`, `NOT ENOUGH INFO`, `unsupported`, `contradicted` ->
hallucinated). Records without an `id` get `<file stem>-<line>`.
"""

from __future__ import annotations

import os
from typing import Any

from jaxmm.io.jsonl import PathLike, iter_jsonl, write_jsonl

HALLUCINATED, FAITHFUL = "hallucinated", "faithful"

_LABEL_WORDS = {
    HALLUCINATED: (
        "hallucinated", "hallucination", "unfaithful", "not faithful", "unsupported",
        "not supported", "contradicted", "contradiction", "refutes", "refuted",
        "not enough info", "nei", "neutral", "false", "incorrect", "inconsistent",
    ),
    FAITHFUL: (
        "faithful", "not hallucinated", "supported", "supports", "entailment", "entailed",
        "true", "correct", "consistent",
    ),
}  # fmt: skip
_WORD_TO_LABEL = {w: label for label, words in _LABEL_WORDS.items() for w in words}


def normalize_label(value: Any) -> str:
    """A gold label -> "hallucinated" | "faithful"; ValueError naming the value otherwise.

    bool / 0 / 1 answer "is it hallucinated?" (1 and True = hallucinated).
    """
    if isinstance(value, bool):
        return HALLUCINATED if value else FAITHFUL
    if isinstance(value, int) and value in (0, 1):
        return HALLUCINATED if value else FAITHFUL
    if isinstance(value, str):
        key = " ".join(value.strip().lower().replace("_", " ").split())
        if key in _WORD_TO_LABEL:
            return _WORD_TO_LABEL[key]
    raise ValueError(
        f"field 'label' must be 'hallucinated'/'faithful' (or a known synonym, a bool, 0/1), "
        f"got {value!r}"
    )


def claim_text(record: dict[str, Any]) -> str:
    """The text to check: `claim`, else `text`."""
    return record["claim"] if "claim" in record else record["text"]


def source_text(record: dict[str, Any]) -> str:
    """The source as one string (a list of passages is joined by blank lines)."""
    source = record["source"]
    return "\n\n".join(source) if isinstance(source, list) else source


def load_claims(path: PathLike, *, mode: str | None = None) -> list[dict[str, Any]]:
    """Claim-verification JSONL -> runtime input records {"id", "source", "claim", ["label"],
    ["mode"], ...other fields kept}. Raises ValueError naming file:line and the field."""
    path = os.fspath(path)
    stem = os.path.splitext(os.path.basename(path))[0]
    out = []
    for lineno, rec in iter_jsonl(path, what="claims file"):
        where = f"{path}:{lineno}"
        if "source" not in rec:
            raise ValueError(f"{where}: lacks field 'source'")
        if "claim" not in rec and "text" not in rec:
            raise ValueError(f"{where}: lacks field 'claim' (or 'text')")
        new = {"id": rec.get("id", f"{stem}-{lineno}"), **rec}
        new["claim"] = claim_text(rec)
        new.pop("text", None)
        if "label" in rec:
            try:
                new["label"] = normalize_label(rec["label"])
            except ValueError as e:
                raise ValueError(f"{where}: {e}") from None
        if mode is not None:
            new["mode"] = mode
        out.append(new)
    return out


def write_claims(path: PathLike, records: list[dict[str, Any]]) -> int:
    """Writes pipeline input records (atomically); returns the count."""
    return write_jsonl(path, records)
