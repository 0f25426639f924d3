"""Group relative policy optimisation: group-normalised advantages and the clipped objective.

GRPO (Shao et al. 2024, DeepSeekMath) samples G answers per prompt, scores them with a reward,
and uses each answer's reward standardised within its group as the advantage of every one of
its tokens; the policy gradient is PPO's clipped ratio objective plus β · KL to the reference,
estimated per token with the k3 estimator exp(r) - r - 1, r = log π_ref - log π (Schulman's
"Approximating KL divergence"). Normalisations follow `trl` so numbers are comparable:
`grpo` averages tokens within each answer then answers; `bnpo` averages all tokens of the
batch; `dr_grpo` divides by answers × max completion length (Dr. GRPO).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

SCALES = ("group", "batch", "none")
NORMS = ("grpo", "bnpo", "dr_grpo")


def group_advantages(rewards: jax.Array, group_size: int, scale: str = "group") -> jax.Array:
    """Advantages [N] for rewards [N] laid out as consecutive groups of `group_size` answers.

    reward − group mean, divided by (std + 1e-4) of the group (`group`), of the whole batch
    (`batch`), or not at all (`none`); std is the unbiased one, as trl uses.
    """
    if scale not in SCALES:
        raise ValueError(f"group_advantages: scale {scale!r} is not one of {SCALES}")
    n = rewards.shape[0]
    if group_size < 2 or n % group_size:
        raise ValueError(
            f"group_advantages: {n} rewards do not split into groups of {group_size} (need >= 2)"
        )
    groups = rewards.reshape(-1, group_size).astype(jnp.float32)
    centred = (groups - groups.mean(axis=1, keepdims=True)).reshape(n)
    if scale == "none":
        return centred
    if scale == "group":
        std = jnp.repeat(groups.std(axis=1, ddof=1), group_size)
    else:
        std = jnp.full((n,), rewards.astype(jnp.float32).std(ddof=1))
    return centred / (std + 1e-4)


def grpo_loss(
    logps: jax.Array,
    old_logps: jax.Array,
    advantages: jax.Array,
    mask: jax.Array,
    ref_logps: jax.Array | None = None,
    *,
    beta: float = 0.04,
    epsilon_low: float = 0.2,
    epsilon_high: float = 0.2,
    norm: str = "grpo",
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Scalar loss and metrics. logps / old_logps / ref_logps / mask: [N, T] over answer tokens;
    advantages [N]. `old_logps` are the sampling policy's (no gradient flows through them)."""
    if norm not in NORMS:
        raise ValueError(f"grpo_loss: norm {norm!r} is not one of {NORMS}")
    if beta > 0 and ref_logps is None:
        raise ValueError("grpo_loss: beta > 0 needs ref_logps (or set beta=0)")
    mask = mask.astype(jnp.float32)
    old_logps = jax.lax.stop_gradient(old_logps)
    ratio = jnp.exp(logps - old_logps)
    adv = advantages[:, None]
    clipped = jnp.clip(ratio, 1 - epsilon_low, 1 + epsilon_high)
    per_token = -jnp.minimum(ratio * adv, clipped * adv)
    metrics = {}
    if beta > 0:
        r = jax.lax.stop_gradient(ref_logps) - logps
        kl = jnp.exp(r) - r - 1
        per_token = per_token + beta * kl
        metrics["kl"] = (kl * mask).sum() / jnp.maximum(mask.sum(), 1)
    if norm == "grpo":
        loss = ((per_token * mask).sum(-1) / jnp.maximum(mask.sum(-1), 1)).mean()
    elif norm == "bnpo":
        loss = (per_token * mask).sum() / jnp.maximum(mask.sum(), 1)
    else:
        loss = (per_token * mask).sum() / (mask.shape[0] * mask.shape[1])
    low = (ratio < 1 - epsilon_low) & (adv < 0)
    high = (ratio > 1 + epsilon_high) & (adv > 0)
    metrics["clip_ratio"] = ((low | high) * mask).sum() / jnp.maximum(mask.sum(), 1)
    return loss, metrics
