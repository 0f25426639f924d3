"""SFT examples -> fixed-length training rows: bad-record and length policies, first-fit packing.

A row holds one or more examples back to back (`packing`), each with its own positions
(0, 1, ...) and segment id (1, 2, ...; 0 = padding), so the LLM's segment mask forbids attention
across examples. Inputs and targets are shifted inside each example before packing, so no
target ever crosses into the next example. Batch keys, all [seq_len]:

    tokens       int32  input ids
    targets      int32  next-token ids (pad where loss_mask = 0)
    loss_mask    int32  1 where the target is trained (assistant content + end-of-turn)
    positions    int32  position within its example
    segment_ids  int32  1.. per example in the row, 0 on padding
"""

from __future__ import annotations

import collections
import dataclasses
import logging
from collections.abc import Iterable, Sequence
from typing import Any

import jinja2
import numpy as np

from jaxmm.data.sft_records import (
    BadRecord,
    Example,
    TemplateError,
    is_text_record,
    to_conversation,
    tokenize_conversation,
    tokenize_text,
)

log = logging.getLogger(__name__)

BAD_RECORD_POLICIES = ("error", "skip")
TOO_LONG_POLICIES = ("error", "truncate", "skip")
BATCH_KEYS = ("tokens", "targets", "loss_mask", "positions", "segment_ids")


@dataclasses.dataclass
class DataReport:
    """What happened to every record: nothing is dropped without being counted here."""

    records: int = 0
    examples: int = 0
    skipped: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    truncated: int = 0
    tokens: int = 0
    target_tokens: int = 0
    first_errors: list[str] = dataclasses.field(default_factory=list)

    def note(self, reason: str, message: str) -> None:
        self.skipped[reason] += 1
        if len(self.first_errors) < 5:
            self.first_errors.append(message)

    def as_metrics(self) -> dict[str, float]:
        out = {
            "data/records": self.records,
            "data/examples": self.examples,
            "data/truncated": self.truncated,
            "data/skipped": sum(self.skipped.values()),
            "data/target_tokens": self.target_tokens,
        }
        out.update({f"data/skipped_{k}": v for k, v in sorted(self.skipped.items())})
        return {k: float(v) for k, v in out.items()}


def build_examples(
    records: Iterable[tuple[str, dict[str, Any] | Exception]],
    tokenizer,
    *,
    seq_len: int,
    cings_mode: str = "no_context",
    chat_template: str | None = None,
    on_bad_record: str = "error",
    on_too_long: str = "error",
) -> tuple[list[Example], DataReport]:
    """Tokenised examples of `records` ((where, record) pairs) and the report of the rest.

    `on_bad_record`: error (raise, naming file:line) | skip (count). `on_too_long` (more than
    `seq_len` + 1 tokens): error | truncate (keep the first seq_len + 1) | skip (count)."""
    if on_bad_record not in BAD_RECORD_POLICIES:
        raise ValueError(f"on_bad_record {on_bad_record!r} is not one of {BAD_RECORD_POLICIES}")
    if on_too_long not in TOO_LONG_POLICIES:
        raise ValueError(f"on_too_long {on_too_long!r} is not one of {TOO_LONG_POLICIES}")
    if not (chat_template or tokenizer.chat_template):
        raise TemplateError(
            f"tokenizer {getattr(tokenizer, 'name_or_path', '')!r} has no chat template; "
            "set config.data.chat_template"
        )
    report, examples = DataReport(), []
    for where, record in records:
        report.records += 1
        try:
            if isinstance(record, Exception):
                raise record
            if is_text_record(record):
                ex = tokenize_text(tokenizer, record, where)
            else:
                conv = to_conversation(record, where)
                try:
                    ex = tokenize_conversation(
                        tokenizer, conv, cings_mode=cings_mode, chat_template=chat_template
                    )
                except (TemplateError, jinja2.TemplateError) as e:
                    raise BadRecord("template", f"{where}: chat template: {e}") from None
            if len(ex.ids) - 1 > seq_len:
                msg = f"{where}: {len(ex.ids) - 1} tokens > seq_len={seq_len}"
                if on_too_long == "error":
                    raise BadRecord("too_long", msg + " (config.data.on_too_long=error)")
                if on_too_long == "skip":
                    report.note("too_long", msg)
                    continue
                ex = Example(ex.ids[: seq_len + 1], ex.weights[: seq_len + 1], ex.where)
                report.truncated += 1
            if not ex.weights[1:].any():
                raise BadRecord("no_target", f"{where}: no trained token within seq_len={seq_len}")
        except BadRecord as e:
            if on_bad_record == "error" or (e.reason == "too_long" and on_too_long == "error"):
                raise ValueError(str(e)) from None
            report.note(e.reason, str(e))
            continue
        examples.append(ex)
        report.examples += 1
        report.tokens += len(ex.ids) - 1
        report.target_tokens += int(ex.weights[1:].sum())
    if report.skipped:
        log.warning(
            "SFT data: %d of %d records skipped %s; first: %s",
            sum(report.skipped.values()),
            report.records,
            dict(report.skipped),
            report.first_errors,
        )
    if not examples:
        raise ValueError(f"no usable SFT examples among {report.records} records: {report}")
    return examples, report


def first_fit(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """Packs items (in the given order) into bins of `capacity`: each goes into the first bin
    with room, else a new one. Returns the item indices per bin."""
    bins: list[list[int]] = []
    free: list[int] = []
    for i, n in enumerate(lengths):
        if n > capacity:
            raise ValueError(f"item {i} has length {n} > capacity {capacity}")
        for b, room in enumerate(free):
            if n <= room:
                bins[b].append(i)
                free[b] -= n
                break
        else:
            bins.append([i])
            free.append(capacity - n)
    return bins


def pack(
    examples: Sequence[Example], seq_len: int, *, packing: bool = True, seed: int = 0
) -> list[list[int]]:
    """Example indices per row: first-fit over a seeded shuffle (packing) or one per row."""
    order = np.random.default_rng(seed).permutation(len(examples))
    if not packing:
        return [[int(i)] for i in order]
    bins = first_fit([len(examples[i].ids) - 1 for i in order], seq_len)
    return [[int(order[j]) for j in b] for b in bins]


def make_row(examples: Sequence[Example], seq_len: int, pad_id: int) -> dict[str, np.ndarray]:
    """One training row (the batch keys above, each [seq_len]) from examples that fit."""
    row = {k: np.zeros(seq_len, np.int32) for k in BATCH_KEYS}
    row["tokens"][:] = pad_id
    row["targets"][:] = pad_id
    o = 0
    for k, ex in enumerate(examples, start=1):
        n = len(ex.ids) - 1
        if o + n > seq_len:
            raise ValueError(f"examples fill {o + n} > seq_len={seq_len} tokens")
        row["tokens"][o : o + n] = ex.ids[:-1]
        row["targets"][o : o + n] = ex.ids[1:]
        row["loss_mask"][o : o + n] = ex.weights[1:]
        row["positions"][o : o + n] = np.arange(n)
        row["segment_ids"][o : o + n] = k
        o += n
    return row


class PackedSource:
    """Random-access grain source of packed rows (see the module docstring)."""

    def __init__(
        self, examples: Sequence[Example], rows: Sequence[Sequence[int]], seq_len: int, pad_id: int
    ):
        self.examples, self.rows, self.seq_len, self.pad_id = examples, rows, seq_len, pad_id

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        return make_row([self.examples[j] for j in self.rows[i]], self.seq_len, self.pad_id)
