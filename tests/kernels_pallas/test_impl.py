"""The one kernel contract (`kernels_pallas.impl`): impl names, `auto` per backend, the one
interpret rule, and that every op resolves through it (errors name the op and the bad impl)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kernels_pallas import impl as impl_lib
from kernels_pallas import maxsim, splat
from kernels_pallas.impl import IMPLS, Resolved, resolve

SPLAT = dict(op="splat", supported=("reference", "pallas", "dense"))


def _pretend_gpu(monkeypatch, gpu: bool) -> None:
    """resolve() asks `impl_lib.on_gpu()`; both branches of the rule are tested on any host."""
    monkeypatch.setattr(impl_lib, "on_gpu", lambda: gpu)


def test_on_gpu_is_the_default_backend():
    assert impl_lib.on_gpu() == (jax.default_backend() == "gpu")


@pytest.mark.skipif(jax.default_backend() == "gpu", reason="checks the CPU table unpatched")
def test_auto_on_cpu_is_the_portable_path_and_pallas_interprets():
    assert resolve("auto", **SPLAT) == Resolved("reference", False)
    assert resolve("auto", op="attention", supported=("xla",), auto_other="xla").impl == "xla"
    assert resolve("pallas", **SPLAT) == Resolved("pallas", True)
    assert splat.resolve_impl("auto") == Resolved("reference", False)


@pytest.mark.parametrize("gpu", [False, True])
def test_interpret_rule(monkeypatch, gpu):
    """Pallas compiles on GPU and interprets elsewhere; an explicit interpret= wins (False off
    GPU lowers for jax.export, True on GPU debugs); other impls never interpret."""
    _pretend_gpu(monkeypatch, gpu)
    assert resolve("auto", **SPLAT) == Resolved("pallas" if gpu else "reference", False)
    assert resolve("pallas", **SPLAT) == Resolved("pallas", not gpu)
    assert resolve("pallas", **SPLAT, interpret=False) == Resolved("pallas", False)
    assert resolve("pallas", **SPLAT, interpret=True) == Resolved("pallas", True)
    assert resolve("reference", **SPLAT) == Resolved("reference", False)
    assert resolve("dense", **SPLAT, interpret=False) == Resolved("dense", False)
    got = resolve("auto", op="attention", supported=("xla", "cudnn"), auto_gpu="cudnn",
                  auto_other="xla")  # fmt: skip
    assert got == Resolved("cudnn" if gpu else "xla", False)


@pytest.mark.parametrize("bad", ["triton", "dens", ""])
def test_unknown_impl_error_names_the_op_and_the_impl(bad):
    with pytest.raises(ValueError, match=rf"splat: impl must be one of .*got '{bad}'") as e:
        resolve(bad, **SPLAT)
    assert "'dense'" in str(e.value)  # the op's own choices are listed


def test_an_op_rejects_an_impl_it_lacks():
    """Names from the shared vocabulary that this op does not implement."""
    assert "xla" in IMPLS and "dense" in IMPLS
    with pytest.raises(ValueError, match=r"splat: impl must be one of .*got 'xla'"):
        resolve("xla", **SPLAT)
    x = jnp.zeros((1, 2))
    with pytest.raises(ValueError, match=r"splat.rasterize: .*got 'dense'"):
        splat.rasterize(x, x, x, x[0], x[0], x[0], x, width=16, height=16, impl="dense")


def test_interpret_true_needs_impl_pallas():
    """The pre-contract spelling `impl="auto", interpret=True` (interpreted Pallas) must fail
    loudly instead of silently running the reference."""
    for impl in ("auto", "reference", "dense"):
        with pytest.raises(ValueError, match=f"splat: interpret=True .*impl='{impl}'"):
            resolve(impl, **SPLAT, interpret=True)


def test_op_table_must_use_the_vocabulary():
    with pytest.raises(ValueError, match="supported"):
        resolve("auto", op="x", supported=("reference", "triton"))


def _maxsim_inputs():
    rng = np.random.default_rng(0)
    q = jnp.asarray(rng.normal(size=(2, 5, 24)), jnp.float32)
    d = jnp.asarray(rng.normal(size=(7, 20, 24)), jnp.float32)
    return q, jnp.ones((2, 5), bool), d, jnp.asarray(rng.random((7, 20)) > 0.3)


def test_maxsim_resolves_through_the_contract():
    args = _maxsim_inputs()
    with pytest.raises(ValueError, match=r"maxsim: impl must be one of .*got 'dense'"):
        maxsim.maxsim(*args, impl="dense")
    with pytest.raises(ValueError, match=r"maxsim_topk: impl must be one of .*got 'xla'"):
        maxsim.maxsim_topk(*args, 3, impl="xla")
    with pytest.raises(ValueError, match=r"maxsim_packed: interpret=True .*impl='auto'"):
        tokens, offsets = args[2][0], jnp.asarray([0, 4, 20], jnp.int32)
        maxsim.maxsim_packed(args[0], args[1], tokens, offsets, interpret=True)


@pytest.mark.skipif(jax.default_backend() == "gpu", reason="the CPU side of the rule")
def test_maxsim_auto_is_the_reference_and_pallas_interprets_on_cpu():
    args = _maxsim_inputs()
    ref = maxsim.maxsim(*args, impl="reference")
    np.testing.assert_array_equal(maxsim.maxsim(*args), ref)  # auto: bit-identical twin
    interpreted = maxsim.maxsim(*args, impl="pallas", interpret=True)
    np.testing.assert_array_equal(maxsim.maxsim(*args, impl="pallas"), interpreted)
    np.testing.assert_allclose(interpreted, ref, atol=1e-5, rtol=1e-5)  # docs/testing.md fp32
