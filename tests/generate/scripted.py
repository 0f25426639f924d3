"""Backend doubles for pipeline tests: `ScriptedBackend` (in process) and
`scripted_openai_server` (a local OpenAI-compatible HTTP server).

Both answer from a table or a function and record every call, so a pipeline's control flow,
resumption and call counts are tested without a model; the real-model runs use SmolLM2.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from jaxmm.generate.backends import (
    Backend,
    BackendError,
    Conversation,
    apply_stop,
    check_conversation,
    check_prompts,
)
from jaxmm.generate.params import GenerationParams


class ScriptedBackend(Backend):
    """Answers from a table: deterministic, for testing pipeline orchestration.

    `responses` maps a prompt to its answer, or is a function prompt -> answer. For chat the
    lookup key is the content of the last message (or `chat_key(conversation)`). Unknown
    prompts return `default`, or raise BackendError naming the prompt when it is None.
    Every call is recorded in `calls` as (kind, prompt or conversation, params).
    """

    name = "scripted"

    def __init__(
        self,
        responses: Mapping[str, str] | Callable[[str], str],
        *,
        default: str | None = None,
        chat_key: Callable[[Conversation], str] | None = None,
        model: str = "scripted",
    ):
        self.responses = responses
        self.default = default
        self.chat_key = chat_key or (lambda conv: conv[-1]["content"])
        self.model = model
        self.calls: list[tuple[str, Any, GenerationParams]] = []

    def _answer(self, key: str, params: GenerationParams) -> str:
        if callable(self.responses):
            text = self.responses(key)
        elif key in self.responses:
            text = self.responses[key]
        elif self.default is not None:
            text = self.default
        else:
            raise BackendError(f"ScriptedBackend has no answer for prompt {key!r:.200}")
        return apply_stop(text, params.stop)

    def complete(self, prompts: Sequence[str], params: GenerationParams) -> list[str]:
        check_prompts(prompts)
        self.calls.extend(("complete", p, params) for p in prompts)
        return [self._answer(p, params) for p in prompts]

    def chat(self, conversations: Sequence[Conversation], params: GenerationParams) -> list[str]:
        for c in conversations:
            check_conversation(c)
        self.calls.extend(("chat", list(c), params) for c in conversations)
        return [self._answer(self.chat_key(c), params) for c in conversations]


class _OpenAIHandler(BaseHTTPRequestHandler):
    """`/v1/completions` and `/v1/chat/completions` answering `respond(prompt)`; records every
    request body in `seen` (the server class's list) on arrival, and answers after `delay_s`."""

    respond: Callable[[str], str]
    delay_s: float
    seen: list

    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.seen.append(body)
        time.sleep(self.delay_s)
        if self.path.endswith("/chat/completions"):
            prompt = body["messages"][-1]["content"]
            choice = {"message": {"role": "assistant", "content": self.respond(prompt)}}
        else:
            prompt = body["prompt"]
            choice = {"text": self.respond(prompt)}
        data = json.dumps({"choices": [{"index": 0, "finish_reason": "stop", **choice}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@contextlib.contextmanager
def scripted_openai_server(
    respond: Callable[[str], str] = lambda p: p[::-1], delay_s: float = 0.0
) -> Iterator[tuple[str, list]]:
    """A local OpenAI-compatible HTTP server double: yields (base_url, seen request bodies).
    For pipeline tests that run `OpenAIBackend` (the client under test) or a subprocess."""
    handler = type(
        "Handler", (_OpenAIHandler,), {"respond": staticmethod(respond), "delay_s": delay_s}
    )
    handler.seen = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/v1", handler.seen
    finally:
        httpd.shutdown()
        httpd.server_close()
