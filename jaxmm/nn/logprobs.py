"""Per-token log-probabilities of given tokens under a language model's logits.

One home for the quantity every LM objective is built from: SFT cross-entropy is its negative,
DPO sums it over a response, GRPO takes ratios of it. Computed in fp32 with `log_softmax`, so
bf16 logits do not lose the small differences these objectives care about.
`chunked_token_logprobs` is the same quantity from the hidden states and the lm head, computed
chunk by chunk so long sequences never materialise the [B, T, vocab] logits.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp


def token_logprobs(logits: jax.Array, targets: jax.Array) -> jax.Array:
    """log p(targets[b, t] | logits[b, t]) -> [B, T] fp32; logits [B, T, V], targets [B, T] int.

    The caller aligns them: `logits[:, t]` must be the prediction for `targets[:, t]` (for a
    causal LM, logits[:, :-1] with tokens[:, 1:]).
    """
    if logits.shape[:-1] != targets.shape:
        raise ValueError(
            f"token_logprobs: logits {logits.shape} must be [*targets.shape, vocab], "
            f"targets {targets.shape}"
        )
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    return jnp.take_along_axis(logp, targets[..., None].astype(jnp.int32), axis=-1)[..., 0]


def sequence_logprobs(
    logits: jax.Array, targets: jax.Array, mask: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """(sum of masked token log-probs [B], number of masked tokens [B]) per row."""
    mask = mask.astype(jnp.float32)
    return (token_logprobs(logits, targets) * mask).sum(-1), mask.sum(-1)


def chunked_token_logprobs(
    head: Callable[[Any, jax.Array], jax.Array],
    head_params: Any,
    hidden: jax.Array,
    targets: jax.Array,
    chunk_tokens: int,
) -> jax.Array:
    """`token_logprobs(head(head_params, hidden), targets)` without ever holding [B, T, V].

    At 16K tokens x 128K vocab the fp32 logits are 8 GB per row. Here the sequence is cut into
    chunks of `chunk_tokens` positions; a `lax.scan` runs the lm head, the log-softmax and the
    target gather per chunk [B, chunk, V], under `jax.checkpoint` so the backward pass recomputes
    each chunk's logits instead of saving them. hidden [B, T, H] (the final-norm output),
    targets [B, T] int -> [B, T] fp32. A T that `chunk_tokens` does not divide is padded with
    zero hidden states whose results are cut off. Pass only the params the head reads: the
    scan carries a gradient accumulator for every leaf of `head_params`.
    """
    b, t = targets.shape
    if hidden.shape[:2] != (b, t):
        raise ValueError(
            f"chunked_token_logprobs: hidden {hidden.shape} must be [*targets.shape, hidden], "
            f"targets {targets.shape}"
        )
    if chunk_tokens < 1:
        raise ValueError(f"chunked_token_logprobs: chunk_tokens={chunk_tokens} must be >= 1")
    size = min(chunk_tokens, t)
    n = -(-t // size)
    if n * size != t:
        hidden = jnp.pad(hidden, ((0, 0), (0, n * size - t), (0, 0)))
        targets = jnp.pad(targets, ((0, 0), (0, n * size - t)))
    xs = (
        hidden.reshape(b, n, size, hidden.shape[-1]).swapaxes(0, 1),
        targets.reshape(b, n, size).swapaxes(0, 1),
    )

    @jax.checkpoint
    def chunk(params, x, y):
        return token_logprobs(head(params, x), y)

    _, logp = jax.lax.scan(lambda carry, xy: (carry, chunk(head_params, *xy)), None, xs)
    return logp.swapaxes(0, 1).reshape(b, n * size)[:, :t]
