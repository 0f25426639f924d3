"""Rotary position embeddings (RoPE) with the Llama 3 and linear frequency scalings, and
Qwen2-VL's multimodal M-RoPE (3-D temporal/height/width positions, one per frequency section).

Positions are always passed explicitly (packed sequences reset them per segment; a KV-cache
decode continues them per row), so the tables are computed from `positions`, never from a
static range.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

ROPE_TYPES = ("default", "linear", "llama3")


@dataclasses.dataclass(frozen=True)
class RopeConfig:
    """Rotary settings as in a Hugging Face config (`rope_theta` + `rope_scaling`)."""

    theta: float = 10000.0
    rope_type: str = "default"  # default | linear | llama3
    factor: float = 1.0
    low_freq_factor: float = 1.0  # llama3 only
    high_freq_factor: float = 4.0  # llama3 only
    original_max_positions: int = 8192  # llama3 only
    # M-RoPE (Qwen2/2.5-VL): frequency i (of head_dim // 2) rotates by the temporal, height or
    # width position as its section says; () = ordinary 1-D RoPE.
    mrope_section: tuple[int, ...] = ()

    def __post_init__(self):
        object.__setattr__(self, "mrope_section", tuple(int(s) for s in self.mrope_section))
        if any(s < 0 for s in self.mrope_section):
            raise ValueError(f"mrope_section must be >= 0 entries, got {self.mrope_section}")
        if self.rope_type not in ROPE_TYPES:
            raise ValueError(
                f"rope scaling type {self.rope_type!r} is not supported; supported: {ROPE_TYPES}"
            )
        if self.factor <= 0:
            raise ValueError(f"rope scaling factor must be > 0, got {self.factor}")


def inverse_frequencies(head_dim: int, rope: RopeConfig) -> np.ndarray:
    """float32 [head_dim // 2] inverse frequencies, scaled as the config says.

    Float32 as transformers computes them in torch (`1 / base ** (arange / dim)`), with the
    power rounded correctly from float64: numpy's float32 `**` is one ulp off in ~1 of 6
    entries (5 of SmolLM2's 32), which shifted those rotary angles. This way 757 of 760
    entries (5 thetas x head_dim 16/64/96/128) equal torch's bitwise (torch's own float32
    pow is not always correctly rounded).
    """
    if head_dim % 2:
        raise ValueError(f"rotary embeddings need an even head_dim, got {head_dim}")
    exponents = np.arange(0, head_dim, 2, dtype=np.int64).astype(np.float32) / np.float32(head_dim)
    power = (np.float64(np.float32(rope.theta)) ** exponents.astype(np.float64)).astype(np.float32)
    inv_freq = (np.float32(1.0) / power).astype(np.float32)
    if rope.rope_type == "linear":
        inv_freq = (inv_freq / np.float32(rope.factor)).astype(np.float32)
    elif rope.rope_type == "llama3":
        inv_freq = _llama3_scale(inv_freq, rope)
    return inv_freq


def _llama3_scale(inv_freq: np.ndarray, rope: RopeConfig) -> np.ndarray:
    """Llama 3.1: keep high frequencies, divide low ones by `factor`, blend in between."""
    old_len = float(rope.original_max_positions)
    low_wavelen = old_len / rope.low_freq_factor
    high_wavelen = old_len / rope.high_freq_factor
    wavelen = (2 * math.pi / inv_freq).astype(np.float32)
    scaled = np.where(wavelen > low_wavelen, inv_freq / rope.factor, inv_freq).astype(np.float32)
    smooth = (old_len / wavelen - rope.low_freq_factor) / (
        rope.high_freq_factor - rope.low_freq_factor
    )
    smoothed = (1 - smooth) * scaled / rope.factor + smooth * scaled
    is_medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
    return np.where(is_medium, smoothed, scaled).astype(np.float32)


def rope_cos_sin(
    positions: jax.Array, head_dim: int, rope: RopeConfig, dtype: jnp.dtype = jnp.float32
) -> tuple[jax.Array, jax.Array]:
    """cos, sin tables [..., head_dim] for integer `positions` [...] (angles in float32).

    With `rope.mrope_section`, `positions` is [3, ...] (temporal, height, width) and the
    result [...]: frequency section j takes its angle from position axis j % 3 (transformers'
    `Qwen2_5_VLRotaryEmbedding`); three equal position rows give plain 1-D RoPE.
    """
    inv_freq = jnp.asarray(inverse_frequencies(head_dim, rope))
    angles = positions.astype(jnp.float32)[..., None] * inv_freq
    if rope.mrope_section:
        angles = _mrope_select(angles, rope.mrope_section, head_dim)
    angles = jnp.concatenate([angles, angles], axis=-1)
    return jnp.cos(angles).astype(dtype), jnp.sin(angles).astype(dtype)


def _mrope_select(angles: jax.Array, sections: tuple[int, ...], head_dim: int) -> jax.Array:
    """angles [3, ..., head_dim // 2] -> [..., head_dim // 2], frequency by frequency."""
    if sum(sections) != head_dim // 2:
        raise ValueError(f"mrope_section {sections} must sum to head_dim // 2 = {head_dim // 2}")
    if angles.shape[0] != 3:
        raise ValueError(f"M-RoPE positions must be [3, ...] (t, h, w), got {angles.shape[:-1]}")
    axis = np.concatenate([np.full(s, j % 3, np.int32) for j, s in enumerate(sections)])
    onehot = jnp.asarray(axis[None, :] == np.arange(3)[:, None])  # [3, head_dim // 2]
    onehot = onehot.reshape(3, *(1,) * (angles.ndim - 2), head_dim // 2)
    return jnp.sum(jnp.where(onehot, angles, 0.0), axis=0)


def _rotate_half(x: jax.Array) -> jax.Array:
    x1, x2 = jnp.split(x, 2, axis=-1)
    return jnp.concatenate([-x2, x1], axis=-1)


def apply_rope(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    """Rotates x [B, T, heads, head_dim] by per-token cos/sin [B, T, head_dim] (half-split layout,
    as in the Hugging Face Llama/Qwen2 checkpoints)."""
    cos = cos[:, :, None, :].astype(x.dtype)
    sin = sin[:, :, None, :].astype(x.dtype)
    return x * cos + _rotate_half(x) * sin
