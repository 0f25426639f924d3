"""The one place that pins every Pallas kernel in `kernels_pallas` to the Triton backend.

In jax 0.10.2 `pl.pallas_call` on a GPU lowers to **Mosaic GPU** (Hopper-only, and not what
these kernels were written for) unless it is handed Triton compiler params: the choice is made
per call from the type of `compiler_params` (`jax_pallas_use_mosaic_gpu` defaults to True, so
`compiler_params=None` means Mosaic GPU). A kernel that built its params with a
`try/except -> None` would therefore move to Mosaic GPU silently whenever the Triton API moved.

So every kernel calls `pallas_call` below, which always passes `triton_params(...)`, and
`triton_params` raises a RuntimeError naming the installed jax version when the Triton
`CompilerParams` API is missing, instead of returning None. The params are passed in
interpret mode too (where Pallas ignores them), so a missing API fails the CPU tests as well,
not only a GPU run. `tests/kernels_pallas/test_triton.py` checks the type, the error, and that
the CUDA lowering (`jax.export`, on a CPU host) is a Triton custom call.
"""

from __future__ import annotations

import importlib
from typing import Any

import jax
from jax.experimental import pallas as pl

TRITON_MODULE = "jax.experimental.pallas.triton"
TRITON_CUSTOM_CALL = "__gpu$xla.gpu.triton"  # the custom call a Triton kernel lowers to


def triton_params(num_warps: int, num_stages: int) -> Any:
    """`jax.experimental.pallas.triton.CompilerParams(num_warps, num_stages)`; a RuntimeError
    naming the jax version (never None, which would mean Mosaic GPU) when the API is missing."""
    try:
        params_cls = importlib.import_module(TRITON_MODULE).CompilerParams
    except (ImportError, AttributeError) as e:
        raise RuntimeError(
            f"kernels_pallas needs {TRITON_MODULE}.CompilerParams to pin its Pallas kernels "
            f"to the Triton backend, but jax {jax.__version__} does not provide it ({e!r}). "
            "Without it Pallas on GPU would lower to Mosaic GPU. The kernels were written "
            "against jax 0.10.2 (pyproject.toml pins it)."
        ) from e
    return params_cls(num_warps=num_warps, num_stages=num_stages)


def pallas_call(kernel, *, num_warps: int, num_stages: int, interpret: bool, **kwargs):
    """`pl.pallas_call(kernel, ...)` with the Triton compiler params always passed."""
    if "compiler_params" in kwargs:
        raise TypeError("kernels_pallas.triton.pallas_call sets compiler_params itself")
    return pl.pallas_call(
        kernel,
        compiler_params=triton_params(num_warps, num_stages),
        interpret=interpret,
        **kwargs,
    )
