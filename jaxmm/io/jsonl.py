"""The one JSON-lines reader and writer: one JSON object per line, blank lines skipped.

Every error on a bad record names `file:line` (1-based, counting blank lines), so a
researcher can open the file at the failing record. Readers come in three shapes: whole file
(`read_jsonl`), streaming (`iter_jsonl`), and random access by byte offset (`line_index` +
`read_record_at`, what a grain source needs to shuffle without loading the file). Writers
replace a file atomically (`write_jsonl`) or append line by line (`JsonlWriter`, line-buffered
so every finished line survives a killed process).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, TextIO

PathLike = str | os.PathLike
Validate = Callable[[dict[str, Any]], None]


def parse_record(
    line: str | bytes,
    where: str,
    *,
    required_keys: Sequence[str] = (),
    validate: Validate | None = None,
) -> dict[str, Any]:
    """One line -> one JSON object; errors start with `where` (e.g. 'data.jsonl:12').

    `validate(record)` may raise ValueError / TypeError / KeyError; its message is re-raised
    as ValueError prefixed with `where`.
    """
    try:
        record = json.loads(line)
    except json.JSONDecodeError as e:
        raise ValueError(f"{where}: bad JSON record ({e.msg} at column {e.colno})") from None
    if not isinstance(record, dict):
        raise ValueError(f"{where}: record must be a JSON object, got {type(record).__name__}")
    missing = [k for k in required_keys if k not in record]
    if missing:
        raise ValueError(f"{where}: record lacks required field(s) {missing}")
    if validate is not None:
        try:
            validate(record)
        except (ValueError, TypeError, KeyError) as e:
            raise ValueError(f"{where}: {e}") from None
    return record


def _check_exists(path: str, what: str) -> None:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} {path!r} does not exist")


def iter_jsonl(
    path: PathLike,
    *,
    required_keys: Sequence[str] = (),
    validate: Validate | None = None,
    what: str = "JSONL file",
) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yields (line number, record) for every non-blank line; `what` names the file in errors."""
    path = os.fspath(path)
    _check_exists(path, what)
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if line.strip():
                yield (
                    lineno,
                    parse_record(
                        line, f"{path}:{lineno}", required_keys=required_keys, validate=validate
                    ),
                )


def read_jsonl(
    path: PathLike,
    *,
    required_keys: Sequence[str] = (),
    validate: Validate | None = None,
    what: str = "JSONL file",
) -> list[dict[str, Any]]:
    """Every record of the file, in order."""
    return [
        record
        for _, record in iter_jsonl(path, required_keys=required_keys, validate=validate, what=what)
    ]


def line_index(path: PathLike, *, what: str = "JSONL file") -> list[tuple[int, int]]:
    """(byte offset, line number) of every non-blank line, for `read_record_at`."""
    path = os.fspath(path)
    _check_exists(path, what)
    index = []
    with open(path, "rb") as f:
        offset = 0
        for lineno, line in enumerate(f, start=1):
            if line.strip():
                index.append((offset, lineno))
            offset += len(line)
    return index


def read_record_at(
    path: PathLike,
    offset: int,
    lineno: int,
    *,
    required_keys: Sequence[str] = (),
    validate: Validate | None = None,
) -> dict[str, Any]:
    """The record on the line starting at byte `offset` (from `line_index`)."""
    path = os.fspath(path)
    with open(path, "rb") as f:
        f.seek(offset)
        line = f.readline()
    return parse_record(line, f"{path}:{lineno}", required_keys=required_keys, validate=validate)


def _dumps(record: Mapping[str, Any]) -> str:
    if not isinstance(record, Mapping):
        raise TypeError(f"a JSONL record must be a mapping, got {type(record).__name__}")
    return json.dumps(record) + "\n"


def write_jsonl(path: PathLike, records: Iterable[Mapping[str, Any]]) -> int:
    """Replaces `path` with one line per record, atomically (temp file + rename); returns the
    number of records. A failure midway leaves any previous file untouched."""
    path = os.fspath(path)
    tmp = f"{path}.{os.getpid()}.tmp"
    count = 0
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            for record in records:
                f.write(_dumps(record))
                count += 1
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return count


class JsonlWriter:
    """Appends one record per line to `path` (created if missing), line-buffered: each
    `write` reaches the OS at once, so a killed process loses at most the line it was
    writing. `fsync=True` also forces each line to disk (survives a machine crash)."""

    def __init__(self, path: PathLike, *, fsync: bool = False):
        self.path = os.fspath(path)
        self.fsync = fsync
        self._file: TextIO = open(self.path, "a", buffering=1, encoding="utf-8")

    def write(self, record: Mapping[str, Any]) -> None:
        self._file.write(_dumps(record))
        if self.fsync:
            os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> JsonlWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
