"""Direct preference optimisation objectives on sequence log-probabilities.

Inputs are summed response log-probs of the policy and of the frozen reference for the chosen
and rejected answer of each pair (see `jaxmm.nn.logprobs.sequence_logprobs`). Conventions
follow `trl` so numbers are comparable: `sigmoid` is DPO (Rafailov et al. 2023) with optional
label smoothing (cDPO), `ipo` is IPO (Azar et al. 2023) on per-token averaged log-ratios (as trl
does, confirmed there with the IPO authors), `hinge` is SLiC.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

LOSS_TYPES = ("sigmoid", "ipo", "hinge")


def dpo_loss(
    chosen_logps: jax.Array,
    rejected_logps: jax.Array,
    ref_chosen_logps: jax.Array,
    ref_rejected_logps: jax.Array,
    *,
    beta: float = 0.1,
    loss_type: str = "sigmoid",
    label_smoothing: float = 0.0,
    chosen_tokens: jax.Array | None = None,
    rejected_tokens: jax.Array | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Mean loss over pairs [P] and metrics (rewards are β · policy/reference log-ratios).

    `ipo` needs `chosen_tokens` / `rejected_tokens` (response lengths [P]) for its averaging.
    """
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"dpo_loss: loss_type {loss_type!r} is not one of {LOSS_TYPES}")
    if beta <= 0:
        raise ValueError(f"dpo_loss: beta must be > 0, got {beta}")
    if not 0.0 <= label_smoothing < 0.5:
        raise ValueError(f"dpo_loss: label_smoothing must be in [0, 0.5), got {label_smoothing}")
    chosen_ratio = chosen_logps - ref_chosen_logps
    rejected_ratio = rejected_logps - ref_rejected_logps
    delta = chosen_ratio - rejected_ratio
    if loss_type == "sigmoid":
        per_pair = -(1 - label_smoothing) * jax.nn.log_sigmoid(beta * delta)
        per_pair -= label_smoothing * jax.nn.log_sigmoid(-beta * delta)
    elif loss_type == "hinge":
        per_pair = jax.nn.relu(1 - beta * delta)
    else:
        if chosen_tokens is None or rejected_tokens is None:
            raise ValueError("dpo_loss: loss_type='ipo' needs chosen_tokens and rejected_tokens")
        avg = chosen_ratio / jnp.maximum(chosen_tokens, 1) - rejected_ratio / jnp.maximum(
            rejected_tokens, 1
        )
        per_pair = (avg - 1 / (2 * beta)) ** 2
    chosen_reward = jax.lax.stop_gradient(beta * chosen_ratio)
    rejected_reward = jax.lax.stop_gradient(beta * rejected_ratio)
    metrics = {
        "rewards/chosen": chosen_reward.mean(),
        "rewards/rejected": rejected_reward.mean(),
        "rewards/accuracy": (chosen_reward > rejected_reward).astype(jnp.float32).mean(),
        "rewards/margin": (chosen_reward - rejected_reward).mean(),
    }
    return per_pair.mean(), metrics
