"""A random-access JSON-lines source for grain, with errors that name the file and line.

Line offsets are indexed once at open, so `source[i]` seeks straight to record i: grain can
shuffle and shard it without reading the file into memory.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from typing import Any


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
            if not os.path.isfile(path):
                raise FileNotFoundError(f"data file {path!r} does not exist")
            with open(path, "rb") as f:
                offset, lineno = 0, 0
                for line in f:
                    lineno += 1
                    if line.strip():
                        self._index.append((fi, offset, lineno))
                    offset += len(line)
        if not self._index:
            raise ValueError(f"no records in {self.paths}")

    def __len__(self) -> int:
        return len(self._index)

    def __getitem__(self, i: int) -> dict[str, Any]:
        fi, offset, lineno = self._index[i]
        path = self.paths[fi]
        with open(path, "rb") as f:
            f.seek(offset)
            raw = f.readline()
        where = f"{path}:{lineno}"
        try:
            record = json.loads(raw)
        except json.JSONDecodeError as e:
            raise ValueError(f"{where}: bad JSON record ({e.msg} at column {e.colno})") from None
        if not isinstance(record, dict):
            raise ValueError(f"{where}: record must be a JSON object, got {type(record).__name__}")
        missing = [k for k in self.required_keys if k not in record]
        if missing:
            raise ValueError(f"{where}: record lacks required field(s) {missing}")
        if self.validate is not None:
            try:
                self.validate(record)
            except (ValueError, TypeError, KeyError) as e:
                raise ValueError(f"{where}: {e}") from None
        return record

    def check_all(self) -> None:
        """Reads every record once, raising at the first bad one (call before training)."""
        for i in range(len(self)):
            self[i]
