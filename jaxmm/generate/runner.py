"""The engine's device side: the KV cache (sharded when the model is) and the jitted prefill,
decode and image-encode calls around `steps.py`, each run under the mesh and its logical-axis
rules. It knows rows and slots, not requests' text: `engine.py` schedules, this runs."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxmm import sharding
from jaxmm.generate import steps
from jaxmm.generate.requests import Request
from jaxmm.generate.slots import Slots
from jaxmm.generate.vision import ImageEncoder


class ModelRunner:
    """Owns the cache (donated to every call) and the compiled step functions.

    Arguments are the engine's (see `Engine`); `eos_token_ids` end a row inside the decode
    loop, so a finished row stops costing steps.
    """

    def __init__(
        self,
        apply_fn: Callable[..., tuple[jax.Array, Any]],
        init_cache_fn: Callable[[int, int], Any],
        *,
        max_seq_len: int,
        max_batch: int,
        prefill_chunk: int,
        eos_token_ids: Iterable[int],
        mesh: jax.sharding.Mesh | None = None,
        rules: Sequence[tuple[str, Any]] | None = None,
        cache_logical_axes: Any = None,
        image_encoder: ImageEncoder | None = None,
    ):
        self.max_seq_len = max_seq_len
        self.max_batch = max_batch
        self.prefill_chunk = prefill_chunk
        self._eos = jnp.asarray(list(eos_token_ids) or [-1], jnp.int32)
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
        # Built under jit: allocated on device directly and never aliasing two leaves (the
        # cache is donated every call, so `self.cache` is replaced by each call's result).
        self._new_cache = jax.jit(
            lambda: init_cache_fn(max_batch, max_seq_len), out_shardings=cache_shardings
        )
        with self.context():
            self.cache = self._new_cache()
        batch_axes = steps.cache_batch_axes(init_cache_fn, max_seq_len)
        self._prefill = jax.jit(
            functools.partial(steps.prefill, apply_fn, batch_axes, prefill_chunk),
            donate_argnums=(1,),
        )
        self._decode = jax.jit(
            functools.partial(steps.decode, apply_fn),
            donate_argnums=(1,),
            static_argnames=("n_steps",),
        )
        self.image_encoder = image_encoder
        if image_encoder is not None:
            self._encode_images = jax.jit(image_encoder.encode_fn)

    def context(self) -> contextlib.AbstractContextManager:
        """Mesh + logical-axis rules for sharded models (flax's logical constraints)."""
        stack = contextlib.ExitStack()
        if self._mesh is not None:
            set_mesh = getattr(jax, "set_mesh", None)  # `with mesh:` is deprecated
            stack.enter_context(set_mesh(self._mesh) if set_mesh else self._mesh)
            stack.enter_context(nn.logical_axis_rules(self._rules))
        return stack

    def reset(self) -> None:
        """A fresh cache (after a failed call, whose donated cache may be gone)."""
        with self.context():
            self.cache = self._new_cache()

    def prefill(self, params: Any, slots: list[int], reqs: list[Request]) -> np.ndarray:
        """Prefill `reqs` into `slots` with one call; returns each request's first token.

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
        with self.context():
            splice = self._image_splice(rows)
            first, self.cache = self._prefill(
                params,
                self.cache,
                row_slots,
                tokens,
                np.array([len(r.prompt_ids) for r in rows], np.int32),
                np.array([r.seed for r in rows], np.uint32),
                np.array([r.params.temperature for r in rows], np.float32),
                np.array([r.params.top_k for r in rows], np.int32),
                np.array([r.params.top_p for r in rows], np.float32),
                splice,
            )
        return np.asarray(first)[:k]

    def decode(self, params: Any, slots: Slots, active: np.ndarray, n_steps: int) -> np.ndarray:
        """Up to `n_steps` decode steps of the `active` slots: tokens [max_batch, n_steps],
        -1 where a slot did not decode (inactive, or finished earlier in the call)."""
        with self.context():
            tokens, self.cache = self._decode(
                params,
                self.cache,
                slots.last,
                slots.n_gen,
                slots.max_new,
                ~active,
                slots.seed,
                slots.temp,
                slots.top_k,
                slots.top_p,
                self._eos,
                n_steps=n_steps,
            )
        return np.asarray(tokens)

    def _image_splice(self, rows: list[Request]) -> steps.ImageSplice | None:
        """The admitted rows' images encoded in one call (`ImageEncoder.splice`)."""
        if all(r.images is None for r in rows):
            return None
        return self.image_encoder.splice(self._encode_images, [r.images for r in rows])
