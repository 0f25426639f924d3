"""DPO / GRPO objectives and token log-probs against independent numpy implementations."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmm.nn.logprobs import sequence_logprobs, token_logprobs
from jaxmm.tasks.dpo_loss import dpo_loss
from jaxmm.tasks.grpo_loss import group_advantages, grpo_loss


def _log_sigmoid(x):
    return -np.logaddexp(0.0, -x)


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


def test_token_logprobs_by_hand():
    logits = jnp.array([[[0.0, np.log(3.0)], [5.0, 5.0]]])  # p = [1/4, 3/4], [1/2, 1/2]
    got = token_logprobs(logits, jnp.array([[1, 0]]))
    np.testing.assert_allclose(got, [[np.log(0.75), np.log(0.5)]], rtol=1e-6)
    total, count = sequence_logprobs(logits, jnp.array([[0, 0]]), jnp.array([[1, 0]]))
    np.testing.assert_allclose(total, [np.log(0.25)], rtol=1e-6)
    np.testing.assert_allclose(count, [1.0])
    with pytest.raises(ValueError, match=r"must be \[\*targets.shape, vocab\]"):
        token_logprobs(logits, jnp.array([[1, 0, 0]]))


def _pairs(seed=0, p=6):
    rng = np.random.default_rng(seed)
    return [rng.normal(-20, 5, p).astype(np.float32) for _ in range(4)]


@pytest.mark.parametrize("smoothing", [0.0, 0.2])
def test_dpo_sigmoid_loss_and_gradient(smoothing):
    pc, pr, rc, rr = _pairs()
    beta = 0.3
    delta = (pc - rc) - (pr - rr)
    want = np.mean(
        -(1 - smoothing) * _log_sigmoid(beta * delta) - smoothing * _log_sigmoid(-beta * delta)
    )
    loss, metrics = dpo_loss(pc, pr, rc, rr, beta=beta, label_smoothing=smoothing)
    np.testing.assert_allclose(loss, want, rtol=1e-5)
    # dL/d chosen = (-(1-e) beta sigmoid(-beta delta) + e beta sigmoid(beta delta)) / P
    d_delta = (
        -(1 - smoothing) * beta * _sigmoid(-beta * delta)
        + smoothing * beta * _sigmoid(beta * delta)
    ) / len(delta)
    grads = jax.grad(
        lambda c, r: dpo_loss(c, r, rc, rr, beta=beta, label_smoothing=smoothing)[0], (0, 1)
    )(pc, pr)
    np.testing.assert_allclose(grads[0], d_delta, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(grads[1], -d_delta, rtol=1e-4, atol=1e-7)
    chosen_r, rejected_r = beta * (pc - rc), beta * (pr - rr)
    np.testing.assert_allclose(metrics["rewards/accuracy"], np.mean(chosen_r > rejected_r))
    np.testing.assert_allclose(metrics["rewards/margin"], np.mean(chosen_r - rejected_r), rtol=1e-5)
    np.testing.assert_allclose(metrics["rewards/chosen"], chosen_r.mean(), rtol=1e-5)


def test_dpo_ipo_and_hinge():
    pc, pr, rc, rr = _pairs(1)
    nc, nr = np.array([3, 7, 1, 9, 4, 2.0]), np.array([5, 2, 8, 1, 6, 3.0])
    beta = 0.5
    avg = (pc - rc) / nc - (pr - rr) / nr
    loss, _ = dpo_loss(
        pc, pr, rc, rr, beta=beta, loss_type="ipo", chosen_tokens=nc, rejected_tokens=nr
    )
    np.testing.assert_allclose(loss, np.mean((avg - 1 / (2 * beta)) ** 2), rtol=1e-5)
    delta = (pc - rc) - (pr - rr)
    hinge, _ = dpo_loss(pc, pr, rc, rr, beta=beta, loss_type="hinge")
    np.testing.assert_allclose(hinge, np.mean(np.maximum(0, 1 - beta * delta)), rtol=1e-5)


def test_dpo_named_errors():
    pc, pr, rc, rr = _pairs()
    with pytest.raises(ValueError, match="needs chosen_tokens"):
        dpo_loss(pc, pr, rc, rr, loss_type="ipo")
    with pytest.raises(ValueError, match="loss_type 'kto'"):
        dpo_loss(pc, pr, rc, rr, loss_type="kto")
    with pytest.raises(ValueError, match="beta must be > 0"):
        dpo_loss(pc, pr, rc, rr, beta=0.0)


def test_group_advantages_by_hand():
    # Groups [1, 0] and [3, 3]: unbiased std sqrt(0.5) and 0.
    adv = group_advantages(jnp.array([1.0, 0.0, 3.0, 3.0]), 2)
    s = np.sqrt(0.5) + 1e-4
    np.testing.assert_allclose(adv, [0.5 / s, -0.5 / s, 0.0, 0.0], rtol=1e-5)
    np.testing.assert_allclose(
        group_advantages(jnp.array([1.0, 0.0, 3.0, 3.0]), 2, "none"), [0.5, -0.5, 0, 0]
    )
    rewards = np.array([1.0, 0.0, 3.0, 3.0])
    batch = group_advantages(jnp.asarray(rewards), 2, "batch")
    np.testing.assert_allclose(batch, [0.5, -0.5, 0, 0] / (rewards.std(ddof=1) + 1e-4), rtol=1e-5)
    with pytest.raises(ValueError, match="do not split into groups of 3"):
        group_advantages(jnp.ones(4), 3)


def _grpo_numpy(logps, old, ref, adv, mask, beta, lo, hi, norm):
    """trl's GRPOTrainer._compute_loss transcribed loop by loop (token-level ratios)."""
    n, t = logps.shape
    per = np.zeros((n, t))
    for i in range(n):
        for j in range(t):
            ratio = np.exp(logps[i, j] - old[i, j])
            clipped = min(max(ratio, 1 - lo), 1 + hi)
            per[i, j] = -min(ratio * adv[i], clipped * adv[i])
            if beta:
                r = ref[i, j] - logps[i, j]
                per[i, j] += beta * (np.exp(r) - r - 1)
    if norm == "grpo":
        return np.mean([(per[i] * mask[i]).sum() / max(mask[i].sum(), 1) for i in range(n)])
    if norm == "bnpo":
        return (per * mask).sum() / max(mask.sum(), 1)
    return (per * mask).sum() / (n * t)


@pytest.mark.parametrize("norm", ["grpo", "bnpo", "dr_grpo"])
@pytest.mark.parametrize("beta", [0.0, 0.04])
def test_grpo_loss_matches_numpy_and_finite_differences(norm, beta):
    rng = np.random.default_rng(3)
    n, t = 4, 5
    old = rng.normal(-2, 0.5, (n, t))
    logps = old + rng.normal(0, 0.3, (n, t))  # ratios spread both sides of the clip range
    ref = old + rng.normal(0, 0.2, (n, t))
    adv = np.array([1.2, -0.7, 0.4, -1.5])
    mask = (rng.random((n, t)) < 0.8).astype(np.float64)
    mask[:, 0] = 1
    args = dict(beta=beta, epsilon_low=0.2, epsilon_high=0.28, norm=norm)
    f32 = lambda a: jnp.asarray(a, jnp.float32)
    loss, metrics = grpo_loss(f32(logps), f32(old), f32(adv), f32(mask), f32(ref), **args)
    want = _grpo_numpy(logps, old, ref, adv, mask, beta, 0.2, 0.28, norm)
    np.testing.assert_allclose(loss, want, rtol=1e-5, atol=1e-7)
    assert 0 < metrics["clip_ratio"] < 1
    grad = jax.grad(lambda lp: grpo_loss(lp, f32(old), f32(adv), f32(mask), f32(ref), **args)[0])(
        f32(logps)
    )
    eps = 1e-6
    for i, j in [(0, 0), (1, 2), (2, 4), (3, 1)]:
        up, down = logps.copy(), logps.copy()
        up[i, j] += eps
        down[i, j] -= eps
        fd = (
            _grpo_numpy(up, old, ref, adv, mask, beta, 0.2, 0.28, norm)
            - _grpo_numpy(down, old, ref, adv, mask, beta, 0.2, 0.28, norm)
        ) / (2 * eps)
        np.testing.assert_allclose(grad[i, j], fd, rtol=2e-3, atol=1e-6)


def test_grpo_old_logps_carry_no_gradient_and_errors():
    x = jnp.zeros((2, 3))
    g = jax.grad(lambda old: grpo_loss(x, old, jnp.ones(2), jnp.ones((2, 3)), beta=0.0)[0])(x)
    np.testing.assert_array_equal(g, 0.0)
    with pytest.raises(ValueError, match="beta > 0 needs ref_logps"):
        grpo_loss(x, x, jnp.ones(2), jnp.ones((2, 3)))
    with pytest.raises(ValueError, match="norm 'mean'"):
        grpo_loss(x, x, jnp.ones(2), jnp.ones((2, 3)), beta=0.0, norm="mean")
