"""The server's engine thread: one thread owns the engine and runs its continuous-batching
loop; request handlers submit prompts and receive their events through an inbox.

Kept apart from the HTTP layer so the threading rules live in one place: the engine (and the
Hugging Face fast tokenizer it detokenises with, which is not safe to use from two threads at
once) is only touched under `_lock`; `cancel` never waits for it, so an event loop can call it.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Sequence
from typing import Any, Protocol

from jaxmm.generate.engine import Engine
from jaxmm.generate.params import GenerationParams


class Inbox(Protocol):
    """Where a request's events go: `(StreamEvent, Completion | None)` pairs, or an Exception
    if the engine failed. `put` is called from the worker thread and must not block."""

    def put(self, item: Any) -> None: ...


class EngineWorker:
    """Runs `engine.step()` in a background thread and routes events to per-request inboxes."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self._lock = threading.Lock()  # guards the engine and `_inboxes`
        self._wake = threading.Condition(self._lock)
        self._inboxes: dict[int, Inbox] = {}
        self._cancelled: deque[int] = deque()  # thread-safe appends; drained under the lock
        self._stop = False
        self._thread = threading.Thread(target=self._loop, name="engine-worker", daemon=True)
        self._thread.start()

    def submit(
        self,
        prompts: Sequence[str | Sequence[int]],
        params: GenerationParams,
        inbox: Inbox,
        images: Sequence[Any] | None = None,
    ) -> list[int]:
        """Queue prompts, all or none (ValueError if any is invalid, before any is queued);
        returns their request ids. Their events go to `inbox` (a `queue.Queue` will do)."""
        with self._lock:
            if self._stop:
                raise RuntimeError("server shutting down")
            rids = self.engine.submit_many(list(prompts), params, images)
            for rid in rids:
                self._inboxes[rid] = inbox
            self._wake.notify()
        return rids

    def chat_inputs(
        self, messages: list[dict[str, Any]], continue_final_message: bool = False
    ) -> tuple[list[int], Any]:
        """Render a chat prompt and decode its images (under the lock: the worker uses the
        same tokenizer); see `Engine.chat_inputs`."""
        with self._lock:
            return self.engine.chat_inputs(messages, continue_final_message)

    def cancel(self, rids: Sequence[int]) -> None:
        """Stop generating for requests nobody will read (client gone, timeout). Never blocks:
        the worker drops them before its next step."""
        self._cancelled.extend(rids)

    def close(self) -> None:
        with self._lock:
            self._stop = True
            self._wake.notify()
            for inbox in self._inboxes.values():  # nobody is left to answer them
                inbox.put(RuntimeError("server shutting down"))
            self._inboxes.clear()
        self._thread.join(timeout=30)

    def _drop_cancelled(self) -> None:
        while self._cancelled:
            rid = self._cancelled.popleft()
            self.engine.cancel(rid)
            self._inboxes.pop(rid, None)

    def _loop(self) -> None:
        while True:
            with self._lock:
                self._drop_cancelled()
                while not self._stop and not self.engine.has_work():
                    self._wake.wait(timeout=1.0)
                    self._drop_cancelled()
                if self._stop:
                    return
                try:
                    events = self.engine.step()
                    routed = [
                        (ev, self.engine.pop_result(ev.request_id) if ev.finish_reason else None)
                        for ev in events
                    ]
                except Exception as e:  # noqa: BLE001 - report to every waiting client
                    for inbox in self._inboxes.values():
                        inbox.put(e)
                    self._inboxes.clear()
                    self.engine.reset()
                    continue
                for ev, completion in routed:
                    inbox = self._inboxes.get(ev.request_id)
                    if inbox is not None:
                        inbox.put((ev, completion))
                        if completion is not None:
                            del self._inboxes[ev.request_id]
