"""SSIM and PSNR against scikit-image, an independent implementation that `make test` installs
(the dm-pix comparison in test_image_metrics.py skips without dm-pix).

scikit-image settings equal to jaxmm's: Gaussian weights with sigma 1.5 and win_size 11
(truncate 3.5 gives radius 5), population covariances (use_sample_covariance=False), K1 0.01,
K2 0.03, data_range = max_val, channels last, and the border (win_size - 1) / 2 cropped before
the mean, which equals jaxmm's "valid" filtering. scikit-image runs in float64.

Tolerance (docs/testing.md): fp32 sums of 121 window terms vs float64: 1e-5 on SSIM in [-1, 1];
PSNR 1e-5 relative.
"""

import numpy as np
import pytest

from jaxmm.eval.image_metrics import psnr, ssim

metrics = pytest.importorskip("skimage.metrics")


def _pairs():
    rng = np.random.default_rng(0)
    a = rng.uniform(size=(2, 24, 20, 3))
    noisy = np.clip(a + rng.normal(scale=0.1, size=a.shape), 0, 1)
    # Dark, low-contrast images: local means and variances are of the order of C1 and C2, so
    # a wrong constant moves SSIM far more than 1e-5.
    dark = 0.02 * a
    dark_noisy = np.clip(dark + rng.normal(scale=0.005, size=a.shape), 0, 1)
    smooth = np.cumsum(rng.normal(size=a.shape), axis=1) * 0.05 + 0.5
    blurred = (smooth + np.roll(smooth, 1, axis=2)) / 2
    return {"noisy": (a, noisy), "dark": (dark, dark_noisy), "smooth": (smooth, blurred)}


def _skimage_ssim(x, y, data_range):
    return metrics.structural_similarity(
        x,
        y,
        win_size=11,
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
        data_range=data_range,
        channel_axis=-1,
        K1=0.01,
        K2=0.03,
    )


@pytest.mark.parametrize("name", ["noisy", "dark", "smooth"])
@pytest.mark.parametrize("max_val", [1.0, 255.0])
def test_ssim_and_psnr_match_scikit_image(name, max_val):
    a, b = _pairs()[name]
    a, b = a * max_val, b * max_val
    ours = np.asarray(ssim(a.astype(np.float32), b.astype(np.float32), max_val=max_val))
    theirs = np.array([_skimage_ssim(x, y, max_val) for x, y in zip(a, b, strict=True)])
    assert np.all(theirs < 0.999)  # not the trivial SSIM of identical images
    np.testing.assert_allclose(ours, theirs, atol=1e-5)
    ours_psnr = np.asarray(psnr(a.astype(np.float32), b.astype(np.float32), max_val=max_val))
    theirs_psnr = [
        metrics.peak_signal_noise_ratio(y, x, data_range=max_val) for x, y in zip(a, b, strict=True)
    ]
    np.testing.assert_allclose(ours_psnr, theirs_psnr, rtol=1e-5)
