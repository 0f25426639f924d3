"""Non-overlapping p×p patches <-> token sequences (ViT style, channels-last, row-major).

A patch's token is its pixels flattened as (row, column, channel), so `unpatchify` of a
per-token prediction of size p*p*C lands every value on the pixel it was predicted for.
"""

from __future__ import annotations

from jax import Array


def _check(height: int, width: int, patch: int, what: str) -> None:
    if patch <= 0 or height % patch or width % patch:
        raise ValueError(
            f"{what}: image size {height}x{width} is not divisible by patch size {patch}"
        )


def patchify(images: Array, patch: int) -> Array:
    """[..., H, W, C] -> [..., (H/p)*(W/p), p*p*C]."""
    *batch, height, width, channels = images.shape
    _check(height, width, patch, "patchify")
    h_p, w_p = height // patch, width // patch
    x = images.reshape(*batch, h_p, patch, w_p, patch, channels)
    nb = len(batch)
    x = x.transpose(*range(nb), nb, nb + 2, nb + 1, nb + 3, nb + 4)  # h_p, w_p, p, p, C
    return x.reshape(*batch, h_p * w_p, patch * patch * channels)


def unpatchify(tokens: Array, patch: int, height: int, width: int) -> Array:
    """[..., (H/p)*(W/p), p*p*C] -> [..., H, W, C] (inverse of `patchify`)."""
    _check(height, width, patch, "unpatchify")
    *batch, num_tokens, dim = tokens.shape
    h_p, w_p = height // patch, width // patch
    if num_tokens != h_p * w_p or dim % (patch * patch):
        raise ValueError(
            f"unpatchify: tokens of shape {tokens.shape} do not tile a {height}x{width} image "
            f"with {patch}x{patch} patches"
        )
    channels = dim // (patch * patch)
    x = tokens.reshape(*batch, h_p, w_p, patch, patch, channels)
    nb = len(batch)
    x = x.transpose(*range(nb), nb, nb + 2, nb + 1, nb + 3, nb + 4)  # h_p, p, w_p, p, C
    return x.reshape(*batch, height, width, channels)
