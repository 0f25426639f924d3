"""Context-grounding evaluation for the CINGS experiment (arXiv 2506.15480): prompts, answers,
exact-match accounting per kind of question.

Why a module: the two training recipes put the context in different places at inference, and
the comparison is only fair when everything else (questions, decoding, answer extraction,
matching) is one code path. Question records are `jaxmm.data.fact_world`'s: `question`,
`answer` (gold), `kind` (agree | new | contradict | closed_book), `context` (absent for
closed-book) and `memory_answer` (the value written into pretraining, when there is one).

Prompt formats (where the context goes):

    user     the context, a blank line, then the question in the user turn (a RAG prompt; how a
             standard instruction-tuned model is given context)
    prefill  the question in the user turn; the assistant turn pre-filled with
             `## Context\\n<context>\\n## Answer\\n` and continued (CINGS inference)

Closed-book questions get the plain question in both formats. A CINGS model may then write
its own `## Context ... ## Answer` first; the answer is what follows the last answer marker.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from jaxmm.data.sft_records import ANSWER_MARKER, CONTEXT_MARKER
from jaxmm.eval.answers import exact_match

PROMPT_FORMATS = ("user", "prefill")
KINDS = ("agree", "new", "contradict", "closed_book")
Message = dict[str, str]
# (conversations, continue_final_message per conversation) -> generated texts, in order.
GenerateFn = Callable[[Sequence[Sequence[Message]], Sequence[bool]], list[str]]


def prompt(record: Mapping[str, Any], fmt: str) -> tuple[list[Message], bool]:
    """(messages, continue_final_message) asking `record`'s question in format `fmt`."""
    if fmt not in PROMPT_FORMATS:
        raise ValueError(f"prompt format {fmt!r} is not one of {PROMPT_FORMATS}")
    question, context = record["question"], record.get("context")
    if not context:
        return [{"role": "user", "content": question}], False
    if fmt == "user":
        return [{"role": "user", "content": f"{context}\n\n{question}"}], False
    prefill = f"{CONTEXT_MARKER}{context}{ANSWER_MARKER}"
    return [{"role": "user", "content": question}, {"role": "assistant", "content": prefill}], True


def extract_answer(text: str) -> str:
    """The answer in a generation: after the last `## Answer` marker if any, first line."""
    marker = ANSWER_MARKER.strip()
    if marker in text:
        text = text.rsplit(marker, 1)[1]
    lines = text.strip().splitlines()
    return lines[0].strip() if lines else ""


def score(
    generate: GenerateFn, tests: Mapping[str, Sequence[Mapping[str, Any]]], fmt: str
) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """Exact match per kind (`em/<kind>`, fraction of that kind's records), the share of
    contradicting-context answers that are the memorised value instead (`memory/contradict`),
    and one prediction row per record. All records go to `generate` in one call."""
    records = [r for kind in KINDS for r in tests.get(kind, ())]
    if not records:
        raise ValueError(f"no test records of kinds {KINDS}")
    prompts = [prompt(r, fmt) for r in records]
    texts = generate([m for m, _ in prompts], [c for _, c in prompts])
    if len(texts) != len(records):
        raise ValueError(f"generate returned {len(texts)} texts for {len(records)} prompts")
    rows, hits = [], {k: [] for k in KINDS}
    memory_hits = []
    for r, text in zip(records, texts, strict=True):
        answer = extract_answer(text)
        ok = exact_match(answer, r["answer"])
        hits[r["kind"]].append(ok)
        if r["kind"] == "contradict":
            memory_hits.append(exact_match(answer, r["memory_answer"]))
        rows.append({"id": r["id"], "kind": r["kind"], "gold": r["answer"], "text": text,
                     "answer": answer, "em": ok})  # fmt: skip
    metrics = {f"em/{k}": sum(v) / len(v) for k, v in hits.items() if v}
    if memory_hits:
        metrics["memory/contradict"] = sum(memory_hits) / len(memory_hits)
    return metrics, rows


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    values = list(values)
    if not values:
        raise ValueError("mean_std of no values")
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0
