"""GenerationPrograms (arXiv 2506.14580) programs: sources, the safe parser, the executor and
citation rendering. `jaxmm.pipelines.genprog` builds the pipeline on top of this module.

A program is one line per output sentence: nested calls of `paraphrase(x)`, `compression(x)`
(exactly one argument) and `fusion(x, y, ...)` (two or more), each with an optional
`instruction="..."` keyword; the leaves are source sentence ids `S1..Sn` (a bare `S3` copies
that sentence). Programs are parsed with Python's `ast` (never evaluated): only the node
types above are accepted. Before parsing, unbalanced quotes and brackets are repaired (a
small model often stops mid-program). Execution is innermost first, one model call per
module; an output's citations are the union of its inputs' source sentences.
"""

from __future__ import annotations

import ast
import dataclasses
import re
from collections.abc import Callable, Sequence

import pysbd

MODULES = {"paraphrase": (1, 1), "compression": (1, 1), "fusion": (2, None)}  # (min, max) args
MAX_PROGRAM_CHARS = 2000
MAX_DEPTH = 8
_REF = re.compile(r"^[Ss](\d+)$")
_BULLET = re.compile(r"^\s*(?:\d+\s*[.):]|[-*•]|program\s*\d*\s*:)\s*", re.IGNORECASE)
_CLOSE = {")": "(", "]": "[", "}": "{"}
_OPEN = {v: k for k, v in _CLOSE.items()}


class ProgramError(ValueError):
    """A program line that cannot be parsed into a valid program (the message says why)."""


# ------------------------------------------------------------------------------ sources
@dataclasses.dataclass(frozen=True)
class Sentence:
    sid: int  # global id: S<sid>, numbered 1.. across all passages in order
    doc: int  # 1-based passage number
    text: str


def split_sentences(text: str) -> list[str]:
    """Sentences of one passage (pysbd, the rule-based splitter), stripped, none empty."""
    segmenter = pysbd.Segmenter(language="en", clean=False)
    return [s.strip() for s in segmenter.segment(text) if s.strip()]


def number_sentences(passages: Sequence[str]) -> list[Sentence]:
    """Global sentence ids S1..Sn grouped by passage (passage 1's sentences first)."""
    out: list[Sentence] = []
    for doc, passage in enumerate(passages, start=1):
        for text in split_sentences(passage):
            out.append(Sentence(len(out) + 1, doc, text))
    return out


def format_sources(sentences: Sequence[Sentence], titles: Sequence[str] = ()) -> str:
    """`Document [d] (title)` headers, each followed by its `S<i>: text` lines."""
    lines: list[str] = []
    doc = 0
    for s in sentences:
        if s.doc != doc:
            doc = s.doc
            title = titles[doc - 1] if doc - 1 < len(titles) and titles[doc - 1] else ""
            lines.append(f"Document [{doc}]" + (f" ({title})" if title else ""))
        lines.append(f"S{s.sid}: {s.text}")
    return "\n".join(lines)


# ------------------------------------------------------------------------------ programs
@dataclasses.dataclass(frozen=True)
class Ref:
    sid: int

    def __str__(self) -> str:
        return f"S{self.sid}"


@dataclasses.dataclass(frozen=True)
class Call:
    module: str
    args: tuple[Ref | Call, ...]
    instruction: str | None = None

    def __str__(self) -> str:
        parts = [str(a) for a in self.args]
        if self.instruction is not None:
            parts.append(f"instruction={self.instruction!r}")
        return f"{self.module}({', '.join(parts)})"


Node = Ref | Call


@dataclasses.dataclass(frozen=True)
class Parsed:
    node: Node
    repairs: tuple[str, ...]  # e.g. ("closed quote", "added 2 ')'")
    text: str  # the line actually parsed (after cleanup and repairs)


def repair(line: str) -> tuple[str, list[str]]:
    """Closes an unterminated string, drops closing brackets with no opener (or the wrong
    one), and appends the closers of brackets left open; returns (text, repairs made)."""
    out: list[str] = []
    stack: list[str] = []
    quote: str | None = None
    quote_at = 0
    dropped = 0
    i = 0
    while i < len(line):
        c = line[i]
        if quote:
            out.append(c)
            if c == "\\" and i + 1 < len(line):
                out.append(line[i + 1])
                i += 1
            elif c == quote:
                quote = None
        elif c in "\"'":
            quote, quote_at = c, len(out)
            out.append(c)
        elif c in _OPEN:
            stack.append(c)
            out.append(c)
        elif c in _CLOSE:
            if stack and stack[-1] == _CLOSE[c]:
                stack.pop()
                out.append(c)
            else:
                dropped += 1
        else:
            out.append(c)
        i += 1
    repairs = []
    if quote:  # closing brackets at the end of an open string belong to the program
        body = "".join(out[quote_at + 1 :])
        kept = body.rstrip(")]} ")
        out[quote_at + 1 :] = [kept, quote]
        repairs.append("closed quote")
        for c in body[len(kept) :]:
            if c in _CLOSE and stack and stack[-1] == _CLOSE[c]:
                stack.pop()
                out.append(c)
    if dropped:
        repairs.append(f"dropped {dropped} unmatched closing bracket(s)")
    if stack:
        out.extend(_OPEN[c] for c in reversed(stack))
        repairs.append(f"closed {len(stack)} open bracket(s)")
    return "".join(out), repairs


def clean_line(line: str) -> str:
    """Strips code fences/backticks, list bullets or numbering and a trailing period."""
    text = _BULLET.sub("", line.strip(), count=1).strip()
    text = text.rstrip(".;").strip().strip("`").strip()
    return text.rstrip(".;").strip()


def parse_program(line: str, n_sentences: int) -> Parsed:
    """One program line -> its tree; `ProgramError` (never another exception) when invalid."""
    text = clean_line(line)
    if not text:
        raise ProgramError("empty program")
    if len(text) > MAX_PROGRAM_CHARS:
        raise ProgramError(f"program longer than {MAX_PROGRAM_CHARS} characters")
    text, repairs = repair(text)
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError) as e:
        msg = getattr(e, "msg", None) or type(e).__name__
        raise ProgramError(f"not a valid expression: {msg}") from None
    node = _convert(tree.body, n_sentences, depth=0)
    return Parsed(node, tuple(repairs), text)


def _ref(sid_text: str, n_sentences: int) -> Ref:
    m = _REF.match(sid_text.strip())
    if not m:
        raise ProgramError(f"{sid_text!r} is not a sentence id like S3")
    sid = int(m.group(1))
    if not 1 <= sid <= n_sentences:
        raise ProgramError(f"sentence S{sid} does not exist (sources are S1..S{n_sentences})")
    return Ref(sid)


def _convert(node: ast.expr, n_sentences: int, depth: int) -> Node:
    if depth > MAX_DEPTH:
        raise ProgramError(f"program nested deeper than {MAX_DEPTH}")
    if isinstance(node, ast.Name):
        return _ref(node.id, n_sentences)
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return _ref(node.value, n_sentences)  # "S3" quoted
    if not isinstance(node, ast.Call):
        raise ProgramError(f"unexpected {type(node).__name__} (want a module call or S<i>)")
    if not isinstance(node.func, ast.Name):
        raise ProgramError("a module must be called by its plain name")
    name = node.func.id
    if name not in MODULES:
        raise ProgramError(f"unknown module {name!r} (known: {', '.join(MODULES)})")
    lo, hi = MODULES[name]
    if any(isinstance(a, ast.Starred) for a in node.args):
        raise ProgramError(f"{name}: starred arguments are not allowed")
    if len(node.args) < lo or (hi is not None and len(node.args) > hi):
        want = f"exactly {lo}" if lo == hi else f"at least {lo}"
        raise ProgramError(f"{name} takes {want} argument(s), got {len(node.args)}")
    instruction = None
    for kw in node.keywords:
        if kw.arg != "instruction":
            raise ProgramError(f"{name}: unknown keyword {kw.arg or '**'!r} (only instruction=)")
        if not (isinstance(kw.value, ast.Constant) and isinstance(kw.value.value, str)):
            raise ProgramError(f"{name}: instruction must be a string")
        instruction = kw.value.value
    args = tuple(_convert(a, n_sentences, depth + 1) for a in node.args)
    return Call(name, args, instruction)


def leaves(node: Node) -> list[int]:
    """Sentence ids a program reads, in order of first appearance."""
    if isinstance(node, Ref):
        return [node.sid]
    seen: list[int] = []
    for a in node.args:
        seen += [s for s in leaves(a) if s not in seen]
    return seen


# ------------------------------------------------------------------------------ execution
ModuleFn = Callable[[str, Sequence[str], str | None], str]  # (module, inputs, instruction)


@dataclasses.dataclass(frozen=True)
class Output:
    text: str
    sources: tuple[int, ...]  # sorted sentence ids: the union of the inputs' sources


def execute(
    node: Node, sentences: Sequence[Sentence], call: ModuleFn, trace: list[dict] | None = None
) -> Output:
    """Runs a program innermost first (each argument before its call), one `call` per module;
    `trace` (if given) receives one {"module", "inputs", "instruction", "output", "sources"}
    per call in execution order."""
    if isinstance(node, Ref):
        return Output(sentences[node.sid - 1].text, (node.sid,))
    inputs = [execute(a, sentences, call, trace) for a in node.args]
    text = call(node.module, [i.text for i in inputs], node.instruction)
    sources = tuple(sorted(set().union(*(i.sources for i in inputs))))
    if trace is not None:
        trace.append(
            {
                "module": node.module,
                "inputs": [i.text for i in inputs],
                "instruction": node.instruction,
                "output": text,
                "sources": [f"S{s}" for s in sources],
            }
        )
    return Output(text, sources)


# ------------------------------------------------------------------------------ rendering
def docs_of(sids: Sequence[int], sentences: Sequence[Sentence]) -> list[int]:
    return sorted({sentences[s - 1].doc for s in sids})


def render(text: str, marks: Sequence[str]) -> str:
    """`text [m1][m2].`: the citation marks go before the final punctuation (ALCE style)."""
    text = text.strip()
    if not marks:
        return text
    cites = "".join(f"[{m}]" for m in marks)
    if text and text[-1] in ".!?":
        return f"{text[:-1].rstrip()} {cites}{text[-1]}"
    return f"{text} {cites}"


def render_answer(statements: Sequence[tuple[str, Sequence[int]]], sentences, level: str) -> str:
    """The answer with citations per statement: level "document" ([1][3]) or "sentence"
    ([S2][S7])."""
    parts = []
    for text, sids in statements:
        if level == "document":
            marks = [str(d) for d in docs_of(sids, sentences)]
        elif level == "sentence":
            marks = [f"S{s}" for s in sorted(sids)]
        else:
            raise ValueError(f"citation level must be 'document' or 'sentence', got {level!r}")
        parts.append(render(text, marks))
    return " ".join(parts)
