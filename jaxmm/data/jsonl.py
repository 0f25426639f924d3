"""A random-access JSON-lines source for grain, with errors that name the file and line.

Line offsets are indexed once at open, so `source[i]` seeks straight to record i: grain can
shuffle and shard it without reading the file into memory. Parsing and the `file:line` errors
are `jaxmm.io.jsonl`'s.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from jaxmm.io.jsonl import line_index, read_record_at


class JsonlSource:
    """`grain` RandomAccessDataSource over one or more .jsonl files."""

    def __init__(
        self,
        paths: str | Sequence[str],
        *,
        required_keys: Sequence[str] = (),
        validate: Callable[[dict], None] | None = None,
    ):
        self.paths = [paths] if isinstance(paths, str) else list(paths)
        self.required_keys = tuple(required_keys)
        self.validate = validate
        self._index: list[tuple[int, int, int]] = []  # (file idx, byte offset, line number)
        for fi, path in enumerate(self.paths):
            self._index += [(fi, off, line) for off, line in line_index(path, what="data file")]
        if not self._index:
            raise ValueError(f"no records in {self.paths}")

    def __len__(self) -> int:
        return len(self._index)

    def __getitem__(self, i: int) -> dict[str, Any]:
        fi, offset, lineno = self._index[i]
        return read_record_at(
            self.paths[fi],
            offset,
            lineno,
            required_keys=self.required_keys,
            validate=self.validate,
        )

    def check_all(self) -> None:
        """Reads every record once, raising at the first bad one (call before training)."""
        for i in range(len(self)):
            self[i]
