"""`halu`: CLATTER guided hallucination detection (arXiv 2506.05243), with two baselines.

Input records (`jaxmm.data.claims`): {"id", "source" (string or list of strings), "claim" or
"text", optional "label" (gold), optional "mode"}. `mode` picks the method per record:

  * "guided" (default), three guided steps, one model call each (step 2: one per sub-claim,
    sent as one batch): (1) decompose the claim into atomic sub-claims; (2) for each, quote
    evidence from the source and label it supported / unsupported / contradicted;
    (3) aggregate into a verdict ("faithful" only if every sub-claim is supported);
  * "direct": one call answering faithful / hallucinated;
  * "cot": one call reasoning freely, ending with a verdict.

Output: {"mode", "prediction" ("hallucinated" | "faithful" | null when unparsable), "gold",
"trace" (sub-claims with evidence and labels, verdicts), "failures" (every model output that
could not be parsed: step, sub-claim, error), "raw" (the model outputs), "quality" (per-record
trace counts, `jaxmm.eval.halu.trace_quality`)}. Unparsable output never stops a run: a
decomposition with no list falls back to the whole claim as one sub-claim, a sub-claim without
a label gets label null, a missing verdict gives prediction null (scored as wrong).
Metrics (`metrics`): detection (accuracy, balanced accuracy, F1 of "hallucinated"), trace
quality, failure rates; per mode as "<mode>/<metric>" when a file mixes modes.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from typing import Any

from jaxmm.data.claims import claim_text, normalize_label, source_text
from jaxmm.eval import halu as halu_eval
from jaxmm.eval.halu import FAITHFUL, HALLUCINATED
from jaxmm.generate.backends import Backend
from jaxmm.generate.params import GenerationParams
from jaxmm.pipelines.runtime import Pipeline, Record

MODES = ("guided", "direct", "cot")
MAX_SUBCLAIMS = 6  # more list items than this are dropped (noted in the trace)

PROMPTS = {
    "decompose": (
        "Break the text below into atomic sub-claims: short sentences that each state exactly "
        "one fact. Write them as a numbered list, one per line, and nothing else.\n\n"
        "Text: {claim}"
    ),
    "attribute": (
        "Source:\n{source}\n\nSub-claim: {subclaim}\n\n"
        "Does the source support the sub-claim? First quote the sentence of the source that "
        "is relevant, then label the sub-claim.\n"
        "supported: the source states it.\n"
        "contradicted: the source states something different.\n"
        "unsupported: the source does not mention it.\n"
        "Answer in exactly this format:\n"
        'Evidence: "<quote from the source>"\n'
        "Label: <supported, contradicted or unsupported>"
    ),
    "aggregate": (
        "Text: {claim}\n\nIts sub-claims were checked against the source:\n{checked}\n\n"
        "The text is faithful only if every sub-claim is supported; otherwise it is "
        'hallucinated. Answer with one line: "Verdict: faithful" or "Verdict: hallucinated".'
    ),
    "direct": (
        "Source:\n{source}\n\nText: {claim}\n\n"
        "Is every fact in the text supported by the source? Answer with one word: faithful "
        "(all facts supported) or hallucinated (some fact is unsupported or contradicted)."
    ),
    "cot": (
        "Source:\n{source}\n\nText: {claim}\n\n"
        "Check step by step whether every fact in the text is supported by the source. Then "
        'finish with one line: "Verdict: faithful" or "Verdict: hallucinated".'
    ),
}
PROMPT_VERSION = "1"
VERSION = (
    f"{PROMPT_VERSION}+"
    + hashlib.sha256("\x00".join(PROMPTS[k] for k in sorted(PROMPTS)).encode()).hexdigest()[:8]
)

# ------------------------------------------------------------------------------- parsing
_ITEM = re.compile(
    r"^\s*(?:"
    r"(?:sub[- ]?claim|claim|fact|step)\s*#?\s*\d+\s*[:.)\]-]"  # Sub-claim 1: / Claim 2.
    r"|\(?\d+\s*[.):\]]"  # 1. / 1) / (1) / 1:
    r"|\d+\s+-"  # 1 -
    r"|[-*\u2022]"  # bullets
    r")\s*(?P<text>.+?)\s*$",
    re.IGNORECASE,
)
_INLINE_ITEM = re.compile(r"(?:^|\s)\(?\d{1,2}[.)]\s+")
_LABEL_WORDS = {
    "does not support": "unsupported",
    "doesn't support": "unsupported",
    "not supported": "unsupported",
    "unsupported": "unsupported",
    "not mentioned": "unsupported",
    "not enough information": "unsupported",
    "unverifiable": "unsupported",
    "neutral": "unsupported",
    "supported": "supported",
    "supports": "supported",
    "entailed": "supported",
    "contradicted": "contradicted",
    "contradicts": "contradicted",
    "contradiction": "contradicted",
    "refuted": "contradicted",
}
_VERDICT_WORDS = {
    "not hallucinated": FAITHFUL,
    "not faithful": HALLUCINATED,
    "unfaithful": HALLUCINATED,
    "hallucinated": HALLUCINATED,
    "hallucination": HALLUCINATED,
    "faithful": FAITHFUL,
    "not supported": HALLUCINATED,
    "unsupported": HALLUCINATED,
    "contradicted": HALLUCINATED,
    "supported": FAITHFUL,
}
_QUOTE = re.compile(r"\"([^\"\n]{3,})\"|\u201c([^\u201d\n]{3,})\u201d")
_NO_EVIDENCE = re.compile(r"^\W*(none|n/?a|no evidence|nothing|-)?\W*$", re.IGNORECASE)


def _alternation(words: Sequence[str]) -> str:
    return "|".join(
        re.escape(w).replace(r"\ ", r"\s+") for w in sorted(words, key=len, reverse=True)
    )


def _keyword_re(words: Sequence[str]) -> re.Pattern:
    return re.compile(rf"\b({_alternation(words)})\b", re.IGNORECASE)


def _labelled_re(keys: str, words: Sequence[str]) -> re.Pattern:
    return re.compile(rf"\b(?:{keys})\s*[:=\-]\s*[*\"'`\[(<]*\s*({_alternation(words)})\b", re.I)


def _options_re(words: Sequence[str]) -> re.Pattern:
    """An echoed list of the options ("supported, contradicted or unsupported")."""
    w = _alternation(words)
    sep = r"[\s\"'`*]*(?:,|/|\||or|,\s*or)[\s\"'`*]*(?:(?:verdict|label)\s*:\s*)?"
    return re.compile(rf"\b(?:{w})\b(?:{sep}\b(?:{w})\b)+", re.IGNORECASE)


_LABEL_KEY = _keyword_re(list(_LABEL_WORDS))
_LABEL_LINE = _labelled_re("label|judg(?:e)?ment|answer|verdict", list(_LABEL_WORDS))
_LABEL_OPTIONS = _options_re(list(_LABEL_WORDS))
_VERDICT_KEY = _keyword_re(list(_VERDICT_WORDS))
_VERDICT_LINE = _labelled_re("verdict|final answer|answer|label|conclusion", list(_VERDICT_WORDS))
_VERDICT_OPTIONS = _options_re(list(_VERDICT_WORDS))
_VERDICT_YES_NO = re.compile(r"\b(faithful|hallucinated)\s*[:=?\-]\s*[*\"']*\s*(yes|no)\b", re.I)


def _norm(word: str) -> str:
    return " ".join(word.lower().split())


def _clean_item(text: str) -> str:
    return text.strip().strip("*_`").strip().strip("\"'\u201c\u201d").strip()


def parse_subclaims(text: str) -> tuple[list[str], str | None]:
    """Numbered or bulleted items of a decomposition (prose lines without a marker are
    ignored; one line of inline "1. a 2. b" items is split) -> (sub-claims, error or None)."""
    lines = text.replace("**", "").splitlines()
    items = [m.group("text") for line in lines if (m := _ITEM.match(line))]
    if not items:
        parts = _INLINE_ITEM.split(text)
        items = parts[1:] if len(parts) > 2 else []
    items = [part for item in items for part in _INLINE_ITEM.split(item)]  # "a 2. b" on a line
    items = [c for c in (_clean_item(i) for i in items) if re.search(r"\w", c)]
    items = list(dict.fromkeys(items))  # drop repeats, keep order
    if not items:
        return [], "no numbered or bulleted sub-claims"
    return items, None


def _last_or_first(matches: list[re.Match], prefer: str) -> re.Match | None:
    if not matches:
        return None
    return matches[-1] if prefer == "last" else matches[0]


def parse_label(text: str) -> str | None:
    """The sub-claim label: the last "Label: X" line, else the last label word in the text
    (an echoed option list such as "supported, contradicted or unsupported" is ignored)."""
    text = _LABEL_OPTIONS.sub(" ", text)
    m = _last_or_first(list(_LABEL_LINE.finditer(text)), "last")
    m = m or _last_or_first(list(_LABEL_KEY.finditer(text)), "last")
    return _LABEL_WORDS[_norm(m.group(1))] if m else None


def parse_evidence(text: str) -> list[str]:
    """Quoted spans ("..." or curly quotes) from the "Evidence:" line on (or, without one,
    anywhere); an "Evidence:" line without quotes gives its rest unless it says none."""
    start = re.search(r"\bevidence\s*[:=\-]", text, re.IGNORECASE)
    scope = text[start.end() :] if start else text
    label = re.search(r"^\s*label\s*[:=\-]", scope, re.IGNORECASE | re.MULTILINE)
    scope = scope[: label.start()] if label else scope
    quotes = [a or b for a, b in _QUOTE.findall(scope)]
    if quotes or not start:
        return [q.strip() for q in quotes if q.strip()]
    rest = scope.strip().splitlines()[0] if scope.strip() else ""
    rest = rest.strip().strip("\"'\u201c\u201d").strip()
    return [] if _NO_EVIDENCE.match(rest) or len(rest) < 3 else [rest]


def parse_attribution(text: str) -> dict[str, Any]:
    """{"label": supported | unsupported | contradicted | None, "evidence": [quotes]}."""
    return {"label": parse_label(text), "evidence": parse_evidence(text)}


def parse_verdict(text: str, prefer: str = "last") -> str | None:
    """ "hallucinated" | "faithful" | None: a "Verdict: X" line (the last one), else a
    "Faithful: no" / "Hallucinated: yes" answer, else the first (`prefer="first"`, a direct
    answer) or last (a chain of thought) verdict word."""
    text = _VERDICT_OPTIONS.sub(" ", text)
    m = _last_or_first(list(_VERDICT_LINE.finditer(text)), "last")
    if m is None and (yes_no := _last_or_first(list(_VERDICT_YES_NO.finditer(text)), prefer)):
        said, answer = _VERDICT_WORDS[yes_no.group(1).lower()], yes_no.group(2).lower()
        return said if answer == "yes" else ({FAITHFUL, HALLUCINATED} - {said}).pop()
    m = m or _last_or_first(list(_VERDICT_KEY.finditer(text)), prefer)
    return _VERDICT_WORDS[_norm(m.group(1))] if m else None


# ------------------------------------------------------------------------------- steps
def _ask(backend: Backend, prompts: list[str], params: GenerationParams) -> list[str]:
    return backend.chat([[{"role": "user", "content": p}] for p in prompts], params)


def _guided(source: str, claim: str, backend: Backend, params: GenerationParams) -> dict:
    failures: list[dict[str, Any]] = []
    (decomposition,) = _ask(backend, [PROMPTS["decompose"].format(claim=claim)], params)
    texts, error = parse_subclaims(decomposition)
    if error:
        failures.append({"step": "decompose", "error": error})
        texts = [claim]
    dropped = texts[MAX_SUBCLAIMS:]
    texts = texts[:MAX_SUBCLAIMS]
    prompts = [PROMPTS["attribute"].format(source=source, subclaim=t) for t in texts]
    attributions = _ask(backend, prompts, params)
    subclaims = []
    for i, (t, out) in enumerate(zip(texts, attributions, strict=True)):
        parsed = parse_attribution(out)
        if parsed["label"] is None:
            failures.append({"step": "attribute", "subclaim": i, "error": "no label"})
        subclaims.append({"text": t, **parsed})
    checked = "\n".join(
        f"{i + 1}. {c['text']} -> {c['label'] or 'unknown'}" for i, c in enumerate(subclaims)
    )
    (aggregation,) = _ask(
        backend, [PROMPTS["aggregate"].format(claim=claim, checked=checked)], params
    )
    verdict = parse_verdict(aggregation, prefer="last")
    if verdict is None:
        failures.append({"step": "aggregate", "error": "no verdict"})
    trace = {
        "subclaims": subclaims,
        "dropped_subclaims": dropped,
        "verdict": verdict,
        "rule_verdict": halu_eval.rule_verdict([c["label"] for c in subclaims]),
    }
    raw = {"decompose": decomposition, "attribute": attributions, "aggregate": aggregation}
    quality = {"quality": halu_eval.trace_quality(source, subclaims, verdict)}
    return {"prediction": verdict, "trace": trace, "failures": failures, "raw": raw, **quality}


def _baseline(
    mode: str, source: str, claim: str, backend: Backend, params: GenerationParams
) -> dict:
    (out,) = _ask(backend, [PROMPTS[mode].format(source=source, claim=claim)], params)
    verdict = parse_verdict(out, prefer="first" if mode == "direct" else "last")
    failures = [] if verdict else [{"step": mode, "error": "no verdict"}]
    return {"prediction": verdict, "trace": {"verdict": verdict}, "failures": failures} | {
        "raw": {mode: out}
    }


def run(record: Record, backend: Backend, params: GenerationParams) -> dict[str, Any]:
    mode = record.get("mode", "guided")
    source, claim = source_text(record), claim_text(record)
    if mode == "guided":
        result = _guided(source, claim, backend, params)
    else:
        result = _baseline(mode, source, claim, backend, params)
    gold = normalize_label(record["label"]) if "label" in record else None
    return {"mode": mode, "gold": gold, **result}


def validate(record: Record) -> None:
    source = record.get("source")
    if isinstance(source, list):
        if not source or not all(isinstance(s, str) and s.strip() for s in source):
            raise ValueError("field 'source' must be a non-empty list of non-empty strings")
    elif not isinstance(source, str) or not source.strip():
        raise ValueError("field 'source' must be a non-empty string (or list of strings)")
    if ("claim" in record) == ("text" in record):
        raise ValueError("give exactly one of the fields 'claim' or 'text'")
    key = "claim" if "claim" in record else "text"
    if not isinstance(record[key], str) or not record[key].strip():
        raise ValueError(f"field {key!r} must be a non-empty string")
    if record.get("mode", "guided") not in MODES:
        raise ValueError(f"field 'mode' must be one of {list(MODES)}, got {record['mode']!r}")
    if "label" in record:
        normalize_label(record["label"])


# ------------------------------------------------------------------------------- metrics
def _metrics_of(outputs: Sequence[Record]) -> dict[str, float]:
    labelled = [o for o in outputs if o.get("gold") is not None]
    out: dict[str, float] = {"records": len(outputs), "labelled": len(labelled)}
    out |= halu_eval.detection_metrics(
        [o["gold"] for o in labelled], [o.get("prediction") for o in labelled]
    )
    if outputs:
        out["unparsed_prediction_rate"] = sum(o.get("prediction") is None for o in outputs) / len(
            outputs
        )
        out["records_with_failures"] = sum(bool(o.get("failures")) for o in outputs) / len(outputs)
        out["parse_failures"] = sum(len(o.get("failures", [])) for o in outputs)
    out |= halu_eval.trace_metrics([o["quality"] for o in outputs if "quality" in o])
    return out


def metrics(inputs: Sequence[Record], outputs: Sequence[Record]) -> dict[str, float]:
    """Over every record; with more than one mode in the file, also "<mode>/<metric>"."""
    del inputs  # the outputs carry mode, gold, prediction, failures and quality
    out = _metrics_of(outputs)
    modes = sorted({o.get("mode", "guided") for o in outputs})
    if len(modes) > 1:
        for mode in modes:
            per_mode = _metrics_of([o for o in outputs if o.get("mode", "guided") == mode])
            out |= {f"{mode}/{k}": v for k, v in per_mode.items()}
    return out


PIPELINE = Pipeline(
    name="halu",
    version=VERSION,
    run=run,
    required_fields=("source",),
    validate=validate,
    metrics=metrics,
)
