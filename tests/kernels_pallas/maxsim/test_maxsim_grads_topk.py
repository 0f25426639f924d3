"""MaxSim kernel gradients (custom_vjp through argmax tokens), fused top-k search, and the
GPU check; interpret mode on CPU against the pure-jnp reference."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from maxsim_inputs import GRAD_TOL, PALLAS_INTERPRET, VALUE_TOL
from maxsim_inputs import make_inputs as _inputs

from kernels_pallas.maxsim import api, padding
from kernels_pallas.maxsim import reference as ref


def _cotangent(shape, seed=7):
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape).astype(np.float32))


@pytest.mark.parametrize("normalize", [False, True])
def test_maxsim_gradients_match_reference(normalize):
    q, q_mask, d, d_mod = _inputs(seed=4)
    g = _cotangent((3, 7))

    def loss(fn, q, d):
        return jnp.sum(fn(q, q_mask, d, d_mod > 0, normalize) * g)

    kernel = lambda *a: api.maxsim(*a, **PALLAS_INTERPRET, block_q=1)
    got = jax.grad(lambda q, d: loss(kernel, q, d), (0, 1))(q, d)
    want = jax.grad(lambda q, d: loss(ref.maxsim, q, d), (0, 1))(q, d)
    for a, b in zip(got, want, strict=True):
        np.testing.assert_allclose(a, b, **GRAD_TOL)


def test_modality_gradients_match_reference():
    q, q_mask, d, d_mod = _inputs(seed=5)
    g = _cotangent((3, 7, 3))

    def loss(q, d, **kw):
        return jnp.sum(api.maxsim_modality(q, q_mask, d, d_mod, 3, **kw) * g)

    got = jax.grad(lambda q, d: loss(q, d, **PALLAS_INTERPRET), (0, 1))(q, d)
    want = jax.grad(lambda q, d: loss(q, d, impl="reference"), (0, 1))(q, d)
    for a, b in zip(got, want, strict=True):
        np.testing.assert_allclose(a, b, **GRAD_TOL)
    # Gradient flows only through argmax tokens: padding doc tokens get exactly zero.
    assert np.all(np.asarray(got[1])[np.asarray(d_mod) == 0] == 0.0)


@pytest.mark.parametrize("num_splits,block_q", [(1, 1), (3, 1), (None, 4)])
def test_fused_topk_matches_exhaustive(num_splits, block_q):
    """In-kernel running top-k, one or several document splits, 1 or 4 queries per program."""
    q, q_mask, d, d_mod = _inputs(seed=9, n_d=37)  # 37: not a multiple of block_d
    valid = jnp.asarray(np.arange(37) % 5 != 4)  # every 5th doc is masked out of the search
    got_s, got_i = api.maxsim_topk(
        q, q_mask, d, d_mod > 0, 7, doc_valid=valid, num_splits=num_splits, block_q=block_q,
        **PALLAS_INTERPRET,
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
        **PALLAS_INTERPRET,
    )  # fmt: skip
    full = ref.maxsim_modality(q, q_mask, d, d_mod, 3).max(-1)
    want_s, want_i = jax.lax.top_k(full, 3)
    np.testing.assert_allclose(got_s, want_s, **VALUE_TOL)
    np.testing.assert_array_equal(got_i, want_i)


def _tie_free(sorted_scores, gap=1e-3):
    """[n_q, k+1] scores best first -> [n_q, k] True where rank j is separated by more than
    `gap` from ranks j-1 and j+1 (there the ids must agree; near-ties may swap)."""
    d = np.abs(np.diff(np.asarray(sorted_scores, np.float64), axis=1))  # [n_q, k]
    before = np.concatenate([np.full((d.shape[0], 1), np.inf), d[:, :-1]], axis=1)
    return (before > gap) & (d > gap)


@pytest.mark.gpu
@pytest.mark.parametrize("schedule", padding.SCHEDULES)
def test_gpu_kernels_bf16_match_fp32_reference(schedule):
    """On a GPU the default dispatch runs the compiled Triton kernels. Inputs are bf16; the
    reference runs in fp32 on the same bf16-rounded values, so every product is exact on both
    sides and only fp32 summation order differs: 1e-4 (docs/testing.md). Ids (argmax tokens,
    top-k docs) must agree wherever the reference has no near-tie (gap > 1e-3). Both scan
    schedules; modality ids random per token (mixed tiles) and in 32-token segments
    (modality-uniform tiles: the persistent kernel's one-pass fold)."""
    kw = dict(schedule=schedule)
    rng = np.random.default_rng(11)
    q = jnp.asarray(rng.normal(size=(8, 32, 128)) / np.sqrt(128), jnp.bfloat16)
    d = jnp.asarray(rng.normal(size=(256, 128, 128)) / np.sqrt(128), jnp.bfloat16)
    q_mask = jnp.asarray(rng.random((8, 32)) > 0.2)
    d_mod = jnp.asarray(rng.integers(0, 5, size=(256, 128)), jnp.int32)
    q32, d32 = q.astype(jnp.float32), d.astype(jnp.float32)
    gpu_tol = dict(atol=1e-4, rtol=1e-5)
    with jax.default_matmul_precision("highest"):
        for n_q in (1, 8):  # single-query and batched block layouts
            got = api.maxsim(q[:n_q], q_mask[:n_q], d, d_mod > 0, **kw)
            want = ref.maxsim(q32[:n_q], q_mask[:n_q], d32, d_mod > 0)
            assert got.dtype == jnp.float32
            np.testing.assert_allclose(got, want, **gpu_tol)
        seg_mod = jnp.where(d_mod > 0, jnp.arange(128)[None] // 32 + 1, 0)
        got = api.maxsim_modality(q, q_mask, d, seg_mod, 4, **kw)
        want = ref.maxsim_modality(q32, q_mask, d32, seg_mod, 4)
        np.testing.assert_allclose(got, want, **gpu_tol)
        got, arg = api.maxsim_modality(q, q_mask, d, d_mod, 4, return_argmax=True, **kw)
        want, want_arg = ref.maxsim_modality(q32, q_mask, d32, d_mod, 4, return_argmax=True)
        np.testing.assert_allclose(got, want, **gpu_tol)
        assert arg.shape == (8, 256, 4, 32)
        # Argmax doc token per (query, doc, modality, query token), compared where the
        # modality is present and the best token beats the runner-up by > 1e-3.
        sims = np.einsum("qid,njd->qnij", np.asarray(q32), np.asarray(d32))  # [q, n, i, j]
        mod = np.asarray(d_mod)
        arg, want_arg = np.asarray(arg), np.asarray(want_arg)
        checked = 0
        for m in range(4):
            sm = np.where((mod == m + 1)[None, :, None, :], sims, -np.inf)
            top2 = -np.sort(-sm, axis=-1)[..., :2]  # [q, n, i, 2]
            clear = np.isfinite(top2[..., 1]) & (top2[..., 0] - top2[..., 1] > 1e-3)
            a, w = arg[:, :, m], want_arg[:, :, m]  # [q, n, i]
            np.testing.assert_array_equal(a[clear], w[clear], err_msg=f"argmax modality {m}")
            checked += int(clear.sum())
        assert checked > arg.size // 2
        offsets = jnp.asarray(np.concatenate([[0], np.cumsum(rng.integers(0, 200, 64))]), jnp.int32)
        tokens = jnp.asarray(rng.normal(size=(int(offsets[-1]), 128)) / np.sqrt(128), jnp.bfloat16)
        np.testing.assert_allclose(
            api.maxsim_packed(q, q_mask, tokens, offsets),
            ref.maxsim_packed(q32, q_mask, tokens.astype(jnp.float32), offsets),
            **gpu_tol,
        )
        top_s, top_i = api.maxsim_topk(q, q_mask, d, d_mod > 0, 10, **kw)
        want_s, want_i = ref.maxsim_topk(q32, q_mask, d32, d_mod > 0, 11)
        np.testing.assert_allclose(top_s, want_s[:, :10], **gpu_tol)
        clear = _tie_free(want_s)
        assert clear.mean() > 0.5
        np.testing.assert_array_equal(
            np.asarray(top_i)[clear], np.asarray(want_i)[:, :10][clear], err_msg="top-k ids"
        )
    g = jax.grad(lambda q: api.maxsim(q, q_mask, d32, d_mod > 0, **kw).sum())(q32)
    g_ref = jax.grad(lambda q: ref.maxsim(q, q_mask, d32, d_mod > 0).sum())(q32)
    np.testing.assert_allclose(g, g_ref, atol=1e-3, rtol=1e-3)  # fp32 inputs: TF32-free dots
