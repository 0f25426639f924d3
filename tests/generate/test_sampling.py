"""Sampling vs an independent numpy implementation of the filtered distribution."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmm.generate import sampling


def _np_filtered_probs(logits, temperature, top_k, top_p):
    """Reference: probabilities of the temperature/top-k/top-p distribution, row by row."""
    out = np.zeros_like(logits, dtype=np.float64)
    for b, row in enumerate(logits.astype(np.float64)):
        z = row / temperature[b]
        order = sorted(range(len(z)), key=lambda i: -z[i])
        if top_k[b] > 0:
            order = order[: top_k[b]]
        p = np.exp(z[order] - z[order].max())
        p /= p.sum()
        kept, mass = [], 0.0
        for i, pi in zip(order, p, strict=True):
            if mass >= top_p[b] and kept:
                break
            kept.append(i)
            mass += pi
        q = np.exp(z[kept] - z[kept].max())
        out[b, kept] = q / q.sum()
    return out


@pytest.fixture(scope="module")
def case():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(6, 40)).astype(np.float32) * 3  # continuous: no ties
    temperature = np.array([1.0, 0.5, 2.0, 0.7, 1.0, 1.3], np.float32)
    top_k = np.array([0, 5, 0, 3, 1, 40], np.int32)
    top_p = np.array([1.0, 1.0, 0.6, 0.9, 0.5, 0.3], np.float32)
    return logits, temperature, top_k, top_p


def test_filtered_distribution_matches_numpy(case):
    logits, temperature, top_k, top_p = case
    got = jax.nn.softmax(
        sampling.filtered_logits(
            jnp.asarray(logits), jnp.asarray(temperature), jnp.asarray(top_k), jnp.asarray(top_p)
        ),
        axis=-1,
    )
    want = _np_filtered_probs(logits, temperature, top_k, top_p)
    # Supports must agree exactly; probabilities to fp32 softmax precision.
    np.testing.assert_array_equal(np.asarray(got) > 0, want > 0)
    np.testing.assert_allclose(np.asarray(got), want, atol=1e-6, rtol=1e-5)


def test_samples_follow_the_filtered_distribution(case):
    """Empirical frequencies of 4000 draws per row match the reference probabilities."""
    logits, temperature, top_k, top_p = case
    n = 4000
    b = logits.shape[0]
    keys = jax.random.split(jax.random.key(1), n * b).reshape(n, b)
    draw = jax.jit(jax.vmap(sampling.sample, in_axes=(None, 0, None, None, None)))
    tokens = np.asarray(draw(logits, keys, temperature, top_k, top_p))  # [n, B]
    want = _np_filtered_probs(logits, temperature, top_k, top_p)
    for row in range(b):
        freq = np.bincount(tokens[:, row], minlength=logits.shape[1]) / n
        assert set(np.flatnonzero(freq)) <= set(np.flatnonzero(want[row]))
        # 4000 draws: binomial std <= 0.008; 0.04 is a 5-sigma bound.
        np.testing.assert_allclose(freq, want[row], atol=0.04)


def test_greedy_rows_take_argmax_and_keys_are_deterministic(case):
    logits, _, top_k, top_p = case
    temperature = np.array([0.0, 1.0, 0.0, 1.0, 0.0, 1.0], np.float32)
    keys = jax.random.split(jax.random.key(7), logits.shape[0])
    sample = jax.jit(sampling.sample)
    a = np.asarray(sample(logits, keys, temperature, top_k, top_p))
    b = np.asarray(sample(logits, keys, temperature, top_k, top_p))
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a[::2], logits[::2].argmax(-1))
    all_greedy = np.asarray(sample(logits, keys, 0 * temperature, top_k, top_p))
    np.testing.assert_array_equal(all_greedy, logits.argmax(-1))  # the no-sort branch
    draws = set()
    for seed in range(5):
        row_keys = jax.random.split(jax.random.key(100 + seed), logits.shape[0])
        draws.add(tuple(np.asarray(sample(logits, row_keys, temperature, top_k, top_p))))
    assert len(draws) > 1  # different keys give different samples on the sampled rows


def test_step_keys_depend_only_on_row_key_and_step():
    base = jax.random.split(jax.random.key(3), 3)
    k1 = sampling.step_keys(base, jnp.array([0, 5, 2]))
    k2 = sampling.step_keys(base[1:2], jnp.array([5]))
    np.testing.assert_array_equal(jax.random.key_data(k1[1]), jax.random.key_data(k2[0]))
    assert not np.array_equal(jax.random.key_data(k1[0]), jax.random.key_data(k1[2]))
