"""`OpenAIBackend`: a client for any OpenAI-compatible server (`launch/serve.py`, vLLM, ...),
standard-library HTTP only, with retries and backoff. Imports no JAX."""

from __future__ import annotations

import http.client
import json
import os
import random
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from jaxmm.generate.backends import (
    Backend,
    BackendError,
    Conversation,
    check_conversation,
    check_prompts,
)
from jaxmm.generate.params import GenerationParams


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
