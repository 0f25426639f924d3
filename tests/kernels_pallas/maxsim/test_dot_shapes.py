"""Every `tl.dot` in the MaxSim kernels has M, K, N >= 16 (Triton's minimum), even for tiny
documents (1, 2 or 8 tokens), 1-token queries and dim 8; and those tiny shapes still match the
reference in interpret mode. The dot shapes are read from the traced kernel jaxprs (what the
Triton lowering sees), not recomputed."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.extend import core as jex_core
from maxsim_inputs import PALLAS_INTERPRET, VALUE_TOL
from maxsim_inputs import make_inputs as _inputs

from kernels_pallas.maxsim import api, padding
from kernels_pallas.maxsim import reference as ref

COMPILED = dict(impl="pallas", interpret=False)  # traced only (make_jaxpr), never run


def _sub_jaxprs(params):
    for v in params.values():
        for x in v if isinstance(v, (tuple, list)) else (v,):
            if isinstance(x, jex_core.ClosedJaxpr):
                yield x.jaxpr
            elif isinstance(x, jex_core.Jaxpr):
                yield x


def _kernel_dots(jaxpr, in_kernel=False):
    """Operand shapes of every dot_general inside a pallas_call in `jaxpr`."""
    for eqn in jaxpr.eqns:
        if in_kernel and eqn.primitive.name == "dot_general":
            yield tuple(v.aval.shape for v in eqn.invars)
        inside = in_kernel or eqn.primitive.name == "pallas_call"
        for sub in _sub_jaxprs(eqn.params):
            yield from _kernel_dots(sub, inside)


def _dots(fn, *args):
    dots = list(_kernel_dots(jax.make_jaxpr(fn)(*args).jaxpr))
    assert dots, "no dot inside a pallas_call was traced"
    return dots


def _tiny(d_len, n_q=2, q_len=1, n_d=5, dim=8, seed=0):
    q, q_mask, d, d_mod = _inputs(seed, n_q=n_q, q_len=q_len, n_d=n_d, d_len=d_len, dim=dim)
    d_mod = d_mod.at[0].set(1)  # at least one non-empty document
    return q, q_mask, d, d_mod


def _assert_min_16(dots):
    for a, b in dots:
        assert min(*a, *b) >= padding.MIN_DOT, f"tl.dot operands {a} x {b} have a dim < 16"


@pytest.mark.parametrize("d_len", [1, 2, 8])
@pytest.mark.parametrize(
    "blocks",
    [
        {},
        dict(block_d=4, block_t=2),
        dict(block_d=32),
        dict(schedule="persistent"),
        dict(schedule="persistent", block_d=1, block_t=2),  # a 2-row tile grows to 16
    ],
)
def test_padded_and_topk_dots_are_at_least_16(d_len, blocks):
    q, q_mask, d, d_mod = _tiny(d_len)
    dots = _dots(lambda *a: api.maxsim(*a, **COMPILED, **blocks), q, q_mask, d, d_mod > 0)
    _assert_min_16(dots)
    cfg = padding.default_config(*q.shape[:2], **blocks)
    m, k, n = padding.dot_shapes(1, d_len, 8, cfg)
    assert dots == [((m, k), (n, k))]  # dot_shapes says what the kernel traces
    dots = _dots(lambda *a: api.maxsim_topk(*a, 3, **COMPILED, **blocks), q, q_mask, d, d_mod > 0)
    _assert_min_16(dots)


@pytest.mark.parametrize("block_t", [1, 8, 32])
def test_packed_dots_are_at_least_16(block_t):
    q, q_mask = _tiny(1)[:2]
    tokens = jnp.ones((3, 8))
    offsets = jnp.asarray([0, 1, 1, 3], jnp.int32)
    dots = _dots(
        lambda *a: api.maxsim_packed(*a, **COMPILED, block_t=block_t), q, q_mask, tokens, offsets
    )
    _assert_min_16(dots)


@pytest.mark.parametrize("d_len", [1, 2, 8])
def test_tiny_shapes_match_the_reference(d_len):
    q, q_mask, d, d_mod = _tiny(d_len)
    got = api.maxsim_modality(q, q_mask, d, d_mod, 3, **PALLAS_INTERPRET)
    np.testing.assert_allclose(got, ref.maxsim_modality(q, q_mask, d, d_mod, 3), **VALUE_TOL)
    got = api.maxsim(q, q_mask, d, d_mod > 0, **PALLAS_INTERPRET, block_d=4, block_t=2)
    np.testing.assert_allclose(got, ref.maxsim(q, q_mask, d, d_mod > 0), **VALUE_TOL)
    s, i = api.maxsim_topk(q, q_mask, d, d_mod > 0, 3, **PALLAS_INTERPRET)
    want_s, _ = api.maxsim_topk(q, q_mask, d, d_mod > 0, 3, impl="reference")
    np.testing.assert_allclose(s, want_s, **VALUE_TOL)
    lengths = np.asarray((d_mod > 0).sum(1))
    offsets = jnp.asarray(np.concatenate([[0], np.cumsum(lengths)]), jnp.int32)
    tokens = d[d_mod > 0]  # packed: each document's valid tokens, in order
    got = api.maxsim_packed(q, q_mask, tokens, offsets, **PALLAS_INTERPRET, block_t=8)
    want = ref.maxsim_packed(q, q_mask, tokens, offsets)
    np.testing.assert_allclose(got, want, **VALUE_TOL)


@pytest.mark.parametrize("n_q", [1, 8])
@pytest.mark.parametrize("dim", [64, 128, 256])
def test_default_config_fits_shared_memory_for_bf16_and_float32(n_q, dim):
    """float32 inputs with bf16's 3 stages asked an H200 for 256 KiB of shared memory and failed
    to launch; the default config drops stages until the estimate fits, and bf16 keeps 3."""
    for itemsize in (2, 4):
        cfg = padding.default_config(n_q, 32, dim=dim, itemsize=itemsize)
        assert padding.staged_operand_bytes(cfg, 32, dim, itemsize) <= padding.SHARED_MEMORY_BUDGET
        assert cfg.num_stages >= 1
    assert padding.default_config(n_q, 32, dim=128, itemsize=2).num_stages == 3
    seen = dataclasses.replace(padding.default_config(8, 32), num_stages=3)  # what failed
    assert padding.staged_operand_bytes(seen, 32, 128, 4) == 256 * 1024
