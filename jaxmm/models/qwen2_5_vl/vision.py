"""The Qwen2.5-VL vision tower: patches of 14 px x 2 frames -> ViT with 2-D RoPE, window
attention (full attention at `fullatt_block_indexes`), RMSNorm, SwiGLU -> 2x2 patch merger.

Input is the processor's `pixel_values` [N, C * tp * p * p] (one row per patch, patches of each
image in block-major order: each 2x2 merge group is 4 consecutive rows) and a `VisionLayout`
computed on the host from the grids (`vision_layout`): the window permutation, the attention
segments and the rotary positions. The tower packs all images and videos of a batch into one
sequence; attention never crosses a frame (full layers) or a window (windowed layers), via the
shared attention function's `segment_ids`. Output: merged features [N / 4, out_hidden_size]
in the input order, one per placeholder token.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from jaxmm.models.qwen2_5_vl.config import Qwen25VisionConfig
from jaxmm.nn.attention import attention
from jaxmm.nn.lora import Linear
from jaxmm.nn.norms import RMSNorm
from jaxmm.nn.rotary import RopeConfig, apply_rope, inverse_frequencies


@flax.struct.dataclass
class VisionLayout:
    """Host-computed index arrays for one packed set of grids (N patches, N / 4 merge units).

    window_index [N/4]: merge unit at each position of the window-ordered sequence;
    window_segments / frame_segments [N]: attention segment of each window-ordered patch for the
    windowed / full-attention layers; positions [N, 2]: (h, w) patch coordinates in input order.
    """

    window_index: jax.Array
    window_segments: jax.Array
    frame_segments: jax.Array
    positions: jax.Array

    @property
    def num_patches(self) -> int:
        return self.positions.shape[0]


def grid_positions(t: int, h: int, w: int, merge: int) -> np.ndarray:
    """[t * h * w, 2] (row, col) of each patch in block-major order: merge x merge groups in
    raster order, patches inside a group in raster order (the processor's patch order)."""
    hh, ww = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    shape = (h // merge, merge, w // merge, merge)
    hh = hh.reshape(shape).transpose(0, 2, 1, 3).ravel()
    ww = ww.reshape(shape).transpose(0, 2, 1, 3).ravel()
    return np.tile(np.stack([hh, ww], -1), (t, 1))


def vision_layout(grid_thw: Sequence[Sequence[int]], config: Qwen25VisionConfig) -> VisionLayout:
    """The layout of images/videos with patch grids `grid_thw` [(t, h, w), ...] packed in
    order (transformers' `get_vision_window_index` + `get_vision_cu_seqlens`)."""
    merge, unit = config.spatial_merge_size, config.merge_unit
    win = config.window_size // merge // config.patch_size  # window side in merged tokens
    window_index, window_of_unit, frame_of_unit, positions = [], [], [], []
    units_before = windows_before = frames_before = 0
    for grid in grid_thw:
        t, h, w = (int(g) for g in grid)
        if t < 1 or h % merge or w % merge or h < 1 or w < 1:
            raise ValueError(
                f"vision_layout: grid {tuple(grid)} must be t >= 1 and h, w positive "
                f"multiples of spatial_merge_size {merge}"
            )
        gh, gw = h // merge, w // merge
        ids = np.arange(t * gh * gw).reshape(t, gh, gw)
        nwh, nww = -(-gh // win), -(-gw // win)
        padded = np.full((t, nwh * win, nww * win), -1)
        padded[:, :gh, :gw] = ids
        windows = padded.reshape(t, nwh, win, nww, win).transpose(0, 1, 3, 2, 4)
        windows = windows.reshape(t * nwh * nww, win * win)
        for k, members in enumerate(windows):
            members = members[members >= 0]
            window_index.append(members + units_before)
            window_of_unit.append(np.full(len(members), windows_before + k))
            frame_of_unit.append(frames_before + members // (gh * gw))
        positions.append(grid_positions(t, h, w, merge))
        units_before += t * gh * gw
        windows_before += len(windows)
        frames_before += t
    if not positions:
        raise ValueError("vision_layout: no grids")
    return VisionLayout(
        window_index=np.concatenate(window_index).astype(np.int32),
        window_segments=np.repeat(np.concatenate(window_of_unit), unit).astype(np.int32),
        frame_segments=np.repeat(np.concatenate(frame_of_unit), unit).astype(np.int32),
        positions=np.concatenate(positions).astype(np.int32),
    )


def _linear(cfg: Qwen25VisionConfig, features, axes, name, in_axes=1, bias=True) -> Linear:
    return Linear(
        features=tuple(features),
        kernel_axes=tuple(axes),
        in_axes=in_axes,
        use_bias=bias,
        dtype=jnp.dtype(cfg.dtype),
        param_dtype=jnp.dtype(cfg.param_dtype),
        name=name,
    )


def _norm(cfg: Qwen25VisionConfig, name: str) -> RMSNorm:
    return RMSNorm(cfg.rms_norm_eps, jnp.dtype(cfg.param_dtype), name=name)


def vision_cos_sin(positions: jax.Array, config: Qwen25VisionConfig) -> tuple[jax.Array, ...]:
    """2-D rotary tables [N, head_dim]: the first head_dim / 4 frequencies (of head_dim / 2)
    rotate by the row, the next by the column, then the half-split duplicate."""
    inv_freq = jnp.asarray(inverse_frequencies(config.head_dim // 2, RopeConfig(config.rope_theta)))
    angles = positions.astype(jnp.float32)[..., None] * inv_freq  # [N, 2, head_dim / 4]
    angles = angles.reshape(positions.shape[0], -1)  # [h freqs, w freqs]
    angles = jnp.concatenate([angles, angles], axis=-1)
    return jnp.cos(angles), jnp.sin(angles)


class VisionBlock(nn.Module):
    config: Qwen25VisionConfig

    @nn.compact
    def __call__(self, x, cos, sin, segments):
        """x [1, N, E]; cos/sin [1, N, head_dim]; segments [1, N] (attention never crosses)."""
        cfg = self.config
        h, d = cfg.num_heads, cfg.head_dim
        y = _norm(cfg, "norm1")(x)
        qkv = _linear(cfg, (3, h, d), ("embed", None, "heads", "head_dim"), "qkv")(y)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        # Rotated in float32 as transformers does, then back to the compute dtype.
        q = apply_rope(q.astype(jnp.float32), cos, sin).astype(v.dtype)
        k = apply_rope(k.astype(jnp.float32), cos, sin).astype(v.dtype)
        out = attention(q, k, v, segment_ids=segments, impl=cfg.attention_impl)
        x = x + _linear(cfg, (cfg.hidden_size,), ("heads", "head_dim", "embed"), "proj", 2)(out)
        y = _norm(cfg, "norm2")(x)
        gate = _linear(cfg, (cfg.intermediate_size,), ("embed", "mlp"), "gate_proj")(y)
        up = _linear(cfg, (cfg.intermediate_size,), ("embed", "mlp"), "up_proj")(y)
        down = _linear(cfg, (cfg.hidden_size,), ("mlp", "embed"), "down_proj")
        return nn.with_logical_constraint(x + down(nn.silu(gate) * up), (None, "seq", "embed"))


class PatchMerger(nn.Module):
    """RMSNorm, then each 2x2 group of patches (4 consecutive rows) -> Linear, GELU, Linear."""

    config: Qwen25VisionConfig

    @nn.compact
    def __call__(self, x):
        cfg = self.config
        wide = cfg.hidden_size * cfg.merge_unit
        x = _norm(cfg, "ln_q")(x).reshape(-1, wide)
        x = _linear(cfg, (wide,), ("mlp", None), "fc1")(x)
        x = nn.gelu(x, approximate=False)  # torch nn.GELU(): the exact erf form
        return _linear(cfg, (cfg.out_hidden_size,), (None, "embed"), "fc2")(x)


class VisionTower(nn.Module):
    """pixel_values [N, patch_dim] + VisionLayout -> merged features [N / 4, out_hidden_size]."""

    config: Qwen25VisionConfig

    @nn.compact
    def __call__(self, pixel_values: jax.Array, layout: VisionLayout) -> jax.Array:
        cfg = self.config
        n = pixel_values.shape[0]
        if pixel_values.ndim != 2 or pixel_values.shape[1] != cfg.patch_dim:
            raise ValueError(
                f"VisionTower: pixel_values {pixel_values.shape} must be [N, {cfg.patch_dim}] "
                f"(channels x temporal_patch x patch x patch)"
            )
        if layout.num_patches != n or n % cfg.merge_unit:
            raise ValueError(
                f"VisionTower: {n} patches but the layout's grids hold {layout.num_patches}"
            )
        patches = pixel_values.astype(jnp.dtype(cfg.dtype)).reshape(
            n, cfg.in_channels, cfg.temporal_patch_size, cfg.patch_size, cfg.patch_size
        )
        # Conv3d with kernel = stride = patch: a dense layer over the flattened patch.
        embed = _linear(
            cfg, (cfg.hidden_size,), (None, None, None, None, "embed"), "patch_embed", 4, False
        )
        x = embed(patches)

        def to_windows(a):  # input order -> window order, in whole merge units
            a = a.reshape(n // cfg.merge_unit, cfg.merge_unit, *a.shape[1:])
            return a[layout.window_index].reshape(n, *a.shape[2:])

        x = to_windows(x)[None]
        cos, sin = (to_windows(a)[None] for a in vision_cos_sin(layout.positions, cfg))
        window_segments = layout.window_segments[None]
        frame_segments = layout.frame_segments[None]
        for i in range(cfg.depth):
            full = i in cfg.fullatt_block_indexes
            segments = frame_segments if full else window_segments
            x = VisionBlock(cfg, name=f"blocks_{i}")(x, cos, sin, segments)
        merged = PatchMerger(cfg, name="merger")(x[0])
        return merged[jnp.argsort(layout.window_index)]
