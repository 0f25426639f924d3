"""OpenAI-compatible HTTP server over the jaxmm engine (FastAPI + uvicorn).

Endpoints: `POST /v1/chat/completions`, `POST /v1/completions` (both with `stream: true` as
server-sent events ending in `data: [DONE]`; `stream_options.include_usage` adds a last chunk
with `usage` and no choices), `GET /v1/models`, `GET /health`.

Concurrency: uvicorn runs the async handlers on one event loop; one `EngineWorker` thread owns
the engine and runs its continuous-batching loop, so requests from concurrent clients share
decode steps instead of queueing behind each other. Handlers only validate (pydantic models in
`server_schemas`), submit, and await their request's events, which the worker hands to the
event loop thread-safely.

Errors follow OpenAI's shape: `{"error": {"message", "type", "param", "code"}}`, status 400
for bad requests (the message and `param` name the bad field; never FastAPI's 422), 404 for
unknown paths, 500 if the engine fails, 504 past `request_timeout_s`.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response, StreamingResponse

from jaxmm.generate.engine import Completion, Engine, StreamEvent
from jaxmm.generate.image_parts import ImageInputError
from jaxmm.generate.server_schemas import (
    ChatRequest,
    CompletionRequest,
    RequestError,
    parse,
)
from jaxmm.generate.server_worker import EngineWorker

MAX_BODY_BYTES = 16 << 20
__all__ = ["EngineWorker", "OpenAIServer", "build_app"]


class _Inbox:
    """A request's events, put by the worker thread, awaited on the event loop."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue = asyncio.Queue()

    def put(self, item: Any) -> None:  # called from the worker thread
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, item)
        except RuntimeError:  # the loop is closed: nobody is left to read it
            pass


def error_response(status: int, message: str, param: str | None = None) -> JSONResponse:
    kind = "invalid_request_error" if status < 500 else "server_error"
    body = {"error": {"message": message, "type": kind, "param": param, "code": None}}
    return JSONResponse(body, status_code=status)


class OpenAIServer:
    """`OpenAIServer(engine, port=0).start()` serves in a thread; `.url` is the base URL.

    The socket is bound in the constructor, so `.port` / `.url` are known (port 0 picks a free
    one) before serving starts.
    """

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
        self.app = build_app(self)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._sock = socket.create_server((host, port), family=family, backlog=2048)
        config = uvicorn.Config(
            self.app,
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=5,
        )
        self._uvicorn = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self._sock.getsockname()[1]

    @property
    def url(self) -> str:
        return f"http://{self._sock.getsockname()[0]}:{self.port}/v1"

    def start(self, timeout_s: float = 30.0) -> OpenAIServer:
        """Serve in a daemon thread; returns once the server accepts connections."""
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._uvicorn.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the HTTP server did not start")
            time.sleep(0.01)
        return self

    def serve_forever(self) -> None:
        """Serve in this thread until `shutdown()` (or SIGINT/SIGTERM in the main thread)."""
        self._uvicorn.run(sockets=[self._sock])

    def shutdown(self) -> None:
        self._uvicorn.should_exit = True
        self.worker.close()  # ends in-flight requests, so open streams finish now
        if self._thread is not None:
            self._thread.join(timeout=30)
        self._sock.close()

    # -- request handling (on the event loop)
    async def handle(self, request: Request, kind: str) -> Response:
        try:
            body = await _read_json(request)
            req = parse(ChatRequest if kind == "chat" else CompletionRequest, body)
            if req.model is not None and req.model != self.model_name:
                raise RequestError(
                    f"'model': unknown model {req.model!r}; this server serves {self.model_name!r}",
                    "model",
                )
            inbox = _Inbox()
            rids = await run_in_threadpool(self._submit, kind, req, inbox)
        except RequestError as e:
            return error_response(e.status, str(e), e.param)
        except RuntimeError as e:  # the worker is closed: the server is shutting down
            return error_response(503, str(e))
        meta = {
            "id": ("chatcmpl-" if kind == "chat" else "cmpl-") + uuid.uuid4().hex[:24],
            "created": int(time.time()),
            "model": self.model_name,
        }
        index = {rid: i for i, rid in enumerate(rids)}
        if req.stream:
            stream = self._sse(kind, meta, index, inbox, req.include_usage)
            # The exact type (no charset suffix), as OpenAI sends it.
            headers = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
            return StreamingResponse(stream, headers=headers)
        return await self._complete(kind, meta, index, inbox, request)

    def _submit(self, kind: str, req: Any, inbox: _Inbox) -> list[int]:
        """Render and queue the prompts (worker thread pool: this waits for the engine lock)."""
        field = "messages" if kind == "chat" else "prompt"
        images = None
        if kind == "chat":
            params = req.params(default_max_tokens=None)
            try:
                ids, image_list = self.worker.chat_inputs(
                    req.conversation(), req.continue_final_message
                )
            except ImageInputError as e:  # image parts to a text model, a bad data URL
                raise RequestError(f"'messages': {e}", field) from None
            except Exception as e:  # template errors (e.g. role order) are client errors
                raise RequestError(f"'messages': chat template failed: {e}", field) from e
            prompts, images = [ids], [image_list]
        else:
            params = req.params(default_max_tokens=16)  # OpenAI's default
            prompts = req.prompt
        try:
            return self.worker.submit(prompts, params, inbox, images)
        except ValueError as e:  # too long, out-of-vocabulary token id, empty prompt
            raise RequestError(f"'{field}': {e}", field) from None

    async def _events(
        self, inbox: _Inbox, index: dict[int, int], request: Request | None = None
    ) -> AsyncIterator[tuple[int, StreamEvent, Completion | None]]:
        """(choice index, event, completion or None) until every request of `index` ends.

        TimeoutError past `request_timeout_s`; ConnectionAbortedError if `request`'s client
        went away (checked once a second while waiting).
        """
        pending = set(index)
        deadline = time.monotonic() + self.request_timeout_s
        while pending:
            left = deadline - time.monotonic()
            try:
                item = await asyncio.wait_for(inbox.queue.get(), timeout=min(1.0, max(left, 0)))
            except TimeoutError:
                if left <= 0:
                    raise
                if request is not None and await request.is_disconnected():
                    raise ConnectionAbortedError from None
                continue
            if isinstance(item, Exception):
                raise item
            ev, completion = item
            if completion is not None:
                pending.discard(ev.request_id)
            yield index[ev.request_id], ev, completion

    async def _complete(
        self, kind: str, meta: dict[str, Any], index: dict[int, int], inbox: _Inbox, request
    ) -> Response:
        done: dict[int, Completion] = {}
        try:
            async for i, _, completion in self._events(inbox, index, request):
                if completion is not None:
                    done[i] = completion
        except TimeoutError:
            self.worker.cancel(list(index))
            return error_response(504, f"generation took longer than {self.request_timeout_s} s")
        except ConnectionAbortedError:  # nobody to answer
            self.worker.cancel(list(index))
            return Response(status_code=499)
        except Exception as e:  # noqa: BLE001
            self.worker.cancel(list(index))
            return error_response(500, f"generation failed: {type(e).__name__}: {e}")
        choices = []
        for i in range(len(index)):
            c = done[i]
            choice: dict[str, Any] = {"index": i, "finish_reason": c.finish_reason}
            if kind == "chat":
                choice["message"] = {"role": "assistant", "content": c.text}
            else:
                choice.update(text=c.text, logprobs=None)
            choices.append(choice)
        obj = "chat.completion" if kind == "chat" else "text_completion"
        body = {**meta, "object": obj, "choices": choices, "usage": _usage(done.values())}
        return JSONResponse(body)

    async def _sse(
        self,
        kind: str,
        meta: dict[str, Any],
        index: dict[int, int],
        inbox: _Inbox,
        include_usage: bool,
    ) -> AsyncIterator[bytes]:
        obj = "chat.completion.chunk" if kind == "chat" else "text_completion"
        extra = {"usage": None} if include_usage else {}  # as OpenAI: null until the last

        def chunk(choices: list[dict[str, Any]], **fields: Any) -> bytes:
            data = {**meta, "object": obj, "choices": choices, **extra, **fields}
            return b"data: " + json.dumps(data).encode() + b"\n\n"

        finished = False
        done: list[Completion] = []
        try:
            if kind == "chat":
                role = {"role": "assistant", "content": ""}
                yield chunk([{"index": 0, "delta": role, "finish_reason": None}])
            async for i, ev, completion in self._events(inbox, index):
                if completion is not None:
                    done.append(completion)
                yield chunk([_chunk_choice(kind, i, ev)])
            finished = True
            if include_usage:
                yield chunk([], usage=_usage(done))
            yield b"data: [DONE]\n\n"
        except Exception as e:  # noqa: BLE001 - headers are sent: report in-band
            err = {"error": {"message": f"generation failed: {e}", "type": "server_error"}}
            yield b"data: " + json.dumps(err).encode() + b"\n\n"
        finally:  # also when the client went away (the generator is cancelled)
            if not finished:
                self.worker.cancel(list(index))


def _usage(done: Any) -> dict[str, int]:
    done = list(done)
    prompt_tokens = sum(c.prompt_tokens for c in done)
    completion_tokens = sum(len(c.token_ids) for c in done)
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def _chunk_choice(kind: str, i: int, ev: StreamEvent) -> dict[str, Any]:
    if kind == "chat":
        delta = {"content": ev.delta} if ev.delta else {}
        return {"index": i, "delta": delta, "finish_reason": ev.finish_reason}
    return {"index": i, "text": ev.delta, "logprobs": None, "finish_reason": ev.finish_reason}


async def _read_json(request: Request) -> Any:
    """The body as JSON whatever the Content-Type (curl -d sends a form type)."""
    if int(request.headers.get("content-length") or 0) > MAX_BODY_BYTES:
        raise RequestError(f"request body over {MAX_BODY_BYTES} bytes", None, 413)
    raw = await request.body()
    if len(raw) > MAX_BODY_BYTES:
        raise RequestError(f"request body over {MAX_BODY_BYTES} bytes", None, 413)
    try:
        return json.loads(raw or b"null")
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RequestError(f"request body is not valid JSON: {e}") from None


def build_app(server: OpenAIServer) -> FastAPI:
    """The routes; every error body has OpenAI's shape, unknown paths included."""
    app = FastAPI(title="jaxmm OpenAI-compatible server", docs_url=None, redoc_url=None)

    @app.exception_handler(Exception)
    async def crashed(request: Request, e: Exception) -> Response:  # a bug, not the client
        return error_response(500, f"internal error: {type(e).__name__}: {e}")

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        model = {
            "id": server.model_name,
            "object": "model",
            "created": 0,
            "owned_by": "jaxmm",
            "max_model_len": server.engine.max_seq_len,
        }
        return {"object": "list", "data": [model]}

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Response:
        return await server.handle(request, "chat")

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        return await server.handle(request, "completion")

    routes = {("GET", "/v1/models"): models, ("GET", "/health"): health}
    routes |= {("POST", "/v1/chat/completions"): chat, ("POST", "/v1/completions"): completions}

    @app.api_route("/{path:path}", methods=["GET", "POST", "PUT", "DELETE", "PATCH"])
    async def other(request: Request, path: str) -> Any:
        """A trailing slash is the same route (as before the move to FastAPI); else 404."""
        route = routes.get((request.method, "/" + path.rstrip("/")))
        if route is None:
            return error_response(404, f"no route {request.method} /{path}")
        return await (route(request) if request.method == "POST" else route())

    return app
