"""Reference points for 4D-LRM's novel view–time synthesis, measured in the same run.

- nearest view: for each target (camera, time) return the input image whose camera direction
  and time are closest (angle / π + |Δt| / 2, both terms in [0, 1]); what a method that only
  copies its inputs achieves.
- mean colour: a flat image of the inputs' mean colour; what predicting no structure achieves.
A reconstruction model is only useful where it beats both.
"""

from __future__ import annotations

import numpy as np


def view_directions(c2w: np.ndarray) -> np.ndarray:
    """Unit vectors from the origin to each camera centre, [V, 3]."""
    pos = np.asarray(c2w)[..., :3, 3]
    return pos / np.maximum(np.linalg.norm(pos, axis=-1, keepdims=True), 1e-9)


def nearest_view_index(in_c2w, in_times, tgt_c2w, tgt_times) -> np.ndarray:
    """For each target, the index of the input nearest in angle and time, [V_tgt]."""
    cos = np.clip(view_directions(tgt_c2w) @ view_directions(in_c2w).T, -1.0, 1.0)
    angle = np.arccos(cos) / np.pi  # [V_tgt, V_in] in [0, 1]
    dt = np.abs(np.asarray(tgt_times)[:, None] - np.asarray(in_times)[None, :]) / 2.0
    return np.argmin(angle + dt, axis=1)


def nearest_view(in_images, in_c2w, in_times, tgt_c2w, tgt_times) -> np.ndarray:
    """Predicted target images [V_tgt, H, W, 3] (inputs must have the targets' size)."""
    return np.asarray(in_images)[nearest_view_index(in_c2w, in_times, tgt_c2w, tgt_times)]


def mean_colour(in_images, num_targets: int) -> np.ndarray:
    """Flat images of the inputs' mean colour, [V_tgt, H, W, 3]."""
    in_images = np.asarray(in_images)
    mean = in_images.reshape(-1, 3).mean(axis=0)
    return np.broadcast_to(mean, (num_targets, *in_images.shape[1:])).copy()
