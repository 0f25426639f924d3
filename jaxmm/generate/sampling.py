"""Token sampling: greedy, temperature, top-k and top-p with explicit per-row PRNG keys.

Everything is pure `jnp` and jittable with per-row parameters, so one compiled decode step
serves a batch whose requests ask for different sampling settings. Conventions (shared with
`GenerationParams`): `temperature == 0` is greedy, `top_k == 0` and `top_p >= 1` disable the
filters. Filters are applied in the usual order: temperature, then top-k, then top-p over the
top-k renormalised distribution.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

_NEG_INF = -jnp.inf


def filtered_logits(
    logits: jax.Array, temperature: jax.Array, top_k: jax.Array, top_p: jax.Array
) -> jax.Array:
    """Temperature-scaled logits with filtered-out tokens set to -inf.

    Args:
      logits: [B, V] float.
      temperature: [B] float, > 0 (greedy rows are handled by `sample`, here they are
        treated as temperature 1 so the result stays finite).
      top_k: [B] int, 0 disables.
      top_p: [B] float in (0, 1], 1 disables.
    Returns:
      [B, V] float32 logits whose softmax is the distribution `sample` draws from.
    """
    logits = logits.astype(jnp.float32)
    vocab = logits.shape[-1]
    temperature = jnp.where(temperature > 0, temperature, 1.0).astype(jnp.float32)
    scaled = logits / temperature[:, None]

    # One descending sort serves both filters; ranks are positions in this order.
    order = jnp.argsort(-scaled, axis=-1, stable=True)  # [B, V]
    sorted_logits = jnp.take_along_axis(scaled, order, axis=-1)
    rank = jnp.arange(vocab)[None, :]
    k = jnp.where(top_k > 0, jnp.minimum(top_k, vocab), vocab)
    keep_sorted = rank < k[:, None]

    sorted_probs = jax.nn.softmax(jnp.where(keep_sorted, sorted_logits, _NEG_INF), axis=-1)
    # Nucleus: keep a token if the mass strictly before it is < top_p; the top token is
    # always kept, so no row is ever empty.
    mass_before = jnp.cumsum(sorted_probs, axis=-1) - sorted_probs
    keep_sorted &= (mass_before < top_p[:, None]) | (rank == 0)

    # Scatter the sorted mask back to vocabulary order.
    keep = (
        jnp.zeros_like(keep_sorted).at[jnp.arange(logits.shape[0])[:, None], order].set(keep_sorted)
    )
    return jnp.where(keep, scaled, _NEG_INF)


def sample(
    logits: jax.Array,
    keys: jax.Array,
    temperature: jax.Array,
    top_k: jax.Array,
    top_p: jax.Array,
) -> jax.Array:
    """Draw one token per row.

    Args:
      logits: [B, V].
      keys: [B] typed PRNG keys (or [B, 2] uint32 raw keys), one per row so a row's draw
        does not depend on the other rows of the batch.
      temperature, top_k, top_p: [B] per-row settings (see module docstring).
    Returns:
      [B] int32 tokens; rows with temperature 0 get the argmax.
    """
    greedy = jnp.argmax(logits, axis=-1).astype(jnp.int32)

    def draw(_):
        masked = filtered_logits(logits, temperature, top_k, top_p)
        drawn = jax.vmap(jax.random.categorical)(keys, masked).astype(jnp.int32)
        return jnp.where(temperature > 0, drawn, greedy)

    # An all-greedy batch (the common case for evaluation) skips the full-vocabulary sort.
    return jax.lax.cond(jnp.any(temperature > 0), draw, lambda _: greedy, None)


def step_keys(base_keys: jax.Array, step: jax.Array) -> jax.Array:
    """Per-row keys for decoding step `step[b]` of row b: fold the step into the row's key.

    A request's samples then depend only on its seed and its own step count, not on batch
    composition or on how many steps each jitted call runs.
    """
    return jax.vmap(jax.random.fold_in)(base_keys, step)
