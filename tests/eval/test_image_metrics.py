"""PSNR and SSIM against dm-pix (an independent implementation) and closed forms."""

import numpy as np
import pytest

from jaxmm.eval.image_metrics import psnr, ssim


def test_psnr_closed_form():
    a = np.zeros((2, 4, 4, 3), np.float32)
    b = a + 0.1
    np.testing.assert_allclose(psnr(a, b), 20.0, rtol=1e-5)  # MSE 0.01 -> 20 dB


def test_ssim_matches_dm_pix():
    pix = pytest.importorskip("dm_pix")
    rng = np.random.default_rng(0)
    a = rng.uniform(size=(3, 24, 20, 3)).astype(np.float32)
    b = np.clip(a + rng.normal(scale=0.1, size=a.shape), 0, 1).astype(np.float32)
    # Same window (11, σ=1.5), constants and valid filtering: fp32 rounding only.
    np.testing.assert_allclose(ssim(a, b), pix.ssim(a, b), atol=1e-5)
    np.testing.assert_allclose(psnr(a, b), pix.psnr(a, b), rtol=1e-5)
    np.testing.assert_allclose(ssim(a, a), 1.0, atol=1e-6)


def test_ssim_rejects_tiny_images():
    with pytest.raises(ValueError, match="smaller than the window"):
        ssim(np.zeros((8, 8, 3)), np.zeros((8, 8, 3)))
