"""`CachedBackend`: an on-disk call cache (sqlite) around any backend, keyed by (backend,
model, prompt, params), so an interrupted pipeline resumes without repeating calls."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from typing import Any

from jaxmm.generate.backends import Backend, BackendError, Conversation
from jaxmm.generate.params import GenerationParams


class CachedBackend(Backend):
    """On-disk call cache around any backend (sqlite, one row per call).

    The key is a hash of (backend name, model, kind, prompt or conversation, params), so a
    rerun of a pipeline only calls the model for prompts it has not seen. Each batch of new
    results is committed as soon as it returns, so an interrupted run loses at most the batch
    in flight. Sampling with `seed=None` is cached like any call: vary `seed` for new samples.
    Streaming calls are passed through uncached.
    """

    def __init__(self, backend: Backend, cache_dir: str | os.PathLike, *, batch_size: int = 16):
        self.backend = backend
        self.name = backend.name
        self.model = backend.model
        self.accepts_images = backend.accepts_images
        self.batch_size = batch_size
        os.makedirs(cache_dir, exist_ok=True)
        self.path = os.path.join(os.fspath(cache_dir), "calls.sqlite")
        self._lock = threading.Lock()
        with self._connect() as db:
            db.execute(
                "CREATE TABLE IF NOT EXISTS calls (key TEXT PRIMARY KEY, request TEXT, output TEXT)"
            )
        self.hits = 0
        self.misses = 0

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        """One short-lived connection per use: committed on success, always closed."""
        db = sqlite3.connect(self.path, timeout=60)
        try:
            with db:
                yield db
        finally:
            db.close()

    def key(self, kind: str, prompt: Any, params: GenerationParams) -> tuple[str, str]:
        request = json.dumps(
            {
                "backend": self.backend.name,
                "model": self.backend.model,
                "kind": kind,
                "prompt": prompt,
                "params": params.to_dict(),
            },
            sort_keys=True,
            ensure_ascii=False,
        )
        return hashlib.sha256(request.encode()).hexdigest(), request

    def complete(self, prompts: Sequence[str], params: GenerationParams) -> list[str]:
        return self._cached("complete", list(prompts), params, self.backend.complete)

    def chat(self, conversations: Sequence[Conversation], params: GenerationParams) -> list[str]:
        convs = [[dict(m) for m in c] for c in conversations]
        return self._cached("chat", convs, params, self.backend.chat)

    def stream_complete(self, prompt: str, params: GenerationParams) -> Iterator[str]:
        return self.backend.stream_complete(prompt, params)

    def stream_chat(self, conversation: Conversation, params: GenerationParams) -> Iterator[str]:
        return self.backend.stream_chat(conversation, params)

    def _cached(self, kind: str, items: list[Any], params: GenerationParams, call) -> list[str]:
        keys = [self.key(kind, x, params) for x in items]
        with self._lock, self._connect() as db:
            found = {}
            for k, _ in keys:
                row = db.execute("SELECT output FROM calls WHERE key = ?", (k,)).fetchone()
                if row is not None:
                    found[k] = row[0]
        missing = [i for i, (k, _) in enumerate(keys) if k not in found]
        self.hits += len(items) - len(missing)
        self.misses += len(missing)
        for start in range(0, len(missing), self.batch_size):
            chunk = missing[start : start + self.batch_size]
            outputs = call([items[i] for i in chunk], params)
            if len(outputs) != len(chunk):
                raise BackendError(f"{self.name} returned {len(outputs)} outputs for {len(chunk)}")
            with self._lock, self._connect() as db:
                db.executemany(
                    "INSERT OR REPLACE INTO calls VALUES (?, ?, ?)",
                    [(keys[i][0], keys[i][1], out) for i, out in zip(chunk, outputs, strict=True)],
                )
            for i, out in zip(chunk, outputs, strict=True):
                found[keys[i][0]] = out
        return [found[k] for k, _ in keys]
