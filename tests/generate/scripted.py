"""`ScriptedBackend`: a deterministic backend double for pipeline orchestration tests.

It answers from a table (or a function), applies stop strings like a real backend and records
every call, so a pipeline's control flow is tested without a model.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
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
