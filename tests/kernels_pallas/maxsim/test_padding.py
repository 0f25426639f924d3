"""The MaxSim padding contract (`kernels_pallas.maxsim.padding`): the aligned shapes the
kernels need, that padding is a no-op on aligned input, and that a corpus padded by
`MultiVectorIndex` (which uses these functions) needs no re-padding at search time."""

import jax.numpy as jnp
import numpy as np
import pytest

from jaxmm.retrieval import MultiVectorIndex
from kernels_pallas.maxsim import padding
from kernels_pallas.maxsim.padding import KernelConfig


@pytest.mark.parametrize(
    "dim,want", [(1, 16), (8, 16), (16, 16), (17, 32), (96, 128), (128, 128), (129, 256)]
)
def test_padded_dim_is_a_power_of_two_at_least_16(dim, want):
    assert padding.padded_dim(dim) == want


@pytest.mark.parametrize("q_len,block_q", [(1, 1), (5, 1), (20, 1), (5, 4), (32, 8), (3, 16)])
def test_query_rows_fill_a_dot(q_len, block_q):
    """block_q * padded q_len >= 16 (tl.dot's minimum M) and a power of two >= q_len."""
    q_len_p = padding.padded_q_len(q_len, block_q)
    assert q_len_p >= q_len and q_len_p & (q_len_p - 1) == 0
    assert block_q * q_len_p >= padding.MIN_DOT_ROWS


@pytest.mark.parametrize("d_len,block_t,want", [(20, 16, 32), (5, 16, 8), (16, 16, 16)])
def test_doc_len_is_a_multiple_of_the_token_block(d_len, block_t, want):
    assert padding.padded_doc_len(d_len, block_t) == want
    assert want % padding.token_block(d_len, block_t) == 0


def test_pad_docs_and_queries_shapes_and_zero_fill():
    cfg = KernelConfig(block_q=4, block_d=8, block_t=16)
    docs = jnp.ones((13, 20, 24))
    side = jnp.ones((13, 20), jnp.int32)
    d, s, block_t = padding.pad_docs(docs, side, cfg)
    assert (d.shape, s.shape, s.dtype, block_t) == ((16, 32, 32), (16, 32), jnp.int8, 16)
    assert float(d.sum()) == 13 * 20 * 24 and int(s.sum()) == 13 * 20  # padding is zeros
    q, w = padding.pad_queries(jnp.ones((3, 5, 24)), jnp.ones((3, 5)), cfg.block_q)
    assert q.shape == (4, 8, 32) and w.shape == (4, 8) and float(w.sum()) == 15


def test_aligned_input_is_not_copied():
    cfg = KernelConfig()
    docs, side = jnp.ones((16, 32, 128)), jnp.ones((16, 32), jnp.int8)
    d, s, _ = padding.pad_docs(docs, side, cfg)
    assert d is docs and s is side


def test_index_layout_follows_the_contract():
    """MultiVectorIndex.padded / device_arrays pad with the exported rules, so the kernels'
    pad_docs leaves the device corpus as is for both default token blocks."""
    rng = np.random.default_rng(0)
    docs = [rng.normal(size=(n, 24)).astype(np.float32) for n in (3, 40, 7)]
    idx = MultiVectorIndex.build(docs, ["a", "b", "c"])
    d, side, valid = idx.padded(doc_multiple=padding.DOC_BLOCK, dim=padding.padded_dim(24))
    assert d.shape == (8, 64, 32) and valid.sum() == 3
    for block_t in (16, 32):  # padded kernels' and maxsim_packed's default token blocks
        assert padding.padded_doc_len(d.shape[1], block_t) == d.shape[1]
    d_j, side_j = jnp.asarray(d), jnp.asarray(side)
    out_d, out_side, _ = padding.pad_docs(d_j, side_j, KernelConfig())
    assert out_d is d_j and out_side is side_j
