"""Request admission on the host: what a caller sends (text, token ids, a chat conversation,
images) becomes a checked `Request`, or an error that names the problem, before any device
work. Chat prompts use the tokenizer's own template; image parts become placeholder tokens
(`jaxmm.generate.vision`)."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from jaxmm.generate import image_parts
from jaxmm.generate.image_parts import ImageInputError
from jaxmm.generate.params import GenerationParams
from jaxmm.generate.requests import InvalidTokenError, PromptTooLongError, Request
from jaxmm.generate.text import TextTracker
from jaxmm.generate.vision import IMAGE_MARKER, ImageEncoder

Message = Mapping[str, Any]
Images = np.ndarray | Sequence[np.ndarray] | None


@dataclasses.dataclass(frozen=True)
class PromptBuilder:
    """Tokenises and checks prompts for one engine (its tokenizer, vocabulary, cache length
    and image encoder; `model_name` only names the model in errors)."""

    tokenizer: Any
    vocab_size: int
    max_seq_len: int
    model_name: str
    image_encoder: ImageEncoder | None = None

    def encode(self, prompt: str | Sequence[int]) -> list[int]:
        """Token ids of a text prompt (with the tokenizer's special tokens, e.g. BOS); a
        token-id prompt is checked against the vocabulary (InvalidTokenError names the id)."""
        if isinstance(prompt, str):
            return list(self.tokenizer(prompt)["input_ids"])
        ids = [int(t) for t in prompt]
        for t in ids:
            if not 0 <= t < self.vocab_size:
                raise InvalidTokenError(
                    f"token id {t} is out of range: the model's vocabulary has "
                    f"{self.vocab_size} tokens (ids 0..{self.vocab_size - 1})"
                )
        return ids

    def chat_prompt_ids(
        self, messages: Sequence[Message], continue_final_message: bool = False
    ) -> list[int]:
        """`Engine.chat_prompt_ids`: a text-only conversation's prompt ids."""
        if continue_final_message and (not messages or messages[-1]["role"] != "assistant"):
            raise ValueError("continue_final_message needs an assistant message last")
        ids, images = self.chat_inputs(messages, continue_final_message)
        if images is not None:
            raise ImageInputError("the conversation has image parts: use chat_inputs")
        return ids

    def chat_inputs(
        self, messages: Sequence[Message], continue_final_message: bool = False
    ) -> tuple[list[int], list[np.ndarray] | None]:
        """`Engine.chat_inputs`: prompt ids and images (None without image parts)."""
        if continue_final_message and (not messages or messages[-1]["role"] != "assistant"):
            raise ValueError("continue_final_message needs an assistant message last")
        if image_parts.has_images(messages) and self.image_encoder is None:
            raise ImageInputError(
                f"the conversation has image parts but model {self.model_name!r} takes no "
                "images (the engine has no image_encoder)"
            )
        messages, images = image_parts.split_images(messages, IMAGE_MARKER)
        text = self.tokenizer.apply_chat_template(
            messages,
            add_generation_prompt=not continue_final_message,
            continue_final_message=continue_final_message,
            tokenize=False,
        )
        if not images:
            return list(self.tokenizer(text, add_special_tokens=False)["input_ids"]), None
        return self.image_encoder.tokenize(self.tokenizer, text, len(images)), images

    def request(
        self,
        ids: Iterator[int],
        prompt: str | Sequence[int],
        params: GenerationParams,
        images: Images,
    ) -> Request:
        """A request checked to fit the cache (PromptTooLongError) with its images; its id is
        drawn from `ids` only once it passes, so a rejected prompt uses none."""
        prompt_ids = self.encode(prompt)
        n = len(prompt_ids)
        if n == 0:
            raise ValueError("prompt is empty (no tokens)")
        if n >= self.max_seq_len:
            raise PromptTooLongError(
                f"prompt has {n} tokens; max_seq_len is {self.max_seq_len} "
                f"(prompt + max_tokens must be <= {self.max_seq_len})"
            )
        max_new = params.max_tokens if params.max_tokens is not None else self.max_seq_len - n
        if n + max_new > self.max_seq_len:
            raise PromptTooLongError(
                f"prompt has {n} tokens and max_tokens is {max_new}: {n + max_new} exceeds "
                f"max_seq_len {self.max_seq_len}"
            )
        pixels = self._check_images(prompt_ids, images)
        seed = params.seed if params.seed is not None else int.from_bytes(os.urandom(4), "little")
        return Request(
            rid=next(ids),
            prompt_ids=prompt_ids,
            params=params,
            max_new=max_new,
            seed=seed % (1 << 32),
            tracker=TextTracker(self.tokenizer, params.stop),
            images=pixels,
        )

    def _check_images(self, prompt_ids: list[int], images: Images) -> np.ndarray | None:
        """Preprocessed images [N, S, S, 3] (None for none), checked against the prompt's
        placeholders: their count must be N * tokens_per_image."""
        if self.image_encoder is None:
            if images is not None and len(images):
                raise ImageInputError(
                    f"the request has {len(images)} images but model {self.model_name!r} "
                    "takes no images (the engine has no image_encoder)"
                )
            return None
        return self.image_encoder.check(prompt_ids, images)
