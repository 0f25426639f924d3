"""Pallas MaxSim kernels (interpret mode on CPU) against their pure-jnp reference twins."""

import jax.numpy as jnp
import numpy as np
import pytest
from maxsim_inputs import PALLAS_INTERPRET, VALUE_TOL
from maxsim_inputs import make_inputs as _inputs

from kernels_pallas.maxsim import api
from kernels_pallas.maxsim import reference as ref


@pytest.mark.parametrize(
    "normalize,blocks",
    [(False, {}), (True, {}), (False, dict(block_q=1)), (True, dict(block_q=1, block_d=4))],
)
def test_maxsim_matches_reference(normalize, blocks):
    """Default blocks (several queries per program) and the single-query layout."""
    q, q_mask, d, d_mod = _inputs()
    d_mask = d_mod > 0
    got = api.maxsim(q, q_mask, d, d_mask, normalize, **PALLAS_INTERPRET, **blocks)
    want = ref.maxsim(q, q_mask, d, d_mask, normalize)
    assert got.shape == (3, 7) and got.dtype == jnp.float32
    np.testing.assert_allclose(got, want, **VALUE_TOL)
    assert np.all(np.asarray(got)[:, 1] == 0.0)


def test_maxsim_batched_query_blocks():
    """block_q = 8 with 2-token queries (q_len padded so a program has 16 rows)."""
    q, q_mask, d, d_mod = _inputs(seed=1, n_q=6, q_len=2)
    got = api.maxsim(q, q_mask, d, d_mod > 0, **PALLAS_INTERPRET, block_q=8, block_d=4, block_t=8)
    np.testing.assert_allclose(got, ref.maxsim(q, q_mask, d, d_mod > 0), **VALUE_TOL)


def test_maxsim_bf16_inputs_accumulate_in_fp32():
    q, q_mask, d, d_mod = _inputs(seed=2)
    q16, d16 = q.astype(jnp.bfloat16), d.astype(jnp.bfloat16)
    got = api.maxsim(q16, q_mask, d16, d_mod > 0, **PALLAS_INTERPRET)
    assert got.dtype == jnp.float32
    # bf16 x bf16 products are exact in fp32, so against the fp32 reference on the same
    # (rounded) values only the fp32 summation order differs.
    want = ref.maxsim(q16.astype(jnp.float32), q_mask, d16.astype(jnp.float32), d_mod > 0)
    np.testing.assert_allclose(got, want, **VALUE_TOL)


def test_modality_scores_and_argmax():
    q, q_mask, d, d_mod = _inputs(seed=3)
    got, got_arg = api.maxsim_modality(
        q, q_mask, d, d_mod, 3, return_argmax=True, **PALLAS_INTERPRET
    )
    want, want_arg = ref.maxsim_modality(q, q_mask, d, d_mod, 3, return_argmax=True)
    assert got.shape == (3, 7, 3) and got_arg.shape == (3, 7, 3, 5)
    np.testing.assert_allclose(got, want, **VALUE_TOL)
    np.testing.assert_array_equal(got_arg, want_arg)
    assert np.all(np.asarray(got)[:, 2, 1] == 0.0)  # doc 2 has no modality-2 tokens
    # The modality max over per-modality scores equals plain MaxSim only when a single
    # modality holds the best token for every query token, so check the true identity:
    # plain MaxSim >= modality-max.
    plain = ref.maxsim(q, q_mask, d, d_mod > 0)
    assert np.all(np.asarray(plain) >= np.asarray(got.max(-1)) - 1e-5)


@pytest.mark.parametrize("with_modality", [False, True])
def test_packed_matches_reference(with_modality):
    rng = np.random.default_rng(6)
    q, q_mask, _, _ = _inputs(seed=6)
    # Lengths include an empty doc and a last doc that ends at T (exercises window clamping).
    offsets = jnp.asarray(np.cumsum([0, 3, 0, 37, 5, 1, 9]), jnp.int32)
    total = int(offsets[-1])
    tokens = jnp.asarray(rng.normal(size=(total, 24)).astype(np.float32))
    mod = jnp.asarray(rng.integers(1, 4, size=(total,)).astype(np.int32))
    kw = dict(doc_modality=mod, num_modalities=3) if with_modality else {}
    got = api.maxsim_packed(q, q_mask, tokens, offsets, **PALLAS_INTERPRET, block_d=4, **kw)
    want = ref.maxsim_packed(q, q_mask, tokens, offsets, **kw)
    np.testing.assert_allclose(got, want, **VALUE_TOL)
    # Packed == padded on the same documents.
    if not with_modality:
        lens = np.diff(np.asarray(offsets))
        padded = np.zeros((len(lens), lens.max(), 24), np.float32)
        for i, (o, n) in enumerate(zip(np.asarray(offsets)[:-1], lens, strict=True)):
            padded[i, :n] = np.asarray(tokens)[o : o + n]
        d_mask = np.arange(lens.max())[None] < lens[:, None]
        np.testing.assert_allclose(
            got, ref.maxsim(q, q_mask, jnp.asarray(padded), jnp.asarray(d_mask)), **VALUE_TOL
        )


def test_packed_fewer_tokens_than_a_block():
    q, q_mask, _, _ = _inputs(seed=8)
    tokens = jnp.asarray(np.random.default_rng(8).normal(size=(5, 24)).astype(np.float32))
    offsets = jnp.asarray([0, 2, 5], jnp.int32)
    got = api.maxsim_packed(q, q_mask, tokens, offsets, **PALLAS_INTERPRET)
    np.testing.assert_allclose(got, ref.maxsim_packed(q, q_mask, tokens, offsets), **VALUE_TOL)


def test_bad_inputs_raise_clear_errors():
    q, q_mask, d, d_mod = _inputs()
    with pytest.raises(ValueError, match="dim mismatch"):
        api.maxsim(q, q_mask, d[..., :8], d_mod > 0)
    with pytest.raises(ValueError, match="d_mask shape"):
        api.maxsim(q, q_mask, d, (d_mod > 0)[:, :3])
    with pytest.raises(ValueError, match="q_mask shape"):
        api.maxsim(q, q_mask[:, :2], d, d_mod > 0)
    with pytest.raises(ValueError, match="k must be"):
        api.maxsim_topk(q, q_mask, d, d_mod > 0, 99)
    with pytest.raises(ValueError, match="impl must be"):
        api.maxsim(q, q_mask, d, d_mod > 0, impl="triton")
