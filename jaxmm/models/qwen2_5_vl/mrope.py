"""M-RoPE positions for a token sequence with images and videos (host-side numpy).

A reimplementation of transformers' `Qwen2_5_VLModel.get_rope_index` (v5) without torch:
text tokens get the same position on all three axes, counting up; the tokens of one image or
video (a run of placeholder tokens) get (t, h, w) grid positions on its merged grid, offset by
the position where the run starts; video time steps are spaced by
`tokens_per_second * second_per_grid_t`. The position after a vision run is the run's start
plus max(h, w) of its merged grid. Positions are data-dependent, so they are computed here,
before the jitted model, like the processor's outputs.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np

TEXT, IMAGE, VIDEO = 0, 1, 2


def token_types(tokens: np.ndarray, image_token_id: int, video_token_id: int) -> np.ndarray:
    """0 text, 1 image placeholder, 2 video placeholder (transformers' `mm_token_type_ids`)."""
    tokens = np.asarray(tokens)
    return np.where(tokens == image_token_id, IMAGE, np.where(tokens == video_token_id, VIDEO, 0))


def vision_positions(
    start: int, grid_thw: Sequence[int], spatial_merge_size: int, time_interval: float
) -> np.ndarray:
    """[3, t * h' * w'] positions of one image/video on its merged grid (h' = h / merge)."""
    t, h, w = (int(grid_thw[0]), *(int(g) // spatial_merge_size for g in grid_thw[1:]))
    # transformers: (arange(t) * interval).long(), a float32 product truncated toward zero.
    pos_t = np.trunc(np.arange(t, dtype=np.float32) * np.float32(time_interval)).astype(np.int64)
    tt, hh, ww = np.meshgrid(pos_t, np.arange(h), np.arange(w), indexing="ij")
    return np.stack([tt.ravel(), hh.ravel(), ww.ravel()]) + start


def rope_index(
    tokens: np.ndarray,
    *,
    image_token_id: int,
    video_token_id: int,
    spatial_merge_size: int,
    tokens_per_second: float,
    image_grid_thw: Sequence[Sequence[int]] | None = None,
    video_grid_thw: Sequence[Sequence[int]] | None = None,
    second_per_grid_ts: Sequence[float] | None = None,
    attention_mask: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Returns (positions [3, B, T] int32, deltas [B] int32).

    Grids are consumed in order across the batch (row 0's images first), as the placeholders
    are. Padding (attention_mask == 0) gets position 0. `deltas` = max position + 1 - real
    length: a decode step at cache length L uses position L + delta on all three axes.
    """
    tokens = np.asarray(tokens)
    if tokens.ndim != 2:
        raise ValueError(f"rope_index: tokens must be [B, T], got {tokens.shape}")
    types = token_types(tokens, image_token_id, video_token_id)
    grids = {
        IMAGE: iter([tuple(g) for g in image_grid_thw or ()]),
        VIDEO: iter([tuple(g) for g in video_grid_thw or ()]),
    }
    seconds = iter(second_per_grid_ts if second_per_grid_ts is not None else itertools.repeat(1))
    positions = np.zeros((3, *tokens.shape), np.int64)
    deltas = []
    for row in range(tokens.shape[0]):
        keep = np.ones(tokens.shape[1], bool) if attention_mask is None else attention_mask[row] > 0
        row_types = types[row][keep]
        pieces, current = [], 0
        for kind, run in itertools.groupby(row_types.tolist()):
            length = len(list(run))
            if kind == TEXT:
                pieces.append(np.broadcast_to(np.arange(length) + current, (3, length)))
                current += length
                continue
            name = "image" if kind == IMAGE else "video"
            grid = next(grids[kind], None)
            if grid is None:
                raise ValueError(f"rope_index: more {name} placeholder runs than {name} grids")
            interval = tokens_per_second * float(next(seconds)) if kind == VIDEO else 1.0
            pos = vision_positions(current, grid, spatial_merge_size, interval)
            if pos.shape[1] != length:
                raise ValueError(
                    f"rope_index: row {row} has a run of {length} {name} placeholders but grid "
                    f"{grid} merges to {pos.shape[1]} tokens"
                )
            pieces.append(pos)
            current += max(grid[1], grid[2]) // spatial_merge_size
        row_pos = np.concatenate(pieces, axis=1) if pieces else np.zeros((3, 0), np.int64)
        positions[:, row, keep] = row_pos
        deltas.append((row_pos.max() + 1 if row_pos.size else 0) - int(keep.sum()))
    return positions.astype(np.int32), np.asarray(deltas, np.int32)


def decode_positions(lengths, deltas):
    """Positions [B, 1] of the next token of each row with `lengths` tokens cached: text after
    the prompt continues at cache length + `rope_index`'s delta, the same on all three axes.
    Works on numpy and jax arrays (inside a jitted decode step)."""
    return (lengths + deltas)[:, None]
