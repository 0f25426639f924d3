"""`genprog`: GenerationPrograms (arXiv 2506.14580), attributed long-form QA.

Input records: {"id", "question", "docs" | "context", ["answers"], ["gold_docs"], ["mode"]}.
`docs` is a list of passages (strings or {"title", "text"}); `context` (LFQA style) is one
string or a list of strings. `answers` are the gold short answers (each a string or a list of
aliases), `gold_docs` the 1-based passages that hold them. `mode` picks the method:

* "program" (default): the model writes one program per output sentence
  (`fusion(paraphrase(S1), S4, instruction="...")`, see `genprog_program`); each is parsed
  safely and executed innermost first, one model call per module; citations are the union of
  the source sentences that flowed into each output sentence.
* "posthoc": the model answers directly; then for each answer sentence it writes a program
  that would reproduce it, whose leaves become the sentence's citations (post-hoc attribution).
* "direct": the baseline, the model answers with `[S<i>]` citation marks (ALCE style).

Each record is then judged with an NLI call per check (the same backend, ALCE's rules):
citation recall (a statement is entailed by the union of its cited sentences) and precision
(a citation counts unless the statement is not entailed by it alone but still is by the other
citations). The judgments are stored in the output record, so they are cached and resumable;
`metrics` only aggregates output fields. Variants: `genprog_posthoc`, `genprog_direct`.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Sequence
from typing import Any

from jaxmm.eval.answers import answer_str_em
from jaxmm.generate.backends import Backend
from jaxmm.generate.params import GenerationParams
from jaxmm.pipelines import genprog_program as gp
from jaxmm.pipelines.runtime import Pipeline, Record

VERSION = "genprog-v1"
MODES = ("program", "posthoc", "direct")
MAX_PROGRAMS = 5  # program lines read from one generation
JUDGE_MAX_TOKENS = 4

PROGRAM_SYSTEM = (
    "You write programs that build an answer from numbered source sentences. Write one program "
    "per answer sentence, one per line, nothing else. Modules: paraphrase(x), compression(x) "
    "(one input each) and fusion(x, y, ...) (two or more inputs); each may take "
    'instruction="...". Inputs are sentence ids like S3 or other module calls.'
)
FEW_SHOT = [
    (
        "Document [1] (Velmora)\nS1: Velmora is a port town in Drasil.\n"
        "S2: It was founded in 1612 by fishermen.\nDocument [2] (Drasil)\n"
        "S3: Drasil is a small northern country.\nS4: Its capital is Ostrevan.",
        "Where is Velmora and when was it founded?",
        'fusion(S1, S2, instruction="say where and when the town was founded")\nparaphrase(S3)',
    ),
    (
        "Document [1] (Kettlewing)\nS1: The Kettlewing is a bird that lives in dry hills, "
        "where it feeds mostly on seeds and beetles.\nS2: It lays two eggs a year.\n"
        "Document [2] (Hills)\nS3: The dry hills receive little rain.",
        "What does the Kettlewing eat?",
        'compression(S1, instruction="keep only what it eats")',
    ),
]
MODULE_PROMPTS = {
    "paraphrase": "Paraphrase this sentence, keeping its meaning.",
    "compression": "Shorten this sentence, keeping only its key fact.",
    "fusion": "Combine these sentences into one sentence.",
}
_CITE = re.compile(r"\[\s*[Ss](\d+)\s*\]")


# ------------------------------------------------------------------------------ input
def passages(record: Record) -> tuple[list[str], list[str]]:
    """(passage texts, titles) from `docs` or `context`."""
    docs = record["docs"] if "docs" in record else record["context"]
    if isinstance(docs, str):
        docs = [docs]
    texts, titles = [], []
    for d in docs:
        if isinstance(d, dict):
            texts.append(d["text"])
            titles.append(d.get("title") or "")
        else:
            texts.append(d)
            titles.append("")
    return texts, titles


def validate(record: Record) -> None:
    q = record.get("question")
    if not isinstance(q, str) or not q.strip():
        raise ValueError("field 'question' must be a non-empty string")
    if ("docs" in record) == ("context" in record):
        raise ValueError("give exactly one of the fields 'docs' or 'context'")
    field = "docs" if "docs" in record else "context"
    docs = record[field]
    if isinstance(docs, str):
        docs = [docs]
    ok = (
        isinstance(docs, list)
        and docs
        and all(
            (isinstance(d, str) and d.strip())
            or (isinstance(d, dict) and isinstance(d.get("text"), str) and d["text"].strip())
            for d in docs
        )
    )
    if not ok:
        raise ValueError(
            f"field {field!r} must be a non-empty list of passages "
            "(non-empty strings or {'title', 'text'} objects)"
        )
    if record.get("mode", "program") not in MODES:
        raise ValueError(f"field 'mode' must be one of {list(MODES)}, got {record['mode']!r}")
    answers = record.get("answers", [])
    if not isinstance(answers, list) or not all(
        isinstance(a, str) or (isinstance(a, list) and a and all(isinstance(x, str) for x in a))
        for a in answers
    ):
        raise ValueError("field 'answers' must be a list of strings or of lists of strings")
    gold = record.get("gold_docs", [])
    if not isinstance(gold, list) or not all(
        isinstance(g, int) and not isinstance(g, bool) and 1 <= g <= len(docs) for g in gold
    ):
        raise ValueError(f"field 'gold_docs' must list passage numbers in 1..{len(docs)}")


# ------------------------------------------------------------------------------ prompts
def program_messages(question: str, sources: str) -> list[dict[str, str]]:
    msgs = [{"role": "system", "content": PROGRAM_SYSTEM}]
    for src, q, prog in FEW_SHOT:
        msgs.append({"role": "user", "content": f"Sources:\n{src}\n\nQuestion: {q}\nPrograms:"})
        msgs.append({"role": "assistant", "content": prog})
    msgs.append(
        {"role": "user", "content": f"Sources:\n{sources}\n\nQuestion: {question}\nPrograms:"}
    )
    return msgs


def module_messages(module: str, inputs: Sequence[str], instruction: str | None) -> list[dict]:
    task = MODULE_PROMPTS[module] + (f" Instruction: {instruction}" if instruction else "")
    if len(inputs) == 1:
        body = f"Sentence: {inputs[0]}"
    else:
        body = "\n".join(f"Sentence {i}: {t}" for i, t in enumerate(inputs, start=1))
    return [{"role": "user", "content": f"{task} Reply with the new sentence only.\n\n{body}"}]


def answer_messages(question: str, sources: str, cite: bool) -> list[dict[str, str]]:
    how = (
        "Answer in one to three sentences. End each sentence with the ids of the source "
        "sentences that support it, like [S2][S5]."
        if cite
        else "Answer in one to three sentences using only the sources."
    )
    return [{"role": "user", "content": f"Sources:\n{sources}\n\nQuestion: {question}\n{how}"}]


def posthoc_messages(sentence: str, sources: str) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": PROGRAM_SYSTEM},
        {
            "role": "user",
            "content": f"Sources:\n{sources}\n\nWrite one program that produces this sentence:\n"
            f"{sentence}\nProgram:",
        },
    ]


def judge_messages(premise: str, claim: str) -> list[dict[str, str]]:
    return [
        {
            "role": "user",
            "content": f"Premise: {premise}\nClaim: {claim}\n"
            "Does the premise fully support the claim? Answer yes or no.",
        }
    ]


def first_line(text: str) -> str:
    """A module's output: the first non-empty line, without surrounding quotes."""
    for line in text.strip().splitlines():
        if line.strip():
            return line.strip().strip("\"'").strip()
    return ""


def program_lines(text: str) -> list[str]:
    """Candidate program lines of a generation (headers like 'Programs:' skipped), at most
    MAX_PROGRAMS; every returned line counts as one program attempt."""
    lines = [ln.strip() for ln in text.strip().splitlines()]
    lines = [ln for ln in lines if ln and ln.strip("`") and not re.fullmatch(r"[\w ]+:", ln)]
    return lines[:MAX_PROGRAMS]


# ------------------------------------------------------------------------------ modes
def _run_program(question, sentences, sources, chat, params) -> tuple[list, list, list]:
    raw = chat(program_messages(question, sources), params)
    lines = program_lines(raw) or [raw.strip()]
    programs, statements, trace = [], [], []

    def call(module: str, inputs: Sequence[str], instruction: str | None) -> str:
        return first_line(chat(module_messages(module, inputs, instruction), params))

    for line in lines:
        try:
            parsed = gp.parse_program(line, len(sentences))
        except gp.ProgramError as e:
            programs.append({"raw": line, "ok": False, "error": str(e)})
            continue
        programs.append(
            {"raw": line, "ok": True, "program": str(parsed.node), "repairs": list(parsed.repairs)}
        )
        out = gp.execute(parsed.node, sentences, call, trace)
        if out.text:
            statements.append((out.text, list(out.sources)))
    return programs, statements, trace


def _run_posthoc(question, sentences, sources, chat, params) -> tuple[list, list, list]:
    answer = chat(answer_messages(question, sources, cite=False), params)
    programs, statements = [], []
    for sent in gp.split_sentences(answer)[:MAX_PROGRAMS]:
        raw = chat(posthoc_messages(sent, sources), params)
        line = (program_lines(raw) or [raw.strip()])[0]
        try:
            parsed = gp.parse_program(line, len(sentences))
        except gp.ProgramError as e:
            programs.append({"raw": line, "ok": False, "error": str(e)})
            statements.append((sent, []))
            continue
        programs.append(
            {"raw": line, "ok": True, "program": str(parsed.node), "repairs": list(parsed.repairs)}
        )
        statements.append((sent, sorted(gp.leaves(parsed.node))))
    return programs, statements, []


def _run_direct(question, sentences, sources, chat, params) -> tuple[list, list, list]:
    answer = chat(answer_messages(question, sources, cite=True), params)
    statements = []
    for sent in gp.split_sentences(answer)[:MAX_PROGRAMS]:
        sids = sorted({int(m) for m in _CITE.findall(sent) if 1 <= int(m) <= len(sentences)})
        text = re.sub(r"\s+([.!?])", r"\1", _CITE.sub("", sent)).strip()
        if text:
            statements.append((text, sids))
    return [], statements, []


# ------------------------------------------------------------------------------ judging
def judge_statement(text: str, sids: Sequence[int], sentences, entails) -> dict[str, Any]:
    """ALCE citation checks of one statement: recall = entailed by all its citations together;
    per citation, precise unless (not entailed by it alone and entailed by the others)."""

    def premise(ids):
        return " ".join(sentences[s - 1].text for s in ids)

    recall = bool(sids) and entails(premise(sids), text)
    precise: list[bool] = []
    if recall and len(sids) > 1:
        for s in sids:
            alone = entails(premise([s]), text)
            rest = [x for x in sids if x != s]
            precise.append(alone or not entails(premise(rest), text))
    else:
        precise = [recall] * len(sids)
    return {"recall": recall, "precise": precise}


# ------------------------------------------------------------------------------ run
def run(
    record: Record, backend: Backend, params: GenerationParams, default_mode: str = "program"
) -> dict[str, Any]:
    mode = record.get("mode", default_mode)
    texts, titles = passages(record)
    sentences = gp.number_sentences(texts)
    sources = gp.format_sources(sentences, titles)

    def chat(messages, p=params) -> str:
        return backend.chat([messages], p)[0]

    runner = {"program": _run_program, "posthoc": _run_posthoc, "direct": _run_direct}[mode]
    programs, statements, trace = runner(record["question"], sentences, sources, chat, params)

    judge_params = dataclasses.replace(
        params, max_tokens=min(params.max_tokens or JUDGE_MAX_TOKENS, JUDGE_MAX_TOKENS)
    )

    def entails(premise: str, claim: str) -> bool:
        verdict = chat(judge_messages(premise, claim), judge_params)
        return verdict.strip().lower().lstrip("\"'*").startswith("yes")

    judgments = [judge_statement(t, s, sentences, entails) for t, s in statements]
    n_cites = sum(len(s) for _, s in statements)
    answer = " ".join(t for t, _ in statements)
    gold = record.get("gold_docs") or []
    cited_docs = {d for _, s in statements for d in gp.docs_of(s, sentences)}
    return {
        "mode": mode,
        "n_sentences": len(sentences),
        "programs": programs,
        "programs_ok": sum(p["ok"] for p in programs),
        "statements": [
            {"text": t, "sentences": [f"S{x}" for x in s], "docs": gp.docs_of(s, sentences)}
            for t, s in statements
        ],
        "answer": answer,
        "answer_sentence_cited": gp.render_answer(statements, sentences, "sentence"),
        "answer_document_cited": gp.render_answer(statements, sentences, "document"),
        "trace": trace,
        "judgments": judgments,
        "citation_recall": (
            sum(j["recall"] for j in judgments) / len(judgments) if judgments else 0.0
        ),
        "citation_precision": (
            sum(sum(j["precise"]) for j in judgments) / n_cites if n_cites else 0.0
        ),
        "answer_str_em": answer_str_em(answer, record.get("answers") or []),
        "gold_doc_recall": len(cited_docs & set(gold)) / len(gold) if gold else None,
    }


def metrics(inputs: Sequence[Record], outputs: Sequence[Record]) -> dict[str, float]:
    """Aggregates of the per-record output fields (no model call here)."""
    n = len(outputs)
    out: dict[str, float] = {"records": float(n)}
    if not n:
        return out
    attempts = sum(len(o["programs"]) for o in outputs if o["mode"] != "direct")
    if attempts:
        out["program_parse_rate"] = sum(o["programs_ok"] for o in outputs) / attempts
        out["programs"] = float(attempts)
    recall = sum(o["citation_recall"] for o in outputs) / n
    precision = sum(o["citation_precision"] for o in outputs) / n
    out["citation_recall"] = recall
    out["citation_precision"] = precision
    out["citation_f1"] = 2 * recall * precision / (recall + precision) if recall + precision else 0
    out["statements_per_record"] = sum(len(o["statements"]) for o in outputs) / n
    for key in ("answer_str_em", "gold_doc_recall"):
        vals = [o[key] for o in outputs if o.get(key) is not None]
        if vals:
            out[key] = sum(vals) / len(vals)
    return out


def pipeline(name: str = "genprog", default_mode: str = "program") -> Pipeline:
    """The pipeline with records lacking a `mode` field run in `default_mode`."""
    return Pipeline(
        name=name,
        version=VERSION,
        run=functools.partial(run, default_mode=default_mode),
        required_fields=("question",),
        validate=validate,
        metrics=metrics,
    )


PIPELINE = pipeline()
