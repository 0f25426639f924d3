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
and the first decode step overwrites them. The device functions are in `steps.py`; this
module is the host-side scheduler.

The model is anything with the `jaxmm.models.llm` contract:
`logits, cache = apply(params, tokens [B,T], positions [B,T], cache=cache)`.

Images (optional, `image_encoder`): a request's images are encoded once when it is admitted
and their features replace the embeddings of its placeholder tokens during prefill
(`jaxmm.generate.vision`); the KV cache then holds them, so decoding is unchanged.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import itertools
import json
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxmm import sharding
from jaxmm.generate import image_parts, model_folder, steps
from jaxmm.generate.image_parts import ImageInputError
from jaxmm.generate.params import GenerationParams
from jaxmm.generate.requests import (
    Completion,
    InvalidTokenError,
    PromptTooLongError,
    Request,
    StreamEvent,
    per_prompt,
)
from jaxmm.generate.text import TextTracker
from jaxmm.generate.vision import IMAGE_MARKER, ImageEncoder
from jaxmm.models import gguf, hf, llava_hf, llm

Message = Mapping[str, Any]
Images = np.ndarray | Sequence[np.ndarray] | None
__all__ = [
    "Completion",
    "Engine",
    "ImageEncoder",
    "ImageInputError",
    "InvalidTokenError",
    "PromptTooLongError",
    "StreamEvent",
]
DEFAULT_MAX_SEQ_LEN = 8192


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
        self.params = params
        self.tokenizer = tokenizer
        self.max_seq_len = int(max_seq_len)
        self.max_batch = int(max_batch)
        self.steps_per_call = int(steps_per_call)
        if prefill_chunk < 1 or prefill_chunk & (prefill_chunk - 1):
            raise ValueError(f"prefill_chunk must be a power of two, got {prefill_chunk}")
        self.prefill_chunk = int(prefill_chunk)
        self.model_name = model_name
        # Embedding rows: token ids at or past it would read garbage (NaN logits).
        self.vocab_size = int(vocab_size if vocab_size is not None else len(tokenizer))
        eos = sorted({int(t) for t in eos_token_ids})
        if getattr(tokenizer, "eos_token_id", None) is not None and not eos:
            eos = [int(tokenizer.eos_token_id)]
        self.eos_token_ids = eos
        self._eos = jnp.asarray(eos or [-1], jnp.int32)
        # Built under jit: allocated on device directly and never aliasing two leaves (the
        # cache is donated every call).
        self._mesh = mesh
        self._rules = tuple(rules) if rules is not None else None
        cache_shardings = None
        if mesh is not None:
            self._rules = self._rules or sharding.DEFAULT_RULES
            if cache_logical_axes is None:
                raise ValueError("cache_logical_axes is required with a mesh")
            cache_shardings = jax.tree.map(
                lambda axes: sharding.logical_sharding(mesh, axes, self._rules),
                cache_logical_axes,
                is_leaf=lambda x: isinstance(x, tuple),
            )
        self._new_cache = jax.jit(
            lambda: init_cache_fn(self.max_batch, self.max_seq_len), out_shardings=cache_shardings
        )
        with self._context():
            self._cache = self._new_cache()
        batch_axes = steps.cache_batch_axes(init_cache_fn, self.max_seq_len)
        self._prefill = jax.jit(
            functools.partial(steps.prefill, apply_fn, batch_axes, self.prefill_chunk),
            donate_argnums=(1,),
        )
        self._decode = jax.jit(
            functools.partial(steps.decode, apply_fn),
            donate_argnums=(1,),
            static_argnames=("n_steps",),
        )
        self.image_encoder = image_encoder
        if image_encoder is not None:
            if not 0 <= image_encoder.image_token_id < self.vocab_size:
                raise ValueError(
                    f"image_token_id {image_encoder.image_token_id} is outside the "
                    f"vocabulary (0..{self.vocab_size - 1})"
                )
            self._encode_images = jax.jit(image_encoder.encode_fn)

        # Host-side per-slot state; the device sees it as small arrays each call.
        s = self.max_batch
        self._slots: list[Request | None] = [None] * s
        self._last = np.zeros(s, np.int32)
        self._n_gen = np.zeros(s, np.int32)
        self._max_new = np.ones(s, np.int32)
        self._seed = np.zeros(s, np.uint32)
        self._temp = np.zeros(s, np.float32)
        self._top_k = np.zeros(s, np.int32)
        self._top_p = np.ones(s, np.float32)
        self._waiting: deque[Request] = deque()
        self._finished: dict[int, Request] = {}  # until collected by `pop_result`
        self._ids = itertools.count()

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_pretrained(
        cls,
        model_dir: str | os.PathLike,
        *,
        max_seq_len: int | None = None,
        max_batch: int = 8,
        dtype: str = "float32",
        param_dtype: str | None = None,
        steps_per_call: int = 8,
        prefill_chunk: int = 512,
        model_name: str | None = None,
        mesh: jax.sharding.Mesh | None = None,
        rules: Sequence[tuple[str, Any]] | None = None,
        vision: str | None = None,
    ) -> Engine:
        """Load a Hugging Face folder (config.json + safetensors + tokenizer files), or a
        llama.cpp `.gguf` file (converted once into a cached HF folder: `jaxmm.models.gguf`).

        `vision="tiny_random"` adds a random SigLIP-style tower + projector
        (`jaxmm.generate.vision.tiny_random_encoder`) so the engine takes images: for testing
        orchestration only, the tower has learnt nothing. A LLaVA folder (`model_type:
        llava`, SigLIP tower: `jaxmm.models.llava_hf`) loads with its own tower and projector.

        `dtype` is the compute and KV-cache dtype ("bfloat16" on GPU). `max_seq_len`
        defaults to the model's `max_position_embeddings` capped at DEFAULT_MAX_SEQ_LEN: the
        cache holds 2 * layers * max_batch * max_seq_len * kv_heads * head_dim elements,
        which at Llama 3.1's 128K context would not fit next to the weights.
        """
        model_dir = os.fspath(model_dir)
        if model_dir.endswith(".gguf"):
            model_name = model_name or os.path.splitext(os.path.basename(model_dir))[0]
            model_dir = gguf.ensure_hf_folder(model_dir)
        if not os.path.exists(os.path.join(model_dir, "config.json")):
            raise FileNotFoundError(f"model_dir {model_dir!r} has no config.json")
        if llava_hf.is_llava_folder(model_dir):
            if mesh is not None or vision is not None:
                raise ValueError("a LLaVA folder loads on one device with its own vision tower")
            return cls._from_llava(
                model_dir, max_seq_len, max_batch, dtype, steps_per_call, prefill_chunk, model_name
            )
        # The tokenizer first: a folder without one fails before minutes of weight loading.
        vocab_size = llm.LLMConfig.from_hf(model_dir).vocab_size
        tokenizer = model_folder.load_tokenizer(model_dir, vocab_size)
        config, params = hf.load_hf(
            model_dir, mesh=mesh, rules=rules, dtype=dtype, param_dtype=param_dtype or dtype
        )
        model = llm.LLM(config)
        max_seq_len = max_seq_len or min(config.max_position_embeddings, DEFAULT_MAX_SEQ_LEN)
        eos = set(config.eos_token_ids) | set(_eos_from_folder(model_dir, tokenizer))
        image_encoder = None
        if vision == "tiny_random":
            from jaxmm.generate import vision as gen_vision

            image_encoder = gen_vision.tiny_random_encoder(
                config, gen_vision.placeholder_token(tokenizer)
            )
        elif vision is not None:
            raise ValueError(f"vision={vision!r}: the only vision tower option is 'tiny_random'")
        return cls(
            model.apply,
            params,
            tokenizer,
            lambda b, n: llm.init_cache(config, b, n, dtype),
            max_seq_len=max_seq_len,
            max_batch=max_batch,
            eos_token_ids=sorted(eos),
            steps_per_call=steps_per_call,
            prefill_chunk=prefill_chunk,
            model_name=model_name or os.path.basename(os.path.normpath(model_dir)),
            mesh=mesh,
            rules=rules,
            cache_logical_axes=llm.KVCache.logical_axes() if mesh is not None else None,
            vocab_size=config.vocab_size,
            image_encoder=image_encoder,
        )

    @classmethod
    def _from_llava(
        cls, model_dir, max_seq_len, max_batch, dtype, steps_per_call, prefill_chunk, model_name
    ) -> Engine:
        """A LLaVA folder: its LM, with its vision tower + projector as the image encoder
        (single device)."""
        from jaxmm.generate import vision as gen_vision

        loaded = llava_hf.load_llava(model_dir, dtype=dtype)
        config = loaded.lm_config
        tokenizer = model_folder.load_tokenizer(model_dir, config.vocab_size)
        eos = set(config.eos_token_ids) | set(_eos_from_folder(model_dir, tokenizer))
        return cls(
            llm.LLM(config).apply,
            loaded.lm_params,
            tokenizer,
            lambda b, n: llm.init_cache(config, b, n, dtype),
            max_seq_len=max_seq_len or min(config.max_position_embeddings, DEFAULT_MAX_SEQ_LEN),
            max_batch=max_batch,
            eos_token_ids=sorted(eos),
            steps_per_call=steps_per_call,
            prefill_chunk=prefill_chunk,
            model_name=model_name or os.path.basename(os.path.normpath(model_dir)),
            vocab_size=config.vocab_size,
            image_encoder=gen_vision.llava_encoder(model_dir, loaded),
        )

    def _context(self) -> contextlib.AbstractContextManager:
        """Mesh + logical-axis rules for sharded models (flax's logical constraints)."""
        stack = contextlib.ExitStack()
        if self._mesh is not None:
            set_mesh = getattr(jax, "set_mesh", None)  # `with mesh:` is deprecated
            stack.enter_context(set_mesh(self._mesh) if set_mesh else self._mesh)
            stack.enter_context(nn.logical_axis_rules(self._rules))
        return stack

    # ------------------------------------------------------------------ prompts
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
        """Render a conversation with the tokenizer's own chat template, ready to continue.

        `continue_final_message`: the last message is an assistant turn to continue, not to
        answer (assistant prefill, e.g. CINGS's `## Context ... ## Answer`; vLLM's option).
        """
        if continue_final_message and (not messages or messages[-1]["role"] != "assistant"):
            raise ValueError("continue_final_message needs an assistant message last")
        ids, images = self.chat_inputs(messages, continue_final_message)
        if images is not None:
            raise ImageInputError("the conversation has image parts: use chat_inputs")
        return ids

    def chat_inputs(
        self, messages: Sequence[Message], continue_final_message: bool = False
    ) -> tuple[list[int], list[np.ndarray] | None]:
        """Prompt ids and images (None without image parts) of a conversation whose contents
        may be OpenAI-style part lists. Each image part becomes `tokens_per_image`
        placeholder ids at its place in the rendered template (text around it is tokenised
        piecewise, as LLaVA processors do around their special image token)."""
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
            self._make_request(p, q, im) for p, q, im in zip(prompts, plist, images, strict=True)
        ]
        self._waiting.extend(reqs)
        return [r.rid for r in reqs]

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

    def _make_request(
        self, prompt: str | Sequence[int], params: GenerationParams, images: Images = None
    ) -> Request:
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
            rid=next(self._ids),
            prompt_ids=prompt_ids,
            params=params,
            max_new=max_new,
            seed=seed % (1 << 32),
            tracker=TextTracker(self.tokenizer, params.stop),
            images=pixels,
        )

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
        for slot, req in enumerate(self._slots):
            if req is not None and req.rid == rid:
                self._slots[slot] = None
                return True
        self._finished.pop(rid, None)
        return False

    def reset(self) -> None:
        """Drop every queued, running and uncollected request and start from a fresh cache
        (used after a failed step, whose donated cache may be gone)."""
        self._waiting.clear()
        self._slots = [None] * self.max_batch
        self._finished.clear()
        with self._context():
            self._cache = self._new_cache()

    def has_work(self) -> bool:
        return bool(self._waiting) or any(r is not None for r in self._slots)

    def step(self) -> list[StreamEvent]:
        """Admit waiting requests into free slots, run one decode call, return text events."""
        events: list[StreamEvent] = []
        free = [i for i, r in enumerate(self._slots) if r is None]
        admitted = [self._waiting.popleft() for _ in free[: len(self._waiting)]]
        if admitted:
            self._admit(free[: len(admitted)], admitted, events)
        active = np.array([r is not None for r in self._slots])
        if not active.any():
            return events
        with self._context():
            tokens, self._cache = self._decode(
                self.params,
                self._cache,
                self._last,
                self._n_gen,
                self._max_new,
                ~active,
                self._seed,
                self._temp,
                self._top_k,
                self._top_p,
                self._eos,
                n_steps=self.steps_per_call,
            )
        tokens = np.asarray(tokens)
        for slot in np.flatnonzero(active):
            req = self._slots[slot]
            for token in tokens[slot]:
                if req.finish_reason is not None or token < 0:
                    break
                self._n_gen[slot] += 1
                self._last[slot] = token
                self._consume(req, int(token), events)
            if req.finish_reason is not None:
                self._slots[slot] = None
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
        """Prefill `reqs` into `slots` with one call.

        The row count is padded to a power of two (capped at max_batch) by repeating the
        first request into its own slot: duplicate scatters write identical rows, so the pad
        costs compute but never corrupts the cache. Lengths are bucketed the same way.
        """
        k = len(reqs)
        k_pad = steps.bucket(k, self.max_batch, minimum=1)
        t_pad = steps.bucket(max(len(r.prompt_ids) for r in reqs), self.max_seq_len)
        if t_pad > self.prefill_chunk:  # whole chunks; writes past the cache end are dropped
            t_pad = -(-t_pad // self.prefill_chunk) * self.prefill_chunk
        rows = reqs + [reqs[0]] * (k_pad - k)
        row_slots = np.array(slots + [slots[0]] * (k_pad - k), np.int32)
        tokens = np.zeros((k_pad, t_pad), np.int32)
        for i, r in enumerate(rows):
            tokens[i, : len(r.prompt_ids)] = r.prompt_ids
        with self._context():
            splice = self._image_splice(rows)
            first, self._cache = self._prefill(
                self.params,
                self._cache,
                row_slots,
                tokens,
                np.array([len(r.prompt_ids) for r in rows], np.int32),
                np.array([r.seed for r in rows], np.uint32),
                np.array([r.params.temperature for r in rows], np.float32),
                np.array([r.params.top_k for r in rows], np.int32),
                np.array([r.params.top_p for r in rows], np.float32),
                splice,
            )
        first = np.asarray(first)
        for i, (slot, req) in enumerate(zip(slots, reqs, strict=True)):
            p = req.params
            self._slots[slot] = req
            self._n_gen[slot] = 1
            self._last[slot] = first[i]
            self._max_new[slot] = req.max_new
            self._seed[slot] = req.seed
            self._temp[slot] = p.temperature
            self._top_k[slot] = p.top_k
            self._top_p[slot] = p.top_p
            self._consume(req, int(first[i]), events)
            if req.finish_reason is not None:
                self._slots[slot] = None

    def _image_splice(self, rows: list[Request]) -> steps.ImageSplice | None:
        """The admitted rows' images encoded in one call (`ImageEncoder.splice`)."""
        if all(r.images is None for r in rows):
            return None
        return self.image_encoder.splice(self._encode_images, [r.images for r in rows])

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


def _eos_from_folder(model_dir: str, tokenizer: Any) -> list[int]:
    """EOS ids from generation_config.json (Llama 3 lists several) plus the tokenizer's."""
    ids: set[int] = set()
    path = os.path.join(model_dir, "generation_config.json")
    if os.path.exists(path):
        with open(path) as f:
            eos = json.load(f).get("eos_token_id")
        if isinstance(eos, int):
            ids.add(eos)
        elif isinstance(eos, list):
            ids.update(int(e) for e in eos)
    if getattr(tokenizer, "eos_token_id", None) is not None:
        ids.add(int(tokenizer.eos_token_id))
    return sorted(ids)
