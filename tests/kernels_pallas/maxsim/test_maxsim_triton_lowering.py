"""The Pallas kernels lower to Triton IR for CUDA (checked on CPU, no GPU needed).

`jax.export` with platforms=["cuda"] runs the Pallas -> Triton-dialect lowering; it catches
unsupported primitives, non-power-of-two blocks and bad block specs before a GPU run. It does
not compile Triton to PTX (that happens inside XLA on the GPU). Off GPU `impl="pallas"`
interprets by default (kernels_pallas.impl), so lowering asks for `interpret=False`.
"""

import jax
import jax.numpy as jnp
import pytest
from jax import export

from kernels_pallas.maxsim import api

S = jax.ShapeDtypeStruct
COMPILED = dict(impl="pallas", interpret=False)  # the Triton lowering, even on a CPU host
TRITON = export.DisabledSafetyCheck.custom_call("__gpu$xla.gpu.triton")


def _lower_for_cuda(fn, *args) -> str:
    exported = export.export(jax.jit(fn), platforms=["cuda"], disabled_checks=[TRITON])(*args)
    text = exported.mlir_module()
    assert "__gpu$xla.gpu.triton" in text
    assert "mosaic_gpu" not in text  # pinned to Triton (kernels_pallas.triton)
    return text


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("n_q", [1, 8])
def test_maxsim_lowers(dtype, n_q):
    q, qm = S((n_q, 32, 128), dtype), S((n_q, 32), jnp.bool_)
    d, dm = S((64, 128, 128), dtype), S((64, 128), jnp.bool_)
    _lower_for_cuda(lambda *a: api.maxsim(*a, **COMPILED), q, qm, d, dm)


def test_modality_argmax_and_grad_lower():
    q, qm = S((4, 64, 128), jnp.bfloat16), S((4, 64), jnp.bool_)
    d, mod = S((16, 256, 128), jnp.bfloat16), S((16, 256), jnp.int32)

    def loss(q, qm, d, mod):
        s = api.maxsim_modality(q, qm, d, mod, 4, **COMPILED)
        return s.max(-1).sum()

    _lower_for_cuda(jax.grad(loss), q, qm, d, mod)
    _lower_for_cuda(
        lambda *a: api.maxsim_modality(*a, 4, return_argmax=True, **COMPILED),
        q, qm, d, mod,
    )  # fmt: skip


def test_packed_and_topk_lower():
    q, qm = S((1, 32, 128), jnp.bfloat16), S((1, 32), jnp.bool_)
    tokens, offsets = S((5000, 128), jnp.bfloat16), S((65,), jnp.int32)
    _lower_for_cuda(lambda *a: api.maxsim_packed(*a, **COMPILED), q, qm, tokens, offsets)
    d, dm = S((256, 128, 128), jnp.bfloat16), S((256, 128), jnp.bool_)
    _lower_for_cuda(lambda *a: api.maxsim_topk(*a, 10, **COMPILED), q, qm, d, dm)
    q8, qm8 = S((8, 64, 128), jnp.bfloat16), S((8, 64), jnp.bool_)
    mod = S((256, 128), jnp.int8)
    _lower_for_cuda(
        lambda q, qm, d, m: api.maxsim_topk(
            q, qm, d, m > 0, 10, d_modality=m, num_modalities=4, **COMPILED,
        ),
        q8, qm8, d, mod,
    )  # fmt: skip


def test_unaligned_shapes_and_three_modalities_lower():
    """Non-power-of-two q_len / d_len / dim / n_d and M=3 go through the wrapper's padding."""
    q, qm = S((3, 20, 96), jnp.bfloat16), S((3, 20), jnp.bool_)
    d, mod = S((33, 100, 96), jnp.bfloat16), S((33, 100), jnp.int32)
    _lower_for_cuda(
        lambda *a: api.maxsim_modality(*a, 3, return_argmax=True, **COMPILED), q, qm, d, mod
    )
