"""Pallas MaxSim kernels (interpret mode on CPU) against their pure-jnp reference twins."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kernels_pallas.maxsim import api
from kernels_pallas.maxsim import reference as ref

# fp32 on CPU: both sides do the same fp32 products; only the summation order differs
# (DESIGN.md tolerances).
VALUE_TOL = dict(atol=1e-5, rtol=1e-5)
GRAD_TOL = dict(atol=1e-4, rtol=1e-4)


def _inputs(seed=0, n_q=3, q_len=5, n_d=7, d_len=20, dim=24, num_modalities=3):
    rng = np.random.default_rng(seed)
    q = rng.normal(size=(n_q, q_len, dim)).astype(np.float32)
    d = rng.normal(size=(n_d, d_len, dim)).astype(np.float32)
    q_mask = rng.random((n_q, q_len)) > 0.3
    q_mask[:, 0] = True
    d_mod = rng.integers(0, num_modalities + 1, size=(n_d, d_len)).astype(np.int32)
    d_mod[1] = 0  # an all-padding document: its scores must be exactly 0
    d_mod[2, :] = np.where(d_mod[2] == 2, 0, d_mod[2])  # a document missing modality 2
    return jnp.asarray(q), jnp.asarray(q_mask), jnp.asarray(d), jnp.asarray(d_mod)


@pytest.mark.parametrize(
    "normalize,blocks",
    [(False, {}), (True, {}), (False, dict(block_q=1)), (True, dict(block_q=1, block_d=4))],
)
def test_maxsim_matches_reference(normalize, blocks):
    """Default blocks (several queries per program) and the single-query layout."""
    q, q_mask, d, d_mod = _inputs()
    d_mask = d_mod > 0
    got = api.maxsim(q, q_mask, d, d_mask, normalize, interpret=True, **blocks)
    want = ref.maxsim(q, q_mask, d, d_mask, normalize)
    assert got.shape == (3, 7) and got.dtype == jnp.float32
    np.testing.assert_allclose(got, want, **VALUE_TOL)
    assert np.all(np.asarray(got)[:, 1] == 0.0)


def test_maxsim_batched_query_blocks():
    """block_q = 8 with 2-token queries (q_len padded so a program has 16 rows)."""
    q, q_mask, d, d_mod = _inputs(seed=1, n_q=6, q_len=2)
    got = api.maxsim(q, q_mask, d, d_mod > 0, interpret=True, block_q=8, block_d=4, block_t=8)
    np.testing.assert_allclose(got, ref.maxsim(q, q_mask, d, d_mod > 0), **VALUE_TOL)


def test_maxsim_bf16_inputs_accumulate_in_fp32():
    q, q_mask, d, d_mod = _inputs(seed=2)
    q16, d16 = q.astype(jnp.bfloat16), d.astype(jnp.bfloat16)
    got = api.maxsim(q16, q_mask, d16, d_mod > 0, interpret=True)
    assert got.dtype == jnp.float32
    # bf16 x bf16 products are exact in fp32, so against the fp32 reference on the same
    # (rounded) values only the fp32 summation order differs.
    want = ref.maxsim(q16.astype(jnp.float32), q_mask, d16.astype(jnp.float32), d_mod > 0)
    np.testing.assert_allclose(got, want, **VALUE_TOL)


def test_modality_scores_and_argmax():
    q, q_mask, d, d_mod = _inputs(seed=3)
    got, got_arg = api.maxsim_modality(q, q_mask, d, d_mod, 3, return_argmax=True, interpret=True)
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


def _cotangent(shape, seed=7):
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape).astype(np.float32))


@pytest.mark.parametrize("normalize", [False, True])
def test_maxsim_gradients_match_reference(normalize):
    q, q_mask, d, d_mod = _inputs(seed=4)
    g = _cotangent((3, 7))

    def loss(fn, q, d):
        return jnp.sum(fn(q, q_mask, d, d_mod > 0, normalize) * g)

    kernel = lambda *a: api.maxsim(*a, interpret=True, block_q=1)
    got = jax.grad(lambda q, d: loss(kernel, q, d), (0, 1))(q, d)
    want = jax.grad(lambda q, d: loss(ref.maxsim, q, d), (0, 1))(q, d)
    for a, b in zip(got, want, strict=True):
        np.testing.assert_allclose(a, b, **GRAD_TOL)


def test_modality_gradients_match_reference():
    q, q_mask, d, d_mod = _inputs(seed=5)
    g = _cotangent((3, 7, 3))

    def loss(q, d, **kw):
        return jnp.sum(api.maxsim_modality(q, q_mask, d, d_mod, 3, **kw) * g)

    got = jax.grad(lambda q, d: loss(q, d, interpret=True), (0, 1))(q, d)
    want = jax.grad(lambda q, d: loss(q, d, impl="reference"), (0, 1))(q, d)
    for a, b in zip(got, want, strict=True):
        np.testing.assert_allclose(a, b, **GRAD_TOL)
    # Gradient flows only through argmax tokens: padding doc tokens get exactly zero.
    assert np.all(np.asarray(got[1])[np.asarray(d_mod) == 0] == 0.0)


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
    got = api.maxsim_packed(q, q_mask, tokens, offsets, interpret=True, block_d=4, **kw)
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
    got = api.maxsim_packed(q, q_mask, tokens, offsets, interpret=True)
    np.testing.assert_allclose(got, ref.maxsim_packed(q, q_mask, tokens, offsets), **VALUE_TOL)


@pytest.mark.parametrize("num_splits,block_q", [(1, 1), (3, 1), (None, 4)])
def test_fused_topk_matches_exhaustive(num_splits, block_q):
    """In-kernel running top-k, one or several document splits, 1 or 4 queries per program."""
    q, q_mask, d, d_mod = _inputs(seed=9, n_d=37)  # 37: not a multiple of block_d
    valid = jnp.asarray(np.arange(37) % 5 != 4)  # every 5th doc is masked out of the search
    got_s, got_i = api.maxsim_topk(
        q, q_mask, d, d_mod > 0, 7, doc_valid=valid, num_splits=num_splits, block_q=block_q,
        interpret=True,
    )  # fmt: skip
    want_s, want_i = ref.maxsim_topk(q, q_mask, d, d_mod > 0, 7, doc_valid=valid)
    np.testing.assert_allclose(got_s, want_s, **VALUE_TOL)
    np.testing.assert_array_equal(got_i, want_i)
    assert not np.any(np.asarray(got_i) % 5 == 4)


def test_streaming_scan_topk_matches_exhaustive():
    """The chunked lax.scan path (CPU reference and k > MAX_FUSED_K)."""
    q, q_mask, d, d_mod = _inputs(seed=12, n_d=11)
    valid = jnp.asarray(np.arange(11) != 4)
    got_s, got_i = api.maxsim_topk(
        q, q_mask, d, d_mod > 0, 5, doc_valid=valid, chunk_docs=4, impl="reference"
    )
    want_s, want_i = ref.maxsim_topk(q, q_mask, d, d_mod > 0, 5, doc_valid=valid)
    np.testing.assert_allclose(got_s, want_s, **VALUE_TOL)
    np.testing.assert_array_equal(got_i, want_i)


def test_streaming_topk_modality_max():
    q, q_mask, d, d_mod = _inputs(seed=10, n_d=9)
    got_s, got_i = api.maxsim_topk(
        q, q_mask, d, d_mod > 0, 3, d_modality=d_mod, num_modalities=3, num_splits=2,
        interpret=True,
    )  # fmt: skip
    full = ref.maxsim_modality(q, q_mask, d, d_mod, 3).max(-1)
    want_s, want_i = jax.lax.top_k(full, 3)
    np.testing.assert_allclose(got_s, want_s, **VALUE_TOL)
    np.testing.assert_array_equal(got_i, want_i)


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


@pytest.mark.gpu
def test_gpu_kernels_bf16_match_fp32_reference():
    """On a GPU the default dispatch runs the compiled Triton kernels."""
    rng = np.random.default_rng(11)
    q = jnp.asarray(rng.normal(size=(8, 32, 128)) / np.sqrt(128), jnp.bfloat16)
    d = jnp.asarray(rng.normal(size=(256, 128, 128)) / np.sqrt(128), jnp.bfloat16)
    q_mask = jnp.asarray(rng.random((8, 32)) > 0.2)
    d_mod = jnp.asarray(rng.integers(0, 5, size=(256, 128)), jnp.int32)
    q32, d32 = q.astype(jnp.float32), d.astype(jnp.float32)
    # DESIGN.md: bf16 on GPU vs the fp32 reference, atol=2e-2 (bf16 rounding of products
    # inside tensor-core dots and a different summation order).
    gpu_tol = dict(atol=2e-2, rtol=0)
    for n_q in (1, 8):  # single-query and batched block layouts
        got = api.maxsim(q[:n_q], q_mask[:n_q], d, d_mod > 0)
        want = ref.maxsim(q32[:n_q], q_mask[:n_q], d32, d_mod > 0)
        np.testing.assert_allclose(got, want, **gpu_tol)
    got, arg = api.maxsim_modality(q, q_mask, d, d_mod, 4, return_argmax=True)
    want = ref.maxsim_modality(q32, q_mask, d32, d_mod, 4)
    np.testing.assert_allclose(got, want, **gpu_tol)
    assert arg.shape == (8, 256, 4, 32)
    offsets = jnp.asarray(np.concatenate([[0], np.cumsum(rng.integers(0, 200, 64))]), jnp.int32)
    tokens = jnp.asarray(rng.normal(size=(int(offsets[-1]), 128)) / np.sqrt(128), jnp.bfloat16)
    np.testing.assert_allclose(
        api.maxsim_packed(q, q_mask, tokens, offsets),
        ref.maxsim_packed(q32, q_mask, tokens.astype(jnp.float32), offsets),
        **gpu_tol,
    )
    top_s, _ = api.maxsim_topk(q, q_mask, d, d_mod > 0, 10)
    want_s, _ = ref.maxsim_topk(q32, q_mask, d32, d_mod > 0, 10)
    np.testing.assert_allclose(top_s, want_s, **gpu_tol)  # ids may swap on near-ties in bf16
    g = jax.grad(lambda q: api.maxsim(q, q_mask, d32, d_mod > 0).sum())(q32)
    g_ref = jax.grad(lambda q: ref.maxsim(q, q_mask, d32, d_mod > 0).sum())(q32)
    np.testing.assert_allclose(g, g_ref, atol=1e-3, rtol=1e-3)  # fp32 inputs: TF32-free dots
