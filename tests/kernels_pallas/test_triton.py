"""`kernels_pallas.triton`: every Pallas kernel is pinned to the Triton backend in one place.

jax 0.10.2 lowers `pallas_call` on GPU to Mosaic GPU unless Triton compiler params are passed,
so the helper must always return them (never None) and fail loudly when the API is missing.
"""

import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import export
from jax._src.pallas.triton import core as triton_core
from jax.experimental import pallas as pl

import kernels_pallas
from kernels_pallas import triton


def test_triton_params_is_the_type_pallas_dispatches_to_triton_on():
    p = triton.triton_params(num_warps=8, num_stages=3)
    # pallas_call's GPU lowering picks Triton iff isinstance(compiler_params, this type).
    assert isinstance(p, triton_core.CompilerParams)
    assert (p.num_warps, p.num_stages) == (8, 3)


def test_missing_triton_module_raises_naming_the_jax_version(monkeypatch):
    monkeypatch.setitem(sys.modules, triton.TRITON_MODULE, None)  # import -> ImportError
    with pytest.raises(RuntimeError, match=rf"jax {jax.__version__} .*Mosaic GPU"):
        triton.triton_params(4, 2)


def test_missing_compiler_params_class_raises(monkeypatch):
    from jax.experimental.pallas import triton as pltriton

    monkeypatch.delattr(pltriton, "CompilerParams")
    with pytest.raises(RuntimeError, match=r"CompilerParams"):
        triton.triton_params(4, 2)
    # ... and a kernel call fails the same way, in interpret mode too (no silent None).
    from kernels_pallas.maxsim import api

    x = jnp.ones((1, 1, 8))
    with pytest.raises(RuntimeError, match=r"CompilerParams"):
        api.maxsim(x, jnp.ones((1, 1), bool), x, jnp.ones((1, 1), bool), impl="pallas")


def test_no_kernel_calls_pallas_call_directly():
    """The one place: every pallas_call in kernels_pallas goes through triton.pallas_call."""
    root = pathlib.Path(kernels_pallas.__file__).parent
    offenders = [
        str(f.relative_to(root))
        for f in root.rglob("*.py")
        if f.name != "triton.py" and ("pl.pallas_call(" in f.read_text() or
                                      "compiler_params=" in f.read_text())
    ]  # fmt: skip
    assert offenders == []


def _copy_kernel(x_ref, o_ref):
    o_ref[...] = x_ref[...] * 2.0


def test_wrapper_lowers_to_a_triton_custom_call_for_cuda():
    spec = jax.ShapeDtypeStruct((16, 16), jnp.float32)

    def f(x):
        return triton.pallas_call(
            _copy_kernel, num_warps=4, num_stages=1, interpret=False,
            out_shape=spec, name="copy",
        )(x)  # fmt: skip

    checks = [export.DisabledSafetyCheck.custom_call(triton.TRITON_CUSTOM_CALL)]
    text = export.export(jax.jit(f), platforms=["cuda"], disabled_checks=checks)(spec)
    assert triton.TRITON_CUSTOM_CALL in text.mlir_module()
    assert "mosaic_gpu" not in text.mlir_module()


@pytest.mark.skipif(
    not jax.__version__.startswith("0.10."), reason="jax 0.10's backend choice (the pin)"
)
def test_plain_pallas_call_lowers_to_mosaic_gpu_in_the_pinned_jax():
    """What the pin prevents: plain pallas_call (no params) lowers to Mosaic GPU in jax 0.10.
    (jax 0.11.2 on an H200 lowered it differently: the check is tied to the pinned version.)"""
    spec = jax.ShapeDtypeStruct((16, 16), jnp.float32)
    plain = lambda x: pl.pallas_call(_copy_kernel, out_shape=spec)(x)  # noqa: E731
    with pytest.warns(DeprecationWarning, match="Mosaic GPU"):
        text = export.export(jax.jit(plain), platforms=["cuda"])(spec).mlir_module()
    assert "mosaic_gpu" in text and triton.TRITON_CUSTOM_CALL not in text


def test_interpret_mode_is_unchanged():
    x = jnp.arange(256, dtype=jnp.float32).reshape(16, 16)
    out = triton.pallas_call(
        _copy_kernel, num_warps=4, num_stages=1, interpret=True,
        out_shape=jax.ShapeDtypeStruct(x.shape, x.dtype),
    )(x)  # fmt: skip
    np.testing.assert_array_equal(out, 2.0 * x)
