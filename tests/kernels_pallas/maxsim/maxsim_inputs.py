"""Shared random inputs and tolerances for the MaxSim kernel tests."""

import jax.numpy as jnp
import numpy as np

# fp32 on CPU: both sides do the same fp32 products; only the summation order differs
# (docs/testing.md tolerances).
VALUE_TOL = dict(atol=1e-5, rtol=1e-5)
GRAD_TOL = dict(atol=1e-4, rtol=1e-4)
# The Pallas kernel in interpret mode on any backend (what these CPU tests check).
PALLAS_INTERPRET = dict(impl="pallas", interpret=True)


def make_inputs(seed=0, n_q=3, q_len=5, n_d=7, d_len=20, dim=24, num_modalities=3):
    rng = np.random.default_rng(seed)
    q = rng.normal(size=(n_q, q_len, dim)).astype(np.float32)
    d = rng.normal(size=(n_d, d_len, dim)).astype(np.float32)
    q_mask = rng.random((n_q, q_len)) > 0.3
    q_mask[:, 0] = True
    d_mod = rng.integers(0, num_modalities + 1, size=(n_d, d_len)).astype(np.int32)
    d_mod[1] = 0  # an all-padding document: its scores must be exactly 0
    d_mod[2, :] = np.where(d_mod[2] == 2, 0, d_mod[2])  # a document missing modality 2
    return jnp.asarray(q), jnp.asarray(q_mask), jnp.asarray(d), jnp.asarray(d_mod)
