"""Image quality metrics for novel-view synthesis: PSNR, SSIM (Wang et al. 2004).

Images are float [..., H, W, 3] in [0, 1]. SSIM uses the standard 11×11 Gaussian window
(σ = 1.5), K1 = 0.01, K2 = 0.03, "valid" filtering, averaged over pixels and channels — the
settings of the 3DGS/LRM evaluation scripts. LPIPS (learned weights, read from a local file)
is in `jaxmm.eval.lpips`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import Array


def mse(pred: Array, target: Array) -> Array:
    return jnp.mean((pred - target) ** 2, axis=(-3, -2, -1))


def psnr(pred: Array, target: Array, max_val: float = 1.0) -> Array:
    """Per image [...]: 10·log10(max² / MSE)."""
    return 10.0 * jnp.log10(max_val**2 / jnp.maximum(mse(pred, target), 1e-10))


def _gaussian_window(size: int, sigma: float) -> Array:
    x = jnp.arange(size, dtype=jnp.float32) - (size - 1) / 2.0
    w = jnp.exp(-0.5 * (x / sigma) ** 2)
    return w / jnp.sum(w)


def _blur(x: Array, window: Array) -> Array:
    """Separable 'valid' filtering over H and W of [N, H, W, C]."""
    k = window.shape[0]

    def conv1d(img, axis):
        n = img.shape[axis] - k + 1
        slices = [jax.lax.slice_in_dim(img, i, i + n, axis=axis) * window[i] for i in range(k)]
        return sum(slices)

    return conv1d(conv1d(x, 1), 2)


def ssim(
    pred: Array,
    target: Array,
    max_val: float = 1.0,
    window_size: int = 11,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
) -> Array:
    """Per image [...] mean SSIM."""
    lead = pred.shape[:-3]
    if pred.shape[-3] < window_size or pred.shape[-2] < window_size:
        raise ValueError(
            f"ssim: images {pred.shape[-3:]} are smaller than the window "
            f"{window_size}x{window_size}"
        )
    x = pred.reshape(-1, *pred.shape[-3:]).astype(jnp.float32)
    y = target.reshape(-1, *target.shape[-3:]).astype(jnp.float32)
    w = _gaussian_window(window_size, sigma)
    mu_x, mu_y = _blur(x, w), _blur(y, w)
    sxx = _blur(x * x, w) - mu_x**2
    syy = _blur(y * y, w) - mu_y**2
    sxy = _blur(x * y, w) - mu_x * mu_y
    c1, c2 = (k1 * max_val) ** 2, (k2 * max_val) ** 2
    num = (2 * mu_x * mu_y + c1) * (2 * sxy + c2)
    den = (mu_x**2 + mu_y**2 + c1) * (sxx + syy + c2)
    return jnp.mean(num / den, axis=(-3, -2, -1)).reshape(lead)
