"""The backend interface every pipeline talks to, its in-process implementation and the input
checks every backend shares.

* `EngineBackend` (here): the in-process jaxmm engine (`jaxmm.generate.engine.Engine`).
* `OpenAIBackend` (`openai_backend.py`): any OpenAI-compatible server over HTTP.
* `CachedBackend` (`call_cache.py`): an on-disk call cache around any backend.

This module imports no JAX: a pipeline pointed at a remote server never loads it.
"""

from __future__ import annotations

import abc
import threading
from collections.abc import Iterator, Mapping, Sequence
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
    "EngineBackend",
    "GenerationParams",
    "ImageInputError",
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
