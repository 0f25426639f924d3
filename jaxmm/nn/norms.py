"""RMSNorm (Llama / Qwen2 style): statistics in float32, scale applied in the input dtype."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp


class RMSNorm(nn.Module):
    """y = x / sqrt(mean(x^2) + eps) * scale, with one learned `scale` per feature.

    The normalisation runs in float32 (bf16 squares lose too much precision); the result is
    cast back to the input dtype before the scale, matching the transformers Llama/Qwen2 code.
    """

    eps: float = 1e-6
    param_dtype: jnp.dtype = jnp.float32
    axis_name: str = "embed"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        scale = self.param(
            "scale",
            nn.with_logical_partitioning(nn.initializers.ones, (self.axis_name,)),
            (x.shape[-1],),
            self.param_dtype,
        )
        x32 = x.astype(jnp.float32)
        var = jnp.mean(jnp.square(x32), axis=-1, keepdims=True)
        y = (x32 * jax.lax.rsqrt(var + self.eps)).astype(x.dtype)
        return y * scale.astype(x.dtype)
