"""The 3DGS optimizer of `gs_fit`: per-parameter Adam learning rates (exponentially decaying
for positions), progressive SH degree and adaptive density control, as one optax
transformation so that all of it runs inside the trainer's jitted step and its state
(gradient statistics, RNG, Adam moments) is checkpointed with the train state.

The trainer applies `params + updates`; densification rewrites whole slots of the capacity
buffer, so on a densification step the update is (new params − params) and the Adam moments
of every rewritten slot restart at zero (as 3DGS restarts them for new Gaussians).
Leaves `alive` and `probe` are not optimised: `alive` changes only by densification, and
`probe` (zero, [views, C, 2]) exists for its gradient, the view-space positional gradient.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import optax

from jaxmm.gaussians import density
from jaxmm.gaussians.sh import num_rest

FROZEN = ("alive", "probe")
ROTATIONS = ("quats", "q_left", "q_right")


class FitOptState(NamedTuple):
    inner: Any
    step: jax.Array  # [] int32
    grad_sum: jax.Array  # [C] Σ view-space gradient norms since the last densification
    grad_seen: jax.Array  # [C] views that saw each Gaussian
    key: jax.Array  # uint32 key data


def learning_rates(m: ml_collections.ConfigDict, extent: float, num_steps: int) -> dict:
    """Per-leaf optax schedules; positions decay exponentially from `lr.means` to
    `lr.means_final` (× scene extent) over the run, as in 3DGS."""
    pos = optax.exponential_decay(
        m.lr.means * extent,
        transition_steps=max(num_steps, 1),
        decay_rate=m.lr.means_final / m.lr.means,
    )
    rot = m.lr.rotation
    return {
        "means": pos,
        "log_scales": m.lr.log_scales,
        "quats": rot,
        "q_left": rot,
        "q_right": rot,
        "opacity_logits": m.lr.opacity_logits,
        "sh_dc": m.lr.sh_dc,
        "sh_rest": m.lr.sh_dc / 20.0,
    }


def sh_band_mask(step: jax.Array, every: int, max_degree: int, k: int) -> jax.Array:
    """[k] 1.0 for the rest coefficients of the active degree min(step // every, max)."""
    degree = jnp.minimum(step // max(every, 1), max_degree)
    return (jnp.arange(k) < (degree + 1) ** 2 - 1).astype(jnp.float32)


def _reset_moments(inner, changed: jax.Array):
    cap = changed.shape[0]

    def reset(x):
        if not hasattr(x, "ndim") or x.ndim == 0 or x.shape[0] != cap:
            return x
        return jnp.where(changed.reshape((cap,) + (1,) * (x.ndim - 1)), 0.0, x)

    return jax.tree.map(reset, inner)


def make(
    m: ml_collections.ConfigDict,
    *,
    num_steps: int,
    extent: float,
    rotation: density.RotationFn,
    image_size: int,
    views_per_step: int,
) -> optax.GradientTransformation:
    """The whole optimizer from `config.model` (see configs/gs_fit.py for each key)."""
    lrs = learning_rates(m, extent, num_steps)
    d = m.densify

    def label(path, _):
        return str(path[0].key)

    txs = {k: optax.adam(v, eps=1e-15) for k, v in lrs.items()}
    txs.update({k: optax.set_to_zero() for k in FROZEN})

    def inner_tx(params):
        return optax.multi_transform(txs, jax.tree_util.tree_map_with_path(label, params))

    # 3DGS thresholds its gradient in NDC units of one view's mean loss: ×(size/2) for pixels
    # → NDC, ×views since our loss averages over `views_per_step` views.
    grad_scale = 0.5 * image_size * views_per_step

    def init(params):
        cap = params["alive"].shape[0]
        return FitOptState(
            inner=inner_tx(params).init(params),
            step=jnp.zeros((), jnp.int32),
            grad_sum=jnp.zeros((cap,), jnp.float32),
            grad_seen=jnp.zeros((cap,), jnp.float32),
            key=jax.random.key_data(jax.random.key(int(d.seed))),
        )

    def update(grads, state, params):
        step = state.step
        grads = dict(grads)
        if "sh_rest" in grads:
            mask = sh_band_mask(step, m.sh_degree_every, m.sh_degree, grads["sh_rest"].shape[1])
            grads["sh_rest"] = grads["sh_rest"] * mask[None, :, None]
        norms, seen = density.view_space_grad(grads["probe"] * grad_scale)
        active = (step >= d.start) & (step < d.stop)
        grad_sum = state.grad_sum + jnp.where(active, norms, 0.0)
        grad_seen = state.grad_seen + jnp.where(active, seen, 0.0)
        updates, inner = inner_tx(params).update(grads, state.inner, params)
        new = optax.apply_updates(params, updates)
        done = step + 1
        key = jax.random.wrap_key_data(state.key)
        key, sub = jax.random.split(key)

        def densify(args):
            p, inner, _, _ = args
            avg = grad_sum / jnp.maximum(grad_seen, 1.0)
            p, changed, _ = density.densify_and_prune(
                p, avg, sub, rotation,
                grad_threshold=d.grad_threshold,
                dense_scale=d.percent_dense * extent,
                min_opacity=d.min_opacity,
                max_scale=d.max_scale * extent if d.max_scale else None,
            )  # fmt: skip
            zeros = jnp.zeros_like(grad_sum)
            return p, _reset_moments(inner, changed), zeros, zeros

        densify_now = active & (done >= d.start + d.every) & (done % d.every == 0)
        new, inner, grad_sum, grad_seen = jax.lax.cond(
            densify_now, densify, lambda a: a, (new, inner, grad_sum, grad_seen)
        )

        def reset(args):
            p, inner = args
            p = density.reset_opacity(p, d.reset_ceiling)
            changed = jnp.ones_like(p["alive"], bool)
            sub_inner = _reset_moments(inner, changed)
            # only the opacity moments restart: take them from sub_inner
            return p, _merge_opacity(inner, sub_inner, p)

        reset_now = active & (d.reset_every > 0) & (done % max(d.reset_every, 1) == 0)
        new, inner = jax.lax.cond(reset_now, reset, lambda a: a, (new, inner))
        updates = jax.tree.map(lambda n, p: n - p, new, params)
        return updates, FitOptState(inner, done, grad_sum, grad_seen, jax.random.key_data(key))

    def _merge_opacity(inner, reset_inner, params):
        del params
        # multi_transform keeps one inner state per label: replace the opacity group's.
        states = dict(inner.inner_states)
        states["opacity_logits"] = reset_inner.inner_states["opacity_logits"]
        return inner._replace(inner_states=states)

    return optax.GradientTransformation(init, update)


def num_sh_rest(m: ml_collections.ConfigDict) -> int:
    return num_rest(int(m.sh_degree))
