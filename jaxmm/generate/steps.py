"""Device side of the engine: jittable prefill and decode over a slot-structured KV cache.

Pure functions of (model apply function, params, cache, per-slot arrays); the engine binds the
model with `functools.partial` and jits them with the cache donated. The cache can be any
pytree with a `lengths` [B] field whose leaves have one batch axis (found by
`cache_batch_axes`), e.g. `jaxmm.models.llm.KVCache` ([L, B, S, kv_heads, head_dim]).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from jaxmm.generate import sampling


def replace_lengths(cache: Any, lengths: jax.Array) -> Any:
    """The cache with its per-row `lengths` replaced (dataclass, flax struct or NamedTuple)."""
    if hasattr(cache, "replace"):  # flax.struct.dataclass
        return cache.replace(lengths=lengths)
    if hasattr(cache, "_replace"):  # NamedTuple
        return cache._replace(lengths=lengths)
    return dataclasses.replace(cache, lengths=lengths)


def bucket(n: int, cap: int, minimum: int = 16) -> int:
    """Smallest power of two >= n (at least `minimum`, at most `cap`): few compiled shapes."""
    return min(cap, max(minimum, 1 << (n - 1).bit_length()))


def cache_batch_axes(init_cache_fn: Callable[[int, int], Any], max_len: int) -> Any:
    """Per-leaf batch axis of the cache, found by comparing batch-1 and batch-2 shapes."""
    one = jax.eval_shape(lambda: init_cache_fn(1, max_len))
    two = jax.eval_shape(lambda: init_cache_fn(2, max_len))

    def axis(a, b):
        diff = [i for i, (x, y) in enumerate(zip(a.shape, b.shape, strict=True)) if x != y]
        if len(diff) != 1:
            raise ValueError(f"cannot find the batch axis of a cache leaf {a.shape}")
        return diff[0]

    return jax.tree.map(axis, one, two)


def prefill(
    apply_fn,
    batch_axes,
    prefill_chunk,
    params,
    cache,
    slots,
    tokens,
    prompt_lens,
    seeds,
    temp,
    top_k,
    top_p,
    images=None,
):
    """Prefill rows `slots` [K] with right-padded `tokens` [K, T]; sample each first token.

    Long prompts go through the model in chunks of `prefill_chunk` tokens (a scan), so
    the [K, chunk, vocab] logits and the attention scores stay bounded; only the logits
    at each row's last prompt token are kept.

    `images`: None, or `ImageSplice(embed_fn, image_token_id, feats, feat_index)` from the
    engine: the n-th placeholder of row b (counted over the whole prompt, so an image may
    straddle chunks) gets `feats[feat_index[b, n]]` in place of its token embedding.
    """
    axes = batch_axes
    k, t = tokens.shape
    chunk = min(t, prefill_chunk)
    rows = jax.tree.map(lambda x, a: jnp.take(x, slots, axis=a), cache, axes)
    rows = replace_lengths(rows, jnp.zeros((k,), jnp.int32))
    n_chunks = t // chunk
    if images is None:
        feat_rows = jnp.zeros((k, t), jnp.int32)  # unused
    else:
        is_image = tokens == images.image_token_id
        nth = jnp.clip(jnp.cumsum(is_image, axis=1) - 1, 0, images.feat_index.shape[1] - 1)
        feat_rows = jnp.take_along_axis(images.feat_index, nth, axis=1)  # [K, T] into feats

    def run_chunk(carry, xs):
        rows, last = carry
        tok_c, feat_c, start = xs  # [K, chunk], [K, chunk], scalar
        positions = jnp.broadcast_to(start + jnp.arange(chunk, dtype=jnp.int32), (k, chunk))
        if images is None:
            logits, rows = apply_fn({"params": params}, tok_c, positions, cache=rows)
        else:
            embeds = images.embed_fn(params, tok_c)
            here = (tok_c == images.image_token_id)[..., None]
            feats = jnp.take(images.feats, feat_c, axis=0).astype(embeds.dtype)
            embeds = jnp.where(here, feats, embeds)
            logits, rows = apply_fn(
                {"params": params}, tok_c, positions, cache=rows, inputs_embeds=embeds
            )
        idx = prompt_lens - 1 - start  # the row's last prompt token, within this chunk
        here = (idx >= 0) & (idx < chunk)
        picked = jnp.take_along_axis(logits, jnp.clip(idx, 0, chunk - 1)[:, None, None], axis=1)[
            :, 0
        ]
        return (rows, jnp.where(here[:, None], picked.astype(last.dtype), last)), None

    chunks = tokens.reshape(k, n_chunks, chunk).transpose(1, 0, 2)
    feat_chunks = feat_rows.reshape(k, n_chunks, chunk).transpose(1, 0, 2)
    starts = jnp.arange(n_chunks, dtype=jnp.int32) * chunk
    vocab = jax.eval_shape(
        lambda: apply_fn({"params": params}, tokens[:, :1], tokens[:, :1], cache=rows)
    )[0].shape[-1]
    last0 = jnp.zeros((k, vocab), jnp.float32)
    (rows, last), _ = jax.lax.scan(run_chunk, (rows, last0), (chunks, feat_chunks, starts))
    # Pad tokens beyond each prompt were written but become "unwritten" again.
    rows = replace_lengths(rows, prompt_lens)
    keys = sampling.step_keys(jax.vmap(jax.random.key)(seeds), jnp.zeros((k,), jnp.int32))
    first = sampling.sample(last, keys, temp, top_k, top_p)

    def scatter(big, r, a):
        index = (slice(None),) * a + (slots,)
        return big.at[index].set(r.astype(big.dtype))

    return first, jax.tree.map(scatter, cache, rows, axes)


@dataclasses.dataclass(frozen=True)
class ImageSplice:
    """Image features for one prefill call: `feats` [F, E] (every admitted image's tokens),
    `feat_index` [K, P] (row b's n-th placeholder reads feats[feat_index[b, n]]). A pytree
    whose `embed_fn` and `image_token_id` are static."""

    embed_fn: Callable[[Any, jax.Array], jax.Array]
    image_token_id: int
    feats: jax.Array
    feat_index: jax.Array


jax.tree_util.register_dataclass(
    ImageSplice, data_fields=["feats", "feat_index"], meta_fields=["embed_fn", "image_token_id"]
)


def decode(
    apply_fn, params, cache, last, n_gen, max_new, done, seed, temp, top_k, top_p, eos, *, n_steps
):
    """Up to `n_steps` decode steps; returns tokens [S, n_steps] (-1 where not decoded)."""
    keys = jax.vmap(jax.random.key)(seed)
    out = jnp.full((last.shape[0], n_steps), -1, jnp.int32)

    def cond(carry):
        i, _, _, _, done, _ = carry
        return (i < n_steps) & ~jnp.all(done)

    def body(carry):
        i, cache, tok, n_gen, done, out = carry
        lengths = cache.lengths
        logits, cache = apply_fn({"params": params}, tok[:, None], lengths[:, None], cache=cache)
        # Finished rows keep their length: nothing they write is ever read.
        cache = replace_lengths(cache, jnp.where(done, lengths, cache.lengths))
        nxt = sampling.sample(logits[:, -1], sampling.step_keys(keys, n_gen), temp, top_k, top_p)
        nxt = jnp.where(done, -1, nxt)
        out = out.at[:, i].set(nxt)
        n_gen = n_gen + (~done).astype(jnp.int32)
        done = done | jnp.isin(nxt, eos) | (n_gen >= max_new)
        return i + 1, cache, jnp.where(nxt < 0, tok, nxt), n_gen, done, out

    carry = (jnp.int32(0), cache, last, n_gen, done, out)
    _, cache, _, _, _, out = jax.lax.while_loop(cond, body, carry)
    return out, cache
