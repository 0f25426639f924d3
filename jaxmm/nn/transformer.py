"""Pre-LayerNorm transformer encoder (the 4D-LRM / GS-LRM backbone).

Bias-free linears and LayerNorms, GeLU MLP (ratio 4), init normal(0.02) with the two residual
output projections scaled by 1/sqrt(2·num_layers) (GPT-2 style) so the residual stream's
variance does not grow with depth. Attention is `jaxmm.nn.attention.attention` (impl "auto":
cuDNN flash attention on GPU in half precision, XLA elsewhere).
Parameters carry logical axes (embed, heads, head_dim, mlp); activations are constrained to
(batch, seq, embed) so the same code runs data-, fsdp- or tensor-parallel from the config rules.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
from jax import Array

from jaxmm.nn.attention import attention

INIT_STD = 0.02
ACT_AXES = ("batch", "seq", "embed")


def _init(std: float, axes: tuple[str | None, ...]):
    return nn.with_logical_partitioning(nn.initializers.normal(std), axes)


def layer_norm(dtype: Any, param_dtype: Any, name: str | None = None) -> nn.LayerNorm:
    return nn.LayerNorm(
        epsilon=1e-5,
        use_bias=False,
        dtype=dtype,
        param_dtype=param_dtype,
        scale_init=nn.with_logical_partitioning(nn.initializers.ones, ("embed",)),
        name=name,
    )


class _Einsum(nn.Module):
    """One bias-free projection `einsum(spec, x, kernel)` with a logically named kernel.

    (nn.DenseGeneral initialises a flattened 2-D kernel and reshapes it, which breaks the
    3-D logical sharding constraint under `jax.set_mesh`; an explicit kernel does not.)
    """

    spec: str
    shape: tuple[int, ...]
    axes: tuple[str | None, ...]
    std: float
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        kernel = self.param("kernel", _init(self.std, self.axes), self.shape, self.param_dtype)
        return jnp.einsum(self.spec, x.astype(self.dtype), kernel.astype(self.dtype))


class SelfAttention(nn.Module):
    num_heads: int
    residual_std: float
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    attention_impl: str = "auto"  # jaxmm.nn.attention impl: auto | reference | xla | cudnn | pallas

    @nn.compact
    def __call__(self, x: Array) -> Array:
        width = x.shape[-1]
        if width % self.num_heads:
            raise ValueError(f"width {width} is not divisible by num_heads {self.num_heads}")
        head_dim = width // self.num_heads
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        shape_in = (width, self.num_heads, head_dim)
        axes_in = ("embed", "heads", "head_dim")

        def proj(name: str) -> Array:
            return _Einsum("...d,dhk->...hk", shape_in, axes_in, INIT_STD, name=name, **kw)(x)

        q, k, v = proj("query"), proj("key"), proj("value")  # [B, S, heads, head_dim]
        out = attention(q, k, v, impl=self.attention_impl)
        return _Einsum(
            "...hk,hkd->...d",
            (self.num_heads, head_dim, width),
            ("heads", "head_dim", "embed"),
            self.residual_std,
            name="out",
            **kw,
        )(out)


class Mlp(nn.Module):
    hidden: int
    residual_std: float
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        width = x.shape[-1]
        h = nn.Dense(
            self.hidden,
            use_bias=False,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            kernel_init=_init(INIT_STD, ("embed", "mlp")),
            name="fc1",
        )(x)
        h = nn.with_logical_constraint(nn.gelu(h, approximate=False), ("batch", "seq", "mlp"))
        return nn.Dense(
            width,
            use_bias=False,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            kernel_init=_init(self.residual_std, ("mlp", "embed")),
            name="fc2",
        )(h)


class EncoderBlock(nn.Module):
    """x + Attn(LN(x)); x + MLP(LN(x)); exact (erf) GeLU, as torch's default."""

    num_heads: int
    num_layers: int  # of the whole stack: sets the residual-projection init scale
    mlp_ratio: int = 4
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    attention_impl: str = "auto"

    @nn.compact
    def __call__(self, x: Array) -> Array:
        residual_std = INIT_STD / math.sqrt(2 * self.num_layers)
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        h = layer_norm(name="ln_attn", **kw)(x)
        x = x + SelfAttention(
            self.num_heads, residual_std, name="attn", attention_impl=self.attention_impl, **kw
        )(h)
        x = nn.with_logical_constraint(x, ACT_AXES)
        h = layer_norm(name="ln_mlp", **kw)(x)
        x = x + Mlp(x.shape[-1] * self.mlp_ratio, residual_std, name="mlp", **kw)(h)
        return nn.with_logical_constraint(x, ACT_AXES)


class Encoder(nn.Module):
    """`num_layers` pre-LN blocks; `remat=True` recomputes each block in the backward pass."""

    num_layers: int
    num_heads: int
    mlp_ratio: int = 4
    remat: bool = False
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    attention_impl: str = "auto"

    @nn.compact
    def __call__(self, x: Array) -> Array:
        block_cls = nn.remat(EncoderBlock) if self.remat else EncoderBlock
        x = nn.with_logical_constraint(x.astype(self.dtype), ACT_AXES)
        for i in range(self.num_layers):
            x = block_cls(
                num_heads=self.num_heads,
                num_layers=self.num_layers,
                mlp_ratio=self.mlp_ratio,
                dtype=self.dtype,
                param_dtype=self.param_dtype,
                attention_impl=self.attention_impl,
                name=f"block_{i}",
            )(x)
        return x


def attention_flops(batch: int, seq: int, width: int) -> float:
    """Forward matmul FLOPs of QKᵀ and AV for one layer (2·B·S²·D each)."""
    return 4.0 * batch * seq * seq * width


def encoder_flops(batch: int, seq: int, width: int, num_layers: int, mlp_ratio: int = 4) -> float:
    """Forward FLOPs of the encoder: 2·params·tokens for the linears plus attention."""
    linear_params = (4 + 2 * mlp_ratio) * width * width
    per_layer = 2.0 * batch * seq * linear_params + attention_flops(batch, seq, width)
    return num_layers * per_layer
