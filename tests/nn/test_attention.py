"""attention(): the XLA path of jax.nn.dot_product_attention vs the einsum reference, both vs a
per-head numpy loop; masks (causal, segments, padding), GQA, gradients, cuDNN on GPU."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmm.nn.attention import attention

# fp32 on CPU, docs/testing.md: values 1e-5 (reduction order only), gradients 1e-4.
VAL_TOL = 1e-5
GRAD_TOL = 1e-4


def _qkv(b=2, t=7, s=7, h=4, hkv=2, d=8, seed=0, dtype=jnp.float32):
    kq, kk, kv = jax.random.split(jax.random.key(seed), 3)
    q = jax.random.normal(kq, (b, t, h, d), dtype)
    k = jax.random.normal(kk, (b, s, hkv, d), dtype)
    v = jax.random.normal(kv, (b, s, hkv, d), dtype)
    return q, k, v


def _numpy_attention(q, k, v, allowed):
    """Independent loop: repeat kv heads, softmax per (batch, head, query) row."""
    q, k, v = (np.asarray(x, np.float64) for x in (q, k, v))
    b, t, h, d = q.shape
    group = h // k.shape[2]
    out = np.zeros_like(q)
    for bi in range(b):
        for hi in range(h):
            kh, vh = k[bi, :, hi // group], v[bi, :, hi // group]
            for ti in range(t):
                logits = kh @ q[bi, ti, hi] / np.sqrt(d)
                if not allowed[bi, ti].any():
                    continue
                logits = np.where(allowed[bi, ti], logits, -np.inf)
                p = np.exp(logits - logits.max())
                out[bi, ti, hi] = (p / p.sum()) @ vh
    return out


def _allowed(b, t, s, causal, seg=None, key_mask=None):
    allowed = np.ones((b, t, s), bool)
    if causal:
        allowed &= np.arange(s)[None, None] <= np.arange(t)[None, :, None] + (s - t)
    if seg is not None:
        allowed &= seg[:, :, None] == seg[:, None, :]
    if key_mask is not None:
        allowed &= key_mask[:, None, :].astype(bool)
    return allowed


SEG = np.array([[1, 1, 1, 2, 2, 3, 3], [1, 1, 1, 1, 1, 1, 2]])
KEY_MASK = np.array([[1, 1, 1, 1, 1, 1, 1], [0, 0, 1, 1, 1, 1, 1]])


@pytest.mark.parametrize(
    ("causal", "seg", "key_mask"),
    [
        (False, None, None),
        (True, None, None),
        (True, SEG, None),
        (True, None, KEY_MASK),
        (False, SEG, KEY_MASK),
    ],
)
@pytest.mark.parametrize("impl", ["reference", "xla"])
def test_matches_numpy_loop(impl, causal, seg, key_mask):
    q, k, v = _qkv()
    out = attention(
        q,
        k,
        v,
        causal=causal,
        segment_ids=None if seg is None else jnp.asarray(seg),
        mask=None if key_mask is None else jnp.asarray(key_mask),
        impl=impl,
    )
    allowed = _allowed(2, 7, 7, causal, seg, key_mask)
    want = _numpy_attention(q, k, v, allowed)
    seen = allowed.any(-1)  # queries with no visible key (left padding) have no defined output
    np.testing.assert_allclose(np.asarray(out)[seen], want[seen], atol=VAL_TOL, rtol=VAL_TOL)
    assert np.isfinite(np.asarray(out)).all()


def test_xla_equals_reference_values_and_gradients():
    q, k, v = _qkv(t=6, s=6, h=6, hkv=3, seed=1)
    seg = jnp.array([[1, 1, 2, 2, 2, 2], [1, 1, 1, 1, 1, 1]])

    def loss(impl):
        def f(q, k, v):
            out = attention(q, k, v, causal=True, segment_ids=seg, impl=impl)
            return jnp.sum(out * jnp.cos(out))

        return f

    g_ref = jax.jit(jax.grad(loss("reference"), argnums=(0, 1, 2)))(q, k, v)
    g_xla = jax.jit(jax.grad(loss("xla"), argnums=(0, 1, 2)))(q, k, v)
    for a, b in zip(g_xla, g_ref, strict=True):
        np.testing.assert_allclose(a, b, atol=GRAD_TOL, rtol=GRAD_TOL)
    np.testing.assert_allclose(
        loss("xla")(q, k, v), loss("reference")(q, k, v), atol=VAL_TOL, rtol=VAL_TOL
    )


@pytest.mark.parametrize("impl", ["reference", "xla"])
def test_causal_query_block_is_bottom_right_aligned(impl):
    """The last 3 queries attending to all 7 keys equal the last 3 rows of full attention."""
    q, k, v = _qkv(seed=2)
    full = attention(q, k, v, causal=True, impl=impl)
    tail = attention(q[:, 4:], k, v, causal=True, impl=impl)
    np.testing.assert_allclose(tail, full[:, 4:], atol=VAL_TOL, rtol=VAL_TOL)


@pytest.mark.parametrize("impl", ["reference", "xla"])
def test_fully_masked_rows_are_finite(impl):
    q, k, v = _qkv(seed=3)
    mask = jnp.zeros((2, 7), bool).at[1].set(True)
    out = attention(q, k, v, mask=mask, impl=impl)
    assert np.isfinite(np.asarray(out)).all()


def test_bad_inputs_raise():
    q, k, v = _qkv()
    with pytest.raises(ValueError, match="not a multiple"):
        attention(q, k[:, :, :1].repeat(3, 2), v[:, :, :1].repeat(3, 2))
    with pytest.raises(ValueError, match="impl"):
        attention(q, k, v, impl="flash")
    with pytest.raises(ValueError, match="mask of shape"):
        attention(q, k, v, mask=jnp.ones((2, 5), bool))
    with pytest.raises(ValueError, match="segment_ids"):
        attention(q, k, v, segment_ids=jnp.ones((2, 5), jnp.int32))


@pytest.mark.gpu
@pytest.mark.parametrize("impl", ["cudnn", "pallas", "auto"])
def test_gpu_flash_bf16_close_to_fp32_reference(impl):
    q, k, v = _qkv(b=2, t=256, s=256, h=8, hkv=2, d=64, seed=4)
    seg = None if impl == "cudnn" else jnp.repeat(jnp.array([[1, 2], [1, 1]]), 128, axis=1)
    want = attention(q, k, v, causal=True, segment_ids=seg, impl="reference")
    bf = [x.astype(jnp.bfloat16) for x in (q, k, v)]
    got = jax.jit(lambda q, k, v: attention(q, k, v, causal=True, segment_ids=seg, impl=impl))(*bf)
    # bf16 inputs vs fp32 reference: docs/testing.md's bf16 tolerance.
    np.testing.assert_allclose(np.asarray(got, np.float32), want, atol=2e-2)


def test_pallas_flash_with_segments_matches_reference_values_and_gradients():
    """jax's Pallas flash kernel (interpret mode on CPU) with packed segments + GQA."""
    q, k, v = _qkv(b=1, t=32, s=32, h=4, hkv=2, d=16, seed=5)
    seg = jnp.array([[1] * 10 + [2] * 15 + [3] * 7])

    def loss(impl):
        def f(q, k, v):
            out = attention(q, k, v, causal=True, segment_ids=seg, impl=impl)
            return jnp.sum(jnp.sin(out)), out

        return f

    (_, got), g_got = jax.value_and_grad(loss("pallas"), argnums=(0, 1, 2), has_aux=True)(q, k, v)
    (_, want), g_want = jax.value_and_grad(loss("reference"), argnums=(0, 1, 2), has_aux=True)(
        q, k, v
    )
    np.testing.assert_allclose(got, want, atol=VAL_TOL, rtol=VAL_TOL)
    for a, b in zip(g_got, g_want, strict=True):
        np.testing.assert_allclose(a, b, atol=GRAD_TOL, rtol=GRAD_TOL)
    with pytest.raises(ValueError, match="multiples of 16"):
        attention(q[:, :20], k[:, :20], v[:, :20], causal=True, impl="pallas")


@pytest.mark.parametrize("impl", ["reference", "xla"])
def test_per_head_mask(impl):
    q, k, v = _qkv(seed=6)
    head_mask = np.random.default_rng(0).random((2, 4, 7, 7)) < 0.7
    head_mask[..., 0] = True  # every query sees at least one key
    out = np.asarray(attention(q, k, v, mask=jnp.asarray(head_mask), impl=impl))
    for h in range(4):
        want = _numpy_attention(
            q[:, :, h : h + 1],
            k[:, :, h // 2 : h // 2 + 1],
            v[:, :, h // 2 : h // 2 + 1],
            head_mask[:, h],
        )
        np.testing.assert_allclose(out[:, :, h : h + 1], want, atol=VAL_TOL, rtol=VAL_TOL)


@pytest.mark.skipif(jax.default_backend() == "gpu", reason="auto is xla only off GPU")
@pytest.mark.parametrize("d", [8, 32, 64, 96])  # 8, 32, 96: d**-0.5 != 1/np.sqrt(d) in float64
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_auto_without_mask_is_bitwise_jax_dot_product_attention(d, dtype):
    """transformer.py calls `jax.nn.dot_product_attention(q, k, v, implementation=None)`;
    switching it to `attention(q, k, v)` must not move a single bit (4D-LRM demo numbers)."""
    q, k, v = _qkv(b=2, t=9, s=9, h=4, hkv=2, d=d, seed=8, dtype=dtype)
    jax_attention = lambda q, k, v: jax.nn.dot_product_attention(q, k, v, implementation=None)
    ours = lambda q, k, v: attention(q, k, v, impl="auto")
    np.testing.assert_array_equal(ours(q, k, v), jax_attention(q, k, v))  # eager
    np.testing.assert_array_equal(jax.jit(ours)(q, k, v), jax.jit(jax_attention)(q, k, v))

    def grad(fn):
        return jax.jit(jax.grad(lambda q: jnp.sum(jnp.sin(fn(q, k, v).astype(jnp.float32)))))(q)

    np.testing.assert_array_equal(grad(ours), grad(jax_attention))
