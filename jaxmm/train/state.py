"""The train state: one pytree holding everything a resumed run needs (bar the data iterator)."""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp


@flax.struct.dataclass
class TrainState:
    step: jax.Array  # int32 scalar: number of optimizer steps taken (skipped ones included)
    params: Any
    opt_state: Any
    rng: jax.Array  # raw uint32 key data; per-step keys are fold_in(rng, step)
    nonfinite_consecutive: jax.Array  # int32: skipped steps in a row (NaN/inf guard)
    nonfinite_total: jax.Array  # int32: skipped steps over the whole run


def create(params: Any, opt_state: Any, rng: jax.Array) -> TrainState:
    zero = jnp.zeros((), jnp.int32)
    return TrainState(
        step=zero,
        params=params,
        opt_state=opt_state,
        rng=rng,
        nonfinite_consecutive=zero,
        nonfinite_total=zero,
    )
