"""The backend interface every pipeline talks to, and its implementations.

* `EngineBackend`: the in-process jaxmm engine (`jaxmm.generate.engine.Engine`).
* `OpenAIBackend`: any OpenAI-compatible server (`launch/serve.py`, vLLM, ...), standard
  library HTTP only, with retries and backoff.
* `CachedBackend`: wraps any backend with an on-disk call cache (sqlite) keyed by
  (backend, model, prompt, params), so an interrupted pipeline resumes without repeating calls.

This module imports no JAX: a pipeline pointed at a remote server never loads it.
"""

from __future__ import annotations

import abc
import contextlib
import hashlib
import http.client
import json
import os
import random
import sqlite3
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from jaxmm.generate import image_parts
from jaxmm.generate.image_parts import ImageInputError
from jaxmm.generate.params import GenerationParams

if TYPE_CHECKING:
    from jaxmm.generate.engine import Engine

Message = Mapping[str, Any]
Conversation = Sequence[Message]

__all__ = [
    "Backend",
    "BackendError",
    "CachedBackend",
    "EngineBackend",
    "GenerationParams",
    "ImageInputError",
    "OpenAIBackend",
]


class BackendError(RuntimeError):
    """A model call failed (HTTP error, bad response, unknown scripted prompt)."""


class Backend(abc.ABC):
    """Text in, text out. `name` and `model` identify the backend in call caches."""

    name: str = "backend"
    model: str = ""
    # True when chat messages may carry OpenAI-style content-part lists with `image_url`
    # data-URL parts (`jaxmm.generate.image_parts`; `jaxmm.pipelines.mf2.frame_parts` writes
    # them): an engine with an image encoder, or an OpenAI server opted in with `images=True`.
    accepts_images: bool = False

    @abc.abstractmethod
    def complete(self, prompts: Sequence[str], params: GenerationParams) -> list[str]:
        """Continue each raw prompt (no chat template)."""

    @abc.abstractmethod
    def chat(self, conversations: Sequence[Conversation], params: GenerationParams) -> list[str]:
        """Answer each conversation (list of {"role", "content"} messages) as the assistant."""

    def stream_complete(self, prompt: str, params: GenerationParams) -> Iterator[str]:
        """Text deltas of one completion. The default yields the whole text at once."""
        yield self.complete([prompt], params)[0]

    def stream_chat(self, conversation: Conversation, params: GenerationParams) -> Iterator[str]:
        """Text deltas of one chat answer. The default yields the whole text at once."""
        yield self.chat([conversation], params)[0]


# ---------------------------------------------------------------------------- engine
class EngineBackend(Backend):
    """The in-process jaxmm engine; all prompts of a call are batched on the device. Takes
    images when the engine has an image encoder (`Engine(image_encoder=...)`)."""

    name = "jaxmm-engine"

    def __init__(self, engine: Engine):
        self.engine = engine
        self.model = engine.model_name
        self.accepts_images = getattr(engine, "image_encoder", None) is not None
        self._lock = threading.Lock()  # the engine is single-threaded

    def complete(self, prompts: Sequence[str], params: GenerationParams) -> list[str]:
        check_prompts(prompts)
        with self._lock:
            return [c.text for c in self.engine.generate(list(prompts), params)]

    def chat(self, conversations: Sequence[Conversation], params: GenerationParams) -> list[str]:
        for c in conversations:
            check_conversation(c, self.accepts_images)
        with self._lock:
            return [c.text for c in self.engine.chat(list(conversations), params)]

    def stream_complete(self, prompt: str, params: GenerationParams) -> Iterator[str]:
        check_prompts([prompt])
        with self._lock:
            for ev in self.engine.stream([prompt], params):
                if ev.delta:
                    yield ev.delta

    def stream_chat(self, conversation: Conversation, params: GenerationParams) -> Iterator[str]:
        check_conversation(conversation, self.accepts_images)
        with self._lock:
            ids, images = self.engine.chat_inputs(conversation)
            for ev in self.engine.stream([ids], params, [images]):
                if ev.delta:
                    yield ev.delta


# ---------------------------------------------------------------------------- HTTP
class OpenAIBackend(Backend):
    """Client for an OpenAI-compatible server (`/v1/completions`, `/v1/chat/completions`).

    Args:
      base_url: e.g. "http://127.0.0.1:8000/v1".
      model: model name sent with each request.
      api_key: sent as a Bearer token (defaults to $OPENAI_API_KEY, may be empty).
      max_retries: retries of connection errors, 408/409/429 and 5xx, with exponential
        backoff and jitter; other 4xx fail at once with the server's message.
      max_concurrency: requests in flight at once for a batch of prompts.
      images: the server takes image parts (a VLM server): conversations may carry
        OpenAI-style `image_url` parts, forwarded as they are.
    """

    name = "openai"

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        timeout_s: float = 600.0,
        max_retries: int = 4,
        backoff_s: float = 0.5,
        max_concurrency: int = 8,
        images: bool = False,
    ):
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must start with http:// or https://, got {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.api_key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY", "")
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.max_concurrency = max_concurrency
        self.accepts_images = bool(images)

    # -- public API
    def complete(self, prompts: Sequence[str], params: GenerationParams) -> list[str]:
        check_prompts(prompts)
        return self._map(
            lambda p: self._text(self._post("/completions", self._body(p, params))), prompts
        )

    def chat(self, conversations: Sequence[Conversation], params: GenerationParams) -> list[str]:
        for c in conversations:
            check_conversation(c, self.accepts_images)
        return self._map(
            lambda c: self._text(self._post("/chat/completions", self._body(c, params))),
            conversations,
        )

    def stream_complete(self, prompt: str, params: GenerationParams) -> Iterator[str]:
        check_prompts([prompt])
        yield from self._stream("/completions", self._body(prompt, params))

    def stream_chat(self, conversation: Conversation, params: GenerationParams) -> Iterator[str]:
        check_conversation(conversation, self.accepts_images)
        yield from self._stream("/chat/completions", self._body(conversation, params))

    def models(self) -> list[str]:
        return [m["id"] for m in self._request("GET", "/models", None)["data"]]

    # -- request building
    def _body(self, prompt_or_messages: Any, params: GenerationParams) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "temperature": params.temperature,
            "top_p": params.top_p,
        }
        if isinstance(prompt_or_messages, str):
            body["prompt"] = prompt_or_messages
        else:
            body["messages"] = [dict(m) for m in prompt_or_messages]
        if params.max_tokens is not None:
            body["max_tokens"] = params.max_tokens
        if params.top_k:
            body["top_k"] = params.top_k  # vLLM / jaxmm extension, ignored by OpenAI
        if params.stop:
            body["stop"] = list(params.stop)
        if params.seed is not None:
            body["seed"] = params.seed
        return body

    @staticmethod
    def _text(response: Mapping[str, Any]) -> str:
        try:
            choice = response["choices"][0]
            if "message" in choice:
                return choice["message"].get("content") or ""
            return choice["text"]
        except (KeyError, IndexError, TypeError) as e:
            raise BackendError(f"malformed response (no choices[0] text): {response!r:.300}") from e

    def _map(self, fn: Callable[[Any], str], items: Sequence[Any]) -> list[str]:
        if len(items) <= 1 or self.max_concurrency <= 1:
            return [fn(x) for x in items]
        with ThreadPoolExecutor(min(self.max_concurrency, len(items))) as pool:
            return list(pool.map(fn, items))

    # -- transport
    def _post(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        return self._request("POST", path, body)

    def _open(self, method: str, path: str, body: Mapping[str, Any] | None):
        """Open the request with retries; returns the live response object."""
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        url = self.base_url + path
        for attempt in range(self.max_retries + 1):
            req = urllib.request.Request(url, data=data, headers=headers, method=method)
            try:
                return urllib.request.urlopen(req, timeout=self.timeout_s)
            except urllib.error.HTTPError as e:
                detail = _error_message(e)
                retryable = e.code in (408, 409, 429) or e.code >= 500
                if not retryable or attempt == self.max_retries:
                    raise BackendError(
                        f"{method} {url} failed with HTTP {e.code}: {detail}"
                    ) from None
            except (urllib.error.URLError, http.client.HTTPException, OSError) as e:
                if attempt == self.max_retries:
                    raise BackendError(
                        f"{method} {url} failed after {attempt + 1} attempts: {e}"
                    ) from e
            time.sleep(self.backoff_s * (2**attempt) * (1 + random.random()))
        raise AssertionError("unreachable")

    def _request(self, method: str, path: str, body: Mapping[str, Any] | None) -> dict[str, Any]:
        with self._open(method, path, body) as resp:
            raw = resp.read()
        try:
            return json.loads(raw)
        except json.JSONDecodeError as e:
            raise BackendError(f"{method} {path}: response is not JSON: {raw[:200]!r}") from e

    def _stream(self, path: str, body: dict[str, Any]) -> Iterator[str]:
        """Server-sent events: `data: {json}` lines, ended by `data: [DONE]`."""
        body = {**body, "stream": True}
        with self._open("POST", path, body) as resp:
            for raw in resp:
                line = raw.decode().strip()
                if not line.startswith("data:"):
                    continue
                payload = line[len("data:") :].strip()
                if payload == "[DONE]":
                    return
                event = json.loads(payload)
                if "error" in event:
                    raise BackendError(f"stream error: {event['error']}")
                choice = event["choices"][0]
                delta = (
                    (choice.get("delta") or {}).get("content")
                    if "delta" in choice
                    else (choice.get("text"))
                )
                if delta:
                    yield delta
        raise BackendError(f"stream from {path} ended without [DONE]")


def _error_message(e: urllib.error.HTTPError) -> str:
    try:
        body = e.read().decode(errors="replace")
    except OSError:
        return e.reason
    try:
        return json.loads(body)["error"]["message"]
    except (ValueError, KeyError, TypeError):
        return body[:500] or str(e.reason)


# ---------------------------------------------------------------------------- cache
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


def apply_stop(text: str, stop: Sequence[str]) -> str:
    hits = [i for s in stop if (i := text.find(s)) >= 0]
    return text[: min(hits)] if hits else text


def check_prompts(prompts: Sequence[str]) -> None:
    if isinstance(prompts, str):
        raise TypeError("prompts must be a list of strings, got one string")
    for i, p in enumerate(prompts):
        if not isinstance(p, str):
            raise TypeError(f"prompts[{i}] must be a string, got {type(p).__name__}")


def check_conversation(conversation: Conversation, images: bool = False) -> None:
    """Messages are {"role": str, "content": str}; with `images`, a content may also be a
    list of text / image_url parts (ImageInputError names a bad part)."""
    if isinstance(conversation, str | Mapping) or not conversation:
        raise TypeError("a conversation must be a non-empty list of {'role', 'content'} dicts")
    for i, m in enumerate(conversation):
        if not isinstance(m, Mapping) or not isinstance(m.get("role"), str):
            raise TypeError(f"messages[{i}] must be a dict with string 'role' and 'content'")
        if isinstance(m.get("content"), list):
            if not images:
                raise ImageInputError(
                    f"messages[{i}].content is a list of parts, but this backend takes no "
                    "images (Backend.accepts_images is False): send string contents"
                )
        elif not isinstance(m.get("content"), str):
            raise TypeError(f"messages[{i}] must be a dict with string 'role' and 'content'")
    if images:
        image_parts.check_parts(conversation)
