"""The Pallas kernels lower to Triton IR for CUDA (checked on CPU, no GPU needed).

`jax.export` with platforms=["cuda"] runs the Pallas -> Triton-dialect lowering; it catches
unsupported primitives, non-power-of-two blocks and bad block specs before a GPU run. It does
not compile Triton to PTX (that happens inside XLA on the GPU). Off GPU `impl="pallas"`
interprets by default (kernels_pallas.impl), so lowering asks for `interpret=False`.
"""

import re

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


# --------------------------------------------------------------- the persistent schedule
PERSISTENT = dict(COMPILED, schedule="persistent")


@pytest.mark.parametrize("n_q", [1, 8])
def test_persistent_scores_and_topk_lower(n_q):
    q, qm = S((n_q, 32, 128), jnp.bfloat16), S((n_q, 32), jnp.bool_)
    d, dm = S((1000, 128, 128), jnp.bfloat16), S((1000, 128), jnp.bool_)
    text = _lower_for_cuda(lambda *a: api.maxsim(*a, **PERSISTENT), q, qm, d, dm)
    programs = int(re.search(r"grid_y = (\d+)", text).group(1))
    assert 1 < programs < 1000  # a persistent grid, not one program per document
    _lower_for_cuda(lambda *a: api.maxsim_topk(*a, 10, **PERSISTENT), q, qm, d, dm)


def test_persistent_modality_argmax_grad_and_odd_shapes_lower():
    """The modality fold's cond, the argmax outputs, the training VJP, and unaligned shapes
    (d_len 100 -> 16-row tiles, 1-token documents -> 128 per tile)."""
    q, qm = S((4, 64, 128), jnp.bfloat16), S((4, 64), jnp.bool_)
    d, mod = S((16, 256, 128), jnp.bfloat16), S((16, 256), jnp.int32)

    def loss(q, qm, d, mod):
        return api.maxsim_modality(q, qm, d, mod, 4, **PERSISTENT).max(-1).sum()

    _lower_for_cuda(jax.grad(loss), q, qm, d, mod)
    q3, qm3 = S((3, 20, 96), jnp.bfloat16), S((3, 20), jnp.bool_)
    for n_d, d_len in ((33, 100), (300, 1)):
        d3, mod3 = S((n_d, d_len, 96), jnp.bfloat16), S((n_d, d_len), jnp.int32)
        fn = lambda *a: api.maxsim_modality(*a, 3, return_argmax=True, **PERSISTENT)  # noqa: E731
        _lower_for_cuda(fn, q3, qm3, d3, mod3)
        _lower_for_cuda(
            lambda q, qm, d, m: api.maxsim_topk(
                q, qm, d, m > 0, 5, d_modality=m, num_modalities=3, **PERSISTENT
            ),
            q3, qm3, d3, mod3,
        )  # fmt: skip


def _triton_ir(stablehlo_text: str) -> str:
    """The Triton-dialect module a Pallas call lowered to, as text (it travels as MLIR
    bytecode in the custom call's backend_config)."""
    from jax._src.lib.mlir import ir
    from jax._src.pallas.triton import lowering as triton_lowering

    raw = re.search(r'ir = "((?:[^"\\]|\\.)*)"', stablehlo_text).group(1)
    data = re.sub(rb"\\([0-9A-Fa-f]{2})", lambda m: bytes([int(m.group(1), 16)]), raw.encode())
    with triton_lowering._new_ir_context():
        return str(ir.Module.parse(data))


@pytest.mark.parametrize("n_d,offset_bits", [(125_000, 32), (1_000_000, 64)])
def test_persistent_offset_width_follows_the_operand_size(n_d, offset_bits):
    """Issue 13's 32- vs 64-bit question, settled on CPU: the Triton lowering computes load
    offsets in 64-bit only when an operand exceeds 2**32 bytes. 125K x 128 x 128 bf16 (3.8
    GiB) loads with 32-bit offsets, 1M (30.5 GiB, case (a)) with 64-bit ones; what the
    64-bit offsets cost is timed on a GPU by benchmarks/maxsim.py's sharded row."""
    q, qm = S((1, 32, 128), jnp.bfloat16), S((1, 32), jnp.bool_)
    d, dm = S((n_d, 128, 128), jnp.bfloat16), S((n_d, 128), jnp.bool_)
    ir_text = _triton_ir(_lower_for_cuda(lambda *a: api.maxsim(*a, **PERSISTENT), q, qm, d, dm))
    assert "tensor<128x128x!tt.ptr<bf16>>" in ir_text  # one 2-D [tile, dim] document load
    wide = re.findall(r"tensor<128x128xi64>", ir_text)
    assert bool(wide) == (offset_bits == 64)
