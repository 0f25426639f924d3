"""Patchify layout and round trip."""

import numpy as np
import pytest

from jaxmm.nn.patchify import patchify, unpatchify


def test_token_is_the_pixel_block_row_major():
    rng = np.random.default_rng(0)
    img = rng.normal(size=(2, 3, 16, 24, 5)).astype(np.float32)
    tok = np.asarray(patchify(img, 8))
    assert tok.shape == (2, 3, 2 * 3, 8 * 8 * 5)
    for r in range(2):
        for c in range(3):
            block = img[:, :, r * 8 : (r + 1) * 8, c * 8 : (c + 1) * 8, :].reshape(2, 3, -1)
            np.testing.assert_array_equal(tok[:, :, r * 3 + c], block)
    np.testing.assert_array_equal(np.asarray(unpatchify(tok, 8, 16, 24)), img)


def test_errors_name_the_sizes():
    with pytest.raises(ValueError, match="30x16 is not divisible by patch size 8"):
        patchify(np.zeros((1, 30, 16, 3)), 8)
    with pytest.raises(ValueError, match="do not tile"):
        unpatchify(np.zeros((1, 5, 192)), 8, 16, 16)
