"""Generation engine: prefill + decode over a preallocated KV cache with continuous batching.

The cache has `max_batch` slots of `max_seq_len` tokens. Waiting requests are prefilled
together into free slots (one call; prompts right-padded to a power-of-two bucket, rows padded
to a power of two, so few shapes compile); then all slots decode together in one jitted
`lax.while_loop` of up to `steps_per_call` steps that exits early when every slot is done.
Between calls the host turns tokens into text, applies stop strings, streams deltas, frees
finished slots and admits waiting requests, so a new request never waits for a whole batch.

Rows of different lengths need no padding masks: each slot keeps its own `lengths`, the
model writes new tokens at `lengths` and masks slots past it. Prefill pads prompts on the
right and then resets `lengths` to the true prompt lengths, so the pad keys are "unwritten"
and the first decode step overwrites them. This module is the host-side scheduler: request
admission is in `prompts.py`, the per-slot arrays in `slots.py`, the cache and the jitted calls
in `runner.py` (around the device functions of `steps.py`), loading in `pretrained.py`.

The model is anything with the `jaxmm.models.llm` contract:
`logits, cache = apply(params, tokens [B,T], positions [B,T], cache=cache)`.

Images (optional, `image_encoder`): a request's images are encoded once when it is admitted
and their features replace the embeddings of its placeholder tokens during prefill
(`jaxmm.generate.vision`); the KV cache then holds them, so decoding is unchanged.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import jax
import numpy as np

from jaxmm.generate import pretrained
from jaxmm.generate.image_parts import ImageInputError
from jaxmm.generate.params import GenerationParams
from jaxmm.generate.prompts import Images, Message, PromptBuilder
from jaxmm.generate.requests import (
    Completion,
    InvalidTokenError,
    PromptTooLongError,
    Request,
    StreamEvent,
    per_prompt,
)
from jaxmm.generate.runner import ModelRunner
from jaxmm.generate.slots import Slots
from jaxmm.generate.vision import ImageEncoder

__all__ = [
    "Completion",
    "Engine",
    "ImageEncoder",
    "ImageInputError",
    "InvalidTokenError",
    "PromptTooLongError",
    "StreamEvent",
]


class Engine:
    """Batched text generation with a KV cache (see module docstring).

    Args:
      apply_fn: `apply_fn(variables, tokens, positions, cache=cache) -> (logits, cache)`,
        usually `LLM(config).apply`.
      params: model parameters (the `params` collection).
      tokenizer: a Hugging Face tokenizer (`encode`, `decode`, `apply_chat_template`).
      init_cache_fn: `(batch, max_len) -> cache` for the model.
      max_seq_len: cache length; prompt + max_tokens must fit.
      max_batch: number of cache slots decoded together.
      eos_token_ids: tokens that end a request (not part of the text).
      steps_per_call: decode steps per jitted call; more is faster, fewer streams sooner.
      prefill_chunk: prompt tokens per model call in prefill (bounds logits/activations).
      mesh, rules, cache_logical_axes: for a model sharded over a device mesh (params already
        placed, e.g. by `hf.load_hf(mesh=...)`): the cache is created sharded by its logical
        axes and every call runs under the mesh and the logical-axis rules.
      vocab_size: the model's embedding rows; prompt token ids must be below it (default:
        the tokenizer's size).
      image_encoder: lets requests carry images (`jaxmm.generate.vision.ImageEncoder`):
        each is encoded once at admission (one jitted call for all images admitted together)
        and its features replace the embeddings of its placeholder tokens during prefill;
        `apply_fn` must then take `inputs_embeds=`. Decoding is unchanged.
    """

    def __init__(
        self,
        apply_fn: Callable[..., tuple[jax.Array, Any]],
        params: Any,
        tokenizer: Any,
        init_cache_fn: Callable[[int, int], Any],
        *,
        max_seq_len: int,
        max_batch: int = 8,
        eos_token_ids: Iterable[int] = (),
        steps_per_call: int = 8,
        prefill_chunk: int = 512,
        model_name: str = "jaxmm",
        mesh: jax.sharding.Mesh | None = None,
        rules: Sequence[tuple[str, Any]] | None = None,
        cache_logical_axes: Any = None,
        vocab_size: int | None = None,
        image_encoder: ImageEncoder | None = None,
    ):
        if max_seq_len < 2:
            raise ValueError(f"max_seq_len must be >= 2, got {max_seq_len}")
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if prefill_chunk < 1 or prefill_chunk & (prefill_chunk - 1):
            raise ValueError(f"prefill_chunk must be a power of two, got {prefill_chunk}")
        self.params = params
        self.tokenizer = tokenizer
        self.max_seq_len = int(max_seq_len)
        self.max_batch = int(max_batch)
        self.steps_per_call = int(steps_per_call)
        self.prefill_chunk = int(prefill_chunk)
        self.model_name = model_name
        # Embedding rows: token ids at or past it would read garbage (NaN logits).
        self.vocab_size = int(vocab_size if vocab_size is not None else len(tokenizer))
        eos = sorted({int(t) for t in eos_token_ids})
        if getattr(tokenizer, "eos_token_id", None) is not None and not eos:
            eos = [int(tokenizer.eos_token_id)]
        self.eos_token_ids = eos
        self.image_encoder = image_encoder
        if image_encoder is not None and not 0 <= image_encoder.image_token_id < self.vocab_size:
            raise ValueError(
                f"image_token_id {image_encoder.image_token_id} is outside the "
                f"vocabulary (0..{self.vocab_size - 1})"
            )
        self._prompts = PromptBuilder(
            tokenizer, self.vocab_size, self.max_seq_len, model_name, image_encoder
        )
        self._runner = ModelRunner(
            apply_fn,
            init_cache_fn,
            max_seq_len=self.max_seq_len,
            max_batch=self.max_batch,
            prefill_chunk=self.prefill_chunk,
            eos_token_ids=eos,
            mesh=mesh,
            rules=rules,
            cache_logical_axes=cache_logical_axes,
            image_encoder=image_encoder,
        )
        self._slots = Slots.empty(self.max_batch)
        self._waiting: deque[Request] = deque()
        self._finished: dict[int, Request] = {}  # until collected by `pop_result`
        self._ids = itertools.count()

    # The loaders (HF folder, .gguf, LLaVA) live in `pretrained.py`.
    from_pretrained = classmethod(pretrained.from_pretrained)

    # ------------------------------------------------------------------ prompts
    def encode(self, prompt: str | Sequence[int]) -> list[int]:
        """Token ids of a text prompt (with the tokenizer's special tokens, e.g. BOS); a
        token-id prompt is checked against the vocabulary (InvalidTokenError names the id)."""
        return self._prompts.encode(prompt)

    def chat_prompt_ids(
        self, messages: Sequence[Message], continue_final_message: bool = False
    ) -> list[int]:
        """Render a conversation with the tokenizer's own chat template, ready to continue.

        `continue_final_message`: the last message is an assistant turn to continue, not to
        answer (assistant prefill, e.g. CINGS's `## Context ... ## Answer`; vLLM's option).
        """
        return self._prompts.chat_prompt_ids(messages, continue_final_message)

    def chat_inputs(
        self, messages: Sequence[Message], continue_final_message: bool = False
    ) -> tuple[list[int], list[np.ndarray] | None]:
        """Prompt ids and images (None without image parts) of a conversation whose contents
        may be OpenAI-style part lists. Each image part becomes `tokens_per_image`
        placeholder ids at its place in the rendered template (text around it is tokenised
        piecewise, as LLaVA processors do around their special image token)."""
        return self._prompts.chat_inputs(messages, continue_final_message)

    # ------------------------------------------------------------------ scheduling
    def submit(self, prompt: str | Sequence[int], params: GenerationParams) -> int:
        """Queue a request; returns its id. Raises PromptTooLongError before any device work."""
        return self.submit_many([prompt], [params])[0]

    def submit_many(
        self,
        prompts: Sequence[str | Sequence[int]],
        params: GenerationParams | Sequence[GenerationParams],
        images: Sequence[Images] | None = None,
    ) -> list[int]:
        """Queue several requests, all or none: every prompt is checked before any is queued.

        `images[i]`: prompt i's images (uint8 [N, H, W, 3] or a list of [H, W, 3], or float
        [N, S, S, 3] already preprocessed), matching its placeholder tokens in order."""
        plist = per_prompt(params, len(prompts))
        if images is None:
            images = [None] * len(prompts)
        elif len(images) != len(prompts):
            raise ValueError(f"got images for {len(images)} prompts, expected {len(prompts)}")
        reqs = [
            self._prompts.request(self._ids, p, q, im)
            for p, q, im in zip(prompts, plist, images, strict=True)
        ]
        self._waiting.extend(reqs)
        return [r.rid for r in reqs]

    def pop_result(self, rid: int) -> Completion:
        """The completion of a finished request (each can be collected once)."""
        req = self._finished.pop(rid)
        return Completion(
            text=req.tracker.text,
            token_ids=req.token_ids,
            finish_reason=req.finish_reason,
            prompt_tokens=len(req.prompt_ids),
        )

    def cancel(self, rid: int) -> bool:
        """Drop a queued or running request (e.g. its client went away); frees its slot.
        Returns whether it was still pending."""
        for req in self._waiting:
            if req.rid == rid:
                self._waiting.remove(req)
                return True
        if self._slots.release(rid):
            return True
        self._finished.pop(rid, None)
        return False

    def reset(self) -> None:
        """Drop every queued, running and uncollected request and start from a fresh cache
        (used after a failed step, whose donated cache may be gone)."""
        self._waiting.clear()
        self._slots = Slots.empty(self.max_batch)
        self._finished.clear()
        self._runner.reset()

    def has_work(self) -> bool:
        return bool(self._waiting) or self._slots.any_active()

    def step(self) -> list[StreamEvent]:
        """Admit waiting requests into free slots, run one decode call, return text events."""
        events: list[StreamEvent] = []
        free = self._slots.free()
        admitted = [self._waiting.popleft() for _ in free[: len(self._waiting)]]
        if admitted:
            self._admit(free[: len(admitted)], admitted, events)
        active = self._slots.active()
        if not active.any():
            return events
        tokens = self._runner.decode(self.params, self._slots, active, self.steps_per_call)
        for slot in np.flatnonzero(active):
            req = self._slots.requests[slot]
            for token in tokens[slot]:
                if req.finish_reason is not None or token < 0:
                    break
                self._slots.advance(slot, token)
                self._consume(req, int(token), events)
            if req.finish_reason is not None:
                self._slots.requests[slot] = None
        return events

    def stream(
        self,
        prompts: Sequence[str | Sequence[int]],
        params: GenerationParams | Sequence[GenerationParams],
        images: Sequence[Images] | None = None,
    ) -> Iterator[StreamEvent]:
        """Generate for all prompts, yielding deltas as they become final.

        `StreamEvent.request_id` is the index of the prompt in `prompts`.
        """
        rids = self.submit_many(prompts, params, images)
        index = {rid: i for i, rid in enumerate(rids)}
        pending = set(rids)
        try:
            while pending:
                for ev in self.step():
                    if ev.request_id in index:
                        if ev.finish_reason is not None:
                            pending.discard(ev.request_id)
                            self._finished.pop(ev.request_id, None)
                        yield dataclasses.replace(ev, request_id=index[ev.request_id])
        finally:  # the consumer stopped early: do not keep decoding for nobody
            for rid in pending:
                self.cancel(rid)

    def generate(
        self,
        prompts: Sequence[str | Sequence[int]],
        params: GenerationParams | Sequence[GenerationParams] = GenerationParams(),
        images: Sequence[Images] | None = None,
    ) -> list[Completion]:
        """Generate for all prompts (batched) and return full completions in order."""
        rids = self.submit_many(prompts, params, images)
        pending = set(rids)
        while pending:
            self.step()
            pending -= self._finished.keys()
        return [self.pop_result(r) for r in rids]

    def chat(
        self,
        conversations: Sequence[Sequence[Message]],
        params: GenerationParams | Sequence[GenerationParams] = GenerationParams(),
    ) -> list[Completion]:
        """Answer conversations; contents may be part lists with images (see chat_inputs)."""
        inputs = [self.chat_inputs(c) for c in conversations]
        return self.generate([i for i, _ in inputs], params, [im for _, im in inputs])

    # ------------------------------------------------------------------ host bookkeeping
    def _admit(self, slots: list[int], reqs: list[Request], events: list[StreamEvent]) -> None:
        """Prefill `reqs` into `slots` with one call and account their first tokens."""
        first = self._runner.prefill(self.params, slots, reqs)
        for slot, req, token in zip(slots, reqs, first, strict=True):
            self._slots.place(slot, req, token)
            self._consume(req, int(token), events)
            if req.finish_reason is not None:
                self._slots.requests[slot] = None

    def _consume(self, req: Request, token: int, events: list[StreamEvent]) -> None:
        """Account one generated token of `req`; set its finish_reason when it ends."""
        delta = ""
        if token in self.eos_token_ids:
            req.finish_reason = "stop"
        else:
            req.token_ids.append(token)
            delta = req.tracker.add(token)
            if req.tracker.stopped:
                req.finish_reason = "stop"
            elif len(req.token_ids) >= req.max_new:
                req.finish_reason = "length"
        if req.finish_reason is not None:
            delta += req.tracker.finish()
            events.append(StreamEvent(req.rid, delta, req.finish_reason))
            self._finished[req.rid] = req
        elif delta:
            events.append(StreamEvent(req.rid, delta))
