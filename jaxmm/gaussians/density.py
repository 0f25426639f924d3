"""Adaptive density control (3DGS) on a fixed-capacity buffer with an alive mask, under jit.

Why a capacity buffer and not a host-side resize: every array keeps its shape, so the train
step compiles once and densification runs inside it (a `lax.cond` in the optimizer), with no
host round trip, re-jit or optimizer-state surgery between phases; the cost is that dead slots
are carried through projection (they are culled there: opacity 0 gives no extent) and that the
buffer size is fixed up front (`capacity`), so growth stops when it is full (counted, never
silent: `DensifyStats.refused`).

Parameters are a dict of raw arrays with a leading capacity axis C: `means` [C, D],
`log_scales` [C, D] (D = 3, or 4 for 4D Gaussians), `opacity_logits` [C] and `alive` [C]
(float 0/1); any other leaf with a leading C axis (rotations, SH) is copied along with its
Gaussian, leaves without one are left alone. A dead slot is
made invisible by `apply_alive` (opacity 0) before rendering.
"""

from __future__ import annotations

from collections.abc import Callable

import flax.struct
import jax
import jax.numpy as jnp

RotationFn = Callable[[dict], jax.Array]  # raw params -> [C, D, D] rotation per Gaussian


@flax.struct.dataclass
class DensifyStats:
    cloned: jax.Array  # [] int32
    split: jax.Array  # [] int32
    pruned: jax.Array  # [] int32
    refused: jax.Array  # [] int32 requests that found no free slot (buffer full)
    alive: jax.Array  # [] int32 after the step


def apply_alive(opacities: jax.Array, alive: jax.Array) -> jax.Array:
    """Activated opacities with dead slots at exactly 0 (the projection culls o < 1/255)."""
    return jnp.where(alive > 0.5, opacities, 0.0)


def _free_slots(alive: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Indices of dead slots in ascending order (padded with C) and their count."""
    c = alive.shape[0]
    dead = alive <= 0.5
    (idx,) = jnp.nonzero(dead, size=c, fill_value=c)
    return idx, jnp.sum(dead).astype(jnp.int32)


def densify_and_prune(
    params: dict,
    view_grad: jax.Array,
    key: jax.Array,
    rotation: RotationFn,
    *,
    grad_threshold: float,
    dense_scale: float,
    min_opacity: float,
    max_scale: float | None,
    split_shrink: float = 1.6,
) -> tuple[dict, jax.Array, DensifyStats]:
    """One 3DGS densification: clone small / split large Gaussians whose mean view-space
    positional gradient `view_grad` [C] is ≥ `grad_threshold`, then prune transparent ones
    (opacity < `min_opacity`) and huge ones (max scale > `max_scale`, world units).

    Clone copies a Gaussian into a free slot (max scale ≤ `dense_scale`); split replaces a
    larger one by two samples from it with scales / `split_shrink` (one in place, one in a
    free slot). Free slots go to requests in index order; the rest are refused.
    Returns (params, changed [C] bool: slots whose optimizer moments must restart, stats).
    """
    alive = params["alive"] > 0.5
    cap = alive.shape[0]
    scales = jnp.exp(params["log_scales"])
    big = jnp.max(scales, axis=-1) > dense_scale
    want = alive & (view_grad >= grad_threshold)
    clone, split = want & ~big, want & big
    free_idx, num_free = _free_slots(params["alive"])
    rank = jnp.cumsum(want.astype(jnp.int32)) - 1
    accepted = want & (rank < num_free)
    dest = jnp.where(accepted, free_idx[jnp.clip(rank, 0, cap - 1)], cap)  # cap = dropped

    # Two samples from each split Gaussian: N(0, S) in its frame, rotated to the world.
    rot = rotation(params)  # [C, D, D]
    noise = jax.random.normal(key, (2,) + scales.shape)
    offsets = jnp.einsum("cij,scj->sci", rot, noise * scales[None])
    do_split = split & accepted
    shrunk = params["log_scales"] - jnp.log(split_shrink)

    def at_split(x, value):  # only called on per-Gaussian leaves
        mask = do_split.reshape((cap,) + (1,) * (x.ndim - 1))
        return jnp.where(mask, value, x)

    source = dict(params)  # what a new slot receives (clone: a copy; split: sample 2)
    source["means"] = at_split(params["means"], params["means"] + offsets[1])
    source["log_scales"] = at_split(params["log_scales"], shrunk)
    out = dict(params)  # split originals become sample 1
    out["means"] = at_split(params["means"], params["means"] + offsets[0])
    out["log_scales"] = at_split(params["log_scales"], shrunk)
    out = {
        k: v.at[dest].set(source[k], mode="drop") if _per_gaussian(v, cap) else v
        for k, v in out.items()
    }
    new = jnp.zeros((cap,), bool).at[dest].set(True, mode="drop")

    # Prune (new Gaussians included, as in 3DGS).
    opac = jax.nn.sigmoid(out["opacity_logits"])
    alive_now = out["alive"] > 0.5
    prune = alive_now & (opac < min_opacity)
    if max_scale is not None:
        prune |= alive_now & (jnp.max(jnp.exp(out["log_scales"]), axis=-1) > max_scale)
    out["alive"] = jnp.where(prune, 0.0, out["alive"])
    changed = new | do_split | prune
    stats = DensifyStats(
        cloned=jnp.sum(clone & accepted).astype(jnp.int32),
        split=jnp.sum(do_split).astype(jnp.int32),
        pruned=jnp.sum(prune).astype(jnp.int32),
        refused=jnp.sum(want & ~accepted).astype(jnp.int32),
        alive=jnp.sum(out["alive"] > 0.5).astype(jnp.int32),
    )
    return out, changed, stats


def _per_gaussian(x, cap: int) -> bool:
    """Leaves with a leading capacity axis move with their Gaussian; others (e.g. a
    [views, C, 2] gradient probe) are left alone."""
    return x.ndim >= 1 and x.shape[0] == cap


def reset_opacity(params: dict, ceiling: float = 0.01) -> dict:
    """3DGS's periodic opacity reset: opacities clamped to ≤ `ceiling` (as logits)."""
    logit = jnp.log(ceiling) - jnp.log1p(-ceiling)
    return dict(params, opacity_logits=jnp.minimum(params["opacity_logits"], logit))


def view_space_grad(probe_grads: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Per-view screen-space mean gradients [V, C, 2] -> (Σ_v ‖g_v‖ [C], views seen [C]).

    A view counts for a Gaussian when its gradient is non-zero (it touched a pixel)."""
    norms = jnp.linalg.norm(probe_grads, axis=-1)
    seen = norms > 0
    return jnp.sum(norms, axis=0), jnp.sum(seen, axis=0).astype(jnp.float32)


def with_screen_probe(
    means3: jax.Array, probe: jax.Array, c2w: jax.Array, fx: jax.Array, fy: jax.Array
) -> jax.Array:
    """means3 [C, 3] moved by `probe` [C, 2] pixels on the image plane of camera `c2w`.

    `probe` is zero, so the render is unchanged; its gradient is the loss gradient w.r.t.
    each Gaussian's projected 2D mean (u = fx·x/z: a shift of z/fx along the camera's x axis
    moves u by one pixel), the signal 3DGS densifies by."""
    rot = jax.lax.stop_gradient(c2w[:3, :3])
    z = jax.lax.stop_gradient((means3 - c2w[:3, 3]) @ rot[:, 2])
    cam_shift = jnp.stack([probe[:, 0] * z / fx, probe[:, 1] * z / fy], -1)
    return means3 + cam_shift @ rot[:, :2].T
