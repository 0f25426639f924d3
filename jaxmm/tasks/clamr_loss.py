"""CLaMR training objectives over in-batch per-modality MaxSim scores.

Why per-modality scores: CLaMR ranks by s(q, d) = max_m s_m(q, d), so the loss can also teach
*which* modality should win. Objectives (temperature τ, default 0.02), for query i whose gold
video is d_i and gold modality g_i (ids 1..M):

- `contrastive`: InfoNCE over the [B, B] matrix s(q_i, d_c) (modality-max, or plain token-max
  MaxSim with `scores_token_max`), positive c = i.
- `hard_positive`: as contrastive, but the positive is scored through its gold modality only,
  s_{g_i}(q_i, d_i); the negatives stay s(q_i, d_c), c != i.
- `modality_aware`: hard-positive plus, as extra negatives of query i, every per-modality
  score s_m(q_i, d_c) except the gold (c = i, m = g_i) one, so wrong-modality views of the
  right video are negatives: row i = [s_{g_i}(q_i, d_i), s(q_i, d_c) c != i | s_m(q_i, d_c)
  for all (c, m) != (i, g_i)]. Why the gold-modality positive: with the modality-max as the
  positive, a wrong view that wins the max is both the positive and a negative, and raising
  it *lowers* the loss whenever its softmax weight is < 1/2 (tests/tasks/test_clamr_task.py).

Negatives come from the whole global batch: `in_batch_scores` gathers the documents over the
mesh's batch axes inside a `shard_map` (all_gather, whose transpose scatters the gradients
back), so each device scores its queries against every document of the global batch.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec

from jaxmm import sharding
from kernels_pallas.maxsim import maxsim_modality

OBJECTIVES = ("contrastive", "hard_positive", "modality_aware")


def in_batch_scores(
    q_emb: jax.Array,
    q_mask: jax.Array,
    d_emb: jax.Array,
    d_modality: jax.Array,
    num_modalities: int,
    *,
    normalize: bool = True,
    impl: str = "auto",
) -> jax.Array:
    """Per-modality MaxSim of every query against every document of the global batch:
    [B, B, M]. Under a mesh (`jax.set_mesh`) whose batch axes hold > 1 device, each device
    scores its query shard against the all-gathered documents. `normalize` divides by the
    number of valid query tokens (ColPali's loss does), so τ = 0.02 acts on scores in [-1, 1]."""

    def local(q, qm, d, dm):
        if axes:
            d = jax.lax.all_gather(d, axes, tiled=True)
            dm = jax.lax.all_gather(dm, axes, tiled=True)
        return maxsim_modality(q, qm, d, dm, num_modalities, normalize, impl=impl)

    mesh = jax.sharding.get_abstract_mesh()
    axes: tuple[str, ...] = ()
    if not mesh.empty:
        axes = tuple(a for a in sharding.batch_mesh_axes() if mesh.shape.get(a, 1) > 1)
    n = math.prod(mesh.shape[a] for a in axes) if axes else 1
    if n == 1 or q_emb.shape[0] % n or d_emb.shape[0] % n:
        axes = ()
        return local(q_emb, q_mask, d_emb, d_modality)
    spec = PartitionSpec(axes)
    return jax.shard_map(local, mesh=mesh, in_specs=(spec,) * 4, out_specs=spec, check_vma=False)(
        q_emb, q_mask, d_emb, d_modality
    )


def token_max_modality(d_modality: jax.Array) -> jax.Array:
    """Modality ids collapsed to one (1 = any kept token): plain MaxSim through the same op."""
    return (d_modality > 0).astype(d_modality.dtype)


def _info_nce(logits: jax.Array, target: jax.Array) -> jax.Array:
    """Mean over rows of -log softmax(logits)[target] (logits already divided by τ)."""
    picked = jnp.take_along_axis(logits, target[:, None], axis=1)[:, 0]
    return jnp.mean(jax.nn.logsumexp(logits, axis=1) - picked)


def clamr_loss(
    per_modality: jax.Array,
    gold_modality: jax.Array,
    *,
    objective: str = "modality_aware",
    temperature: float = 0.02,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """per_modality [B, B, M] scores (query i x document c x modality; positives on the
    diagonal); gold_modality [B] ids in 1..M. Returns (loss, metrics)."""
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    b, b2, m = per_modality.shape
    if b != b2:
        raise ValueError(f"per_modality must be [B, B, M], got {per_modality.shape}")
    if objective != "contrastive" and m == 1:
        raise ValueError(f"objective {objective!r} needs per-modality scores (M > 1)")
    rows = jnp.arange(b)
    gold = gold_modality.astype(jnp.int32) - 1  # 0-based
    scores = per_modality.max(-1)  # [B, B]
    logits = scores / temperature
    if objective in ("hard_positive", "modality_aware"):
        logits = logits.at[rows, rows].set(per_modality[rows, rows, gold] / temperature)
    if objective == "modality_aware":
        extra = per_modality.reshape(b, b * m) / temperature
        extra = extra.at[rows, rows * m + gold].set(-jnp.inf)  # the gold view is the positive
        logits = jnp.concatenate([logits, extra], axis=1)
    loss = _info_nce(logits, rows)
    metrics = {
        "loss": loss,
        "in_batch_acc": jnp.mean(jnp.argmax(scores, axis=1) == rows),
        "in_batch_modality_acc": jnp.mean(jnp.argmax(per_modality[rows, rows], -1) == gold),
    }
    return loss, metrics
