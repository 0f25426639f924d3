"""Padding must never win: top-k where masked-out documents and padding tokens score highest.

In the other MaxSim tests real documents would outrank padding anyway, so a kernel or index
that treated padding as valid would pass them. Here invalid documents (`doc_valid=False`) and
padding tokens (mask 0) are copies of the queries scaled by 10, and the real documents point
away from the queries (negative scores, below the 0 of an all-padding document). Ids are
compared with a numpy brute force, not only shapes. fp32 on CPU: VALUE_TOL (docs/testing.md).
"""

import jax.numpy as jnp
import numpy as np
import pytest
from maxsim_inputs import PALLAS_INTERPRET, VALUE_TOL

from jaxmm.retrieval.index import MultiVectorIndex
from kernels_pallas.maxsim import api
from kernels_pallas.maxsim import reference as ref

N_Q, Q_LEN, N_D, D_LEN, DIM, K = 3, 4, 13, 8, 16, 5


def _inputs(seed=0):
    rng = np.random.default_rng(seed)
    # Queries in the positive orthant, real document tokens in the negative one: every real
    # token similarity, hence every real score, is negative.
    q = np.abs(rng.normal(size=(N_Q, Q_LEN, DIM))).astype(np.float32)
    q_mask = np.ones((N_Q, Q_LEN), bool)
    q_mask[:, -1] = False
    d = -np.abs(rng.normal(size=(N_D, D_LEN, DIM))).astype(np.float32)
    d_mask = rng.random((N_D, D_LEN)) > 0.3
    d_mask[:, 0] = True
    # Padding tokens of real documents: 10x a query token (would dominate if counted).
    d = np.where(d_mask[..., None], d, 10 * q[0, 0]).astype(np.float32)
    valid = np.arange(N_D) % 4 != 1
    d[~valid] = 10 * q[0, 0]  # invalid documents: the best possible match for query 0
    return q, q_mask, d, d_mask, valid


def _brute_force(q, q_mask, d, d_mask, valid):
    sims = np.einsum("qid,njd->qnij", q.astype(np.float64), d.astype(np.float64))
    sims = np.where(d_mask[None, :, None, :], sims, -np.inf).max(-1)
    scores = np.where(q_mask[:, None, :], sims, 0.0).sum(-1)  # [n_q, n_d]
    scores = np.where(valid[None], scores, -np.inf)
    order = np.argsort(-scores, axis=1, kind="stable")[:, :K]
    return np.take_along_axis(scores, order, 1), order


@pytest.mark.parametrize(
    "kw",
    [
        dict(impl="reference", chunk_docs=4),
        dict(impl="reference"),
        dict(PALLAS_INTERPRET, num_splits=1),
        dict(PALLAS_INTERPRET, num_splits=3),
        dict(PALLAS_INTERPRET, schedule="persistent", num_splits=1),
        dict(PALLAS_INTERPRET, schedule="persistent", num_splits=3, block_d=1, block_t=16),
    ],
    ids=[
        "scan-chunked",
        "reference",
        "pallas-1split",
        "pallas-3splits",
        "persistent-1program",
        "persistent-3programs",
    ],
)
def test_invalid_docs_and_padding_tokens_never_outrank_real_docs(kw):
    q, q_mask, d, d_mask, valid = _inputs()
    want_s, want_i = _brute_force(q, q_mask, d, d_mask, valid)
    assert np.all(want_s < 0)  # every real score is below what padding would give
    got_s, got_i = api.maxsim_topk(
        jnp.asarray(q), jnp.asarray(q_mask), jnp.asarray(d), jnp.asarray(d_mask), K,
        doc_valid=jnp.asarray(valid), **kw,
    )  # fmt: skip
    np.testing.assert_array_equal(np.asarray(got_i), want_i)
    np.testing.assert_allclose(np.asarray(got_s), want_s, **VALUE_TOL)
    ref_s, ref_i = ref.maxsim_topk(
        jnp.asarray(q), jnp.asarray(q_mask), jnp.asarray(d), jnp.asarray(d_mask), K,
        doc_valid=jnp.asarray(valid),
    )  # fmt: skip
    np.testing.assert_array_equal(np.asarray(got_i), np.asarray(ref_i))


@pytest.mark.parametrize("impl", ["reference", "pallas"])
def test_index_search_never_returns_padding_documents(impl):
    """MultiVectorIndex pads the corpus to whole kernel blocks on every device; the padding
    documents score 0, above every real document here, so they must be masked out."""
    q, q_mask, d, d_mask, valid = _inputs(seed=1)
    d, d_mask = d[valid], d_mask[valid]  # real documents only (padding tokens inside kept)
    valid = np.ones(len(d), bool)
    ids = [f"doc{i}" for i in range(len(d))]
    index = MultiVectorIndex.build(d, ids, doc_mask=d_mask)
    scores, got = index.search(
        q, K, q_mask, impl=impl, interpret=True if impl == "pallas" else None
    )
    want_s, want_i = _brute_force(q, q_mask, d, d_mask, valid)
    assert np.all(want_s < 0)
    assert got == [[ids[i] for i in row] for row in want_i]
    np.testing.assert_allclose(scores, want_s, **VALUE_TOL)
