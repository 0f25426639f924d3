"""OpenAI-compatible HTTP server over the jaxmm engine (standard library only).

Endpoints: `POST /v1/chat/completions`, `POST /v1/completions` (both with `stream: true` as
server-sent events ending in `data: [DONE]`), `GET /v1/models`, `GET /health`.

Concurrency: `ThreadingHTTPServer` gives each client a thread; one `EngineWorker` thread owns
the engine and runs its continuous-batching loop, so requests from concurrent clients share
decode steps instead of queueing behind each other. Handlers only validate, submit and read
their request's events from a queue.

Errors follow OpenAI's shape: `{"error": {"message", "type", "param", "code"}}`, status 400
for bad requests (the message names the bad field), 404 for unknown paths, 500 if the engine
fails.
"""

from __future__ import annotations

import json
import queue
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from jaxmm.generate.engine import Completion, Engine, PromptTooLongError, StreamEvent
from jaxmm.generate.params import GenerationParams
from jaxmm.generate.requests_openai import (
    RequestError,
    get_field,
    parse_messages,
    parse_params,
    parse_prompts,
)

MAX_BODY_BYTES = 16 << 20


# ---------------------------------------------------------------------------- engine thread
class EngineWorker:
    """Runs `engine.step()` in a background thread and routes events to per-request queues."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self._lock = threading.Lock()  # guards the engine and `_queues`
        self._wake = threading.Condition(self._lock)
        self._queues: dict[int, queue.Queue] = {}
        self._stop = False
        self._thread = threading.Thread(target=self._loop, name="engine-worker", daemon=True)
        self._thread.start()

    def submit(
        self, prompts: Sequence[str | Sequence[int]], params: GenerationParams
    ) -> tuple[list[int], queue.Queue]:
        """Queue prompts (all or none); their events arrive on the returned queue as
        (StreamEvent, Completion | None) pairs, or an Exception if the engine failed."""
        out: queue.Queue = queue.Queue()
        with self._lock:
            rids = self.engine.submit_many(list(prompts), params)
            for rid in rids:
                self._queues[rid] = out
            self._wake.notify()
        return rids, out

    def chat_prompt_ids(self, messages: list[dict[str, str]]) -> list[int]:
        """Render a chat prompt. Under the lock: the worker detokenises with the same HF
        tokenizer, and fast tokenizers are not safe to use from two threads at once."""
        with self._lock:
            return self.engine.chat_prompt_ids(messages)

    def cancel(self, rids: Sequence[int]) -> None:
        """Stop generating for requests nobody will read (client gone, timeout)."""
        with self._lock:
            for rid in rids:
                self.engine.cancel(rid)
                self._queues.pop(rid, None)

    def close(self) -> None:
        with self._lock:
            self._stop = True
            self._wake.notify()
            for q in self._queues.values():  # nobody is left to answer them
                q.put(RuntimeError("server shutting down"))
            self._queues.clear()
        self._thread.join(timeout=30)

    def _loop(self) -> None:
        while True:
            with self._lock:
                while not self._stop and not self.engine.has_work():
                    self._wake.wait()
                if self._stop:
                    return
                try:
                    events = self.engine.step()
                    routed = [
                        (ev, self.engine.pop_result(ev.request_id) if ev.finish_reason else None)
                        for ev in events
                    ]
                except Exception as e:  # noqa: BLE001 - report to every waiting client
                    for q in self._queues.values():
                        q.put(e)
                    self._queues.clear()
                    self.engine.reset()
                    continue
                for ev, completion in routed:
                    q = self._queues.get(ev.request_id)
                    if q is not None:
                        q.put((ev, completion))
                        if completion is not None:
                            del self._queues[ev.request_id]


# ---------------------------------------------------------------------------- HTTP
class OpenAIServer:
    """`OpenAIServer(engine, port=0).start()` serves in a thread; `.url` is the base URL."""

    def __init__(
        self,
        engine: Engine,
        host: str = "127.0.0.1",
        port: int = 8000,
        model_name: str | None = None,
        request_timeout_s: float = 600.0,
    ):
        self.engine = engine
        self.model_name = model_name or engine.model_name
        self.request_timeout_s = request_timeout_s
        self.worker = EngineWorker(engine)
        handler = type("Handler", (_Handler,), {"app": self})
        self.httpd = ThreadingHTTPServer((host, port), handler)
        self.httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self.httpd.server_address[1]

    @property
    def url(self) -> str:
        return f"http://{self.httpd.server_address[0]}:{self.port}/v1"

    def start(self) -> OpenAIServer:
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self.httpd.serve_forever()

    def shutdown(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.worker.close()

    # -- request handling (called from handler threads)
    def run(self, kind: str, body: Mapping[str, Any]):
        """Validate and submit; returns (ids, queue, prompt_token_counts)."""
        model = get_field(body, "model", (str,), self.model_name)
        if model != self.model_name:
            raise RequestError(
                f"'model': unknown model {model!r}; this server serves {self.model_name!r}",
                "model",
            )
        if kind == "chat":
            conv = parse_messages(body)
            params = parse_params(body, default_max_tokens=None)
            try:
                prompts = [self.worker.chat_prompt_ids(conv)]
            except Exception as e:  # template errors (e.g. role order) are client errors
                raise RequestError(f"'messages': chat template failed: {e}", "messages") from e
        else:
            prompts = parse_prompts(body)
            params = parse_params(body, default_max_tokens=16)  # OpenAI's default
        try:
            return self.worker.submit(prompts, params)
        except PromptTooLongError as e:
            raise RequestError(str(e), "messages" if kind == "chat" else "prompt") from None


class _Handler(BaseHTTPRequestHandler):
    app: OpenAIServer
    server_version = "jaxmm-serve/0.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet by default
        pass

    # -- plumbing
    def _json(self, status: int, payload: Mapping[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: int, message: str, param: str | None = None) -> None:
        kind = "invalid_request_error" if status < 500 else "server_error"
        self._json(
            status, {"error": {"message": message, "type": kind, "param": param, "code": None}}
        )

    def _body(self) -> dict[str, Any]:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY_BYTES:
            raise RequestError(f"request body over {MAX_BODY_BYTES} bytes", None, 413)
        try:
            body = json.loads(self.rfile.read(length) or b"null")
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise RequestError(f"request body is not valid JSON: {e}") from None
        if not isinstance(body, dict):
            raise RequestError("request body must be a JSON object")
        return body

    # -- routes
    def do_GET(self) -> None:
        if self.path.rstrip("/") == "/v1/models":
            model = {
                "id": self.app.model_name,
                "object": "model",
                "created": 0,
                "owned_by": "jaxmm",
                "max_model_len": self.app.engine.max_seq_len,
            }
            self._json(200, {"object": "list", "data": [model]})
        elif self.path.rstrip("/") == "/health":
            self._json(200, {"status": "ok"})
        else:
            self._error(404, f"no route GET {self.path}")

    def do_POST(self) -> None:
        route = self.path.rstrip("/")
        kind = {"/v1/chat/completions": "chat", "/v1/completions": "completion"}.get(route)
        if kind is None:
            self._error(404, f"no route POST {self.path}")
            return
        try:
            body = self._body()
            stream = get_field(body, "stream", (bool,), False)
            rids, events = self.app.run(kind, body)
        except RequestError as e:
            self._error(e.status, str(e), e.param)
            return
        meta = {
            "id": ("chatcmpl-" if kind == "chat" else "cmpl-") + uuid.uuid4().hex[:24],
            "created": int(time.time()),
            "model": self.app.model_name,
        }
        index = {rid: i for i, rid in enumerate(rids)}
        if stream:
            self._stream(kind, meta, index, events)
        else:
            self._complete(kind, meta, index, events)

    def _events(self, index: dict[int, int], events: queue.Queue):
        """Yield (choice index, StreamEvent, Completion | None) until all requests finish."""
        pending = set(index)
        deadline = time.monotonic() + self.app.request_timeout_s
        while pending:
            item = events.get(timeout=max(0.0, deadline - time.monotonic()))
            if isinstance(item, Exception):
                raise item
            ev, completion = item
            if completion is not None:
                pending.discard(ev.request_id)
            yield index[ev.request_id], ev, completion

    def _complete(self, kind: str, meta: dict[str, Any], index, events) -> None:
        done: dict[int, Completion] = {}
        try:
            for i, _, completion in self._events(index, events):
                if completion is not None:
                    done[i] = completion
        except queue.Empty:
            self.app.worker.cancel(list(index))
            self._error(504, f"generation took longer than {self.app.request_timeout_s} s")
            return
        except Exception as e:  # noqa: BLE001
            self._error(500, f"generation failed: {type(e).__name__}: {e}")
            return
        choices = []
        for i in range(len(index)):
            c = done[i]
            choice: dict[str, Any] = {"index": i, "finish_reason": c.finish_reason}
            if kind == "chat":
                choice["message"] = {"role": "assistant", "content": c.text}
            else:
                choice.update(text=c.text, logprobs=None)
            choices.append(choice)
        prompt_tokens = sum(c.prompt_tokens for c in done.values())
        completion_tokens = sum(len(c.token_ids) for c in done.values())
        self._json(
            200,
            {
                **meta,
                "object": "chat.completion" if kind == "chat" else "text_completion",
                "choices": choices,
                "usage": {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": completion_tokens,
                    "total_tokens": prompt_tokens + completion_tokens,
                },
            },
        )

    def _stream(self, kind: str, meta: dict[str, Any], index, events) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        obj = "chat.completion.chunk" if kind == "chat" else "text_completion"

        def send(choice: dict[str, Any]) -> None:
            chunk = {**meta, "object": obj, "choices": [choice]}
            self.wfile.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
            self.wfile.flush()

        try:
            if kind == "chat":
                send(
                    {
                        "index": 0,
                        "delta": {"role": "assistant", "content": ""},
                        "finish_reason": None,
                    }
                )
            for i, ev, _ in self._events(index, events):
                send(_chunk_choice(kind, i, ev))
            self.wfile.write(b"data: [DONE]\n\n")
        except (BrokenPipeError, ConnectionResetError):
            self.app.worker.cancel(list(index))  # the client went away
            return
        except Exception as e:  # noqa: BLE001 - headers are sent: report in-band
            self.app.worker.cancel(list(index))
            err = {"error": {"message": f"generation failed: {e}", "type": "server_error"}}
            self.wfile.write(b"data: " + json.dumps(err).encode() + b"\n\n")
        self.wfile.flush()
        self.close_connection = True


def _chunk_choice(kind: str, i: int, ev: StreamEvent) -> dict[str, Any]:
    if kind == "chat":
        delta = {"content": ev.delta} if ev.delta else {}
        return {"index": i, "delta": delta, "finish_reason": ev.finish_reason}
    return {"index": i, "text": ev.delta, "logprobs": None, "finish_reason": ev.finish_reason}
