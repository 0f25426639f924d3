"""Per-token log-probabilities of given tokens under a language model's logits.

One home for the quantity every LM objective is built from: SFT cross-entropy is its negative,
DPO sums it over a response, GRPO takes ratios of it. Computed in fp32 with `log_softmax`, so
bf16 logits do not lose the small differences these objectives care about.
"""

from __future__ import annotations

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
