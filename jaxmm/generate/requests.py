"""What a generation request is on the host: its state while queued/decoding, the events it
streams, its result, and the error for a prompt that cannot fit."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from jaxmm.generate.params import GenerationParams
from jaxmm.generate.text import TextTracker


@dataclasses.dataclass
class Completion:
    """Result of one request. `finish_reason` is "stop" (EOS or stop string) or "length"."""

    text: str
    token_ids: list[int]
    finish_reason: str
    prompt_tokens: int


@dataclasses.dataclass
class StreamEvent:
    """A text delta of request `request_id`; the last event of a request has `finish_reason`."""

    request_id: int
    delta: str
    finish_reason: str | None = None


class PromptTooLongError(ValueError):
    """The prompt (plus max_tokens) does not fit in the engine's `max_seq_len`."""


class InvalidTokenError(ValueError):
    """A token-id prompt holds an id outside the model's vocabulary."""


@dataclasses.dataclass
class Request:
    """One request's host-side state while it is queued or decoding."""

    rid: int
    prompt_ids: list[int]
    params: GenerationParams
    max_new: int
    seed: int
    tracker: TextTracker
    token_ids: list[int] = dataclasses.field(default_factory=list)
    finish_reason: str | None = None
    images: np.ndarray | None = None  # preprocessed [N, S, S, 3], encoded at admission


def per_prompt(
    params: GenerationParams | Sequence[GenerationParams], n: int
) -> list[GenerationParams]:
    """One GenerationParams per prompt: the same one n times, or a list checked to be n long."""
    if isinstance(params, GenerationParams):
        return [params] * n
    params = list(params)
    if len(params) != n:
        raise ValueError(f"got {len(params)} GenerationParams for {n} prompts")
    return params
