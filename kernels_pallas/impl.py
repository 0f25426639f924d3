"""The one kernel contract: which implementation an op runs, and whether Pallas interprets.

Every op with more than one implementation (splat rasterise, MaxSim, attention) takes
`impl: str = "auto"` from one vocabulary and resolves it here, so a config key, a flag and a
test all mean the same thing whatever the op:

  auto       the op's fast path on GPU (its Pallas kernel, or the backend's own fused kernel
             where that is faster), its portable path elsewhere (see each op's `auto` table)
  reference  the pure-jnp twin the kernel is tested against (any backend)
  pallas     the Pallas kernel
  xla        `jax.nn.dot_product_attention`'s XLA path (attention only)
  cudnn      cuDNN flash attention (attention only; GPU, half precision)
  dense      every Gaussian against every pixel, no binning (splat only; small images)

One interpret rule: Pallas runs compiled on GPU and with `interpret=True` elsewhere, unless the
caller says otherwise. `interpret=False` off GPU is how a kernel is lowered for CUDA with
`jax.export` on a CPU host; `interpret=True` on a GPU debugs a kernel.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, NamedTuple

import jax

Impl = Literal["auto", "reference", "pallas", "xla", "cudnn", "dense"]
IMPLS: tuple[str, ...] = ("auto", "reference", "pallas", "xla", "cudnn", "dense")


class Resolved(NamedTuple):
    """What runs: a concrete implementation name (never "auto") and Pallas' interpret flag."""

    impl: str
    interpret: bool


def on_gpu() -> bool:
    """True when the default backend is a GPU (where the Pallas kernels compile)."""
    return jax.default_backend() == "gpu"


def resolve(
    impl: str,
    *,
    op: str,
    supported: Sequence[str],
    auto_gpu: str = "pallas",
    auto_other: str = "reference",
    interpret: bool | None = None,
) -> Resolved:
    """Resolves `impl` for `op` on this backend; a clear error for a name `op` lacks.

    `supported` lists the concrete implementations the op has; `auto_gpu` / `auto_other` are
    what "auto" becomes on a GPU / elsewhere. `interpret` (None = the rule above) is Pallas'
    flag: `interpret=True` needs `impl="pallas"` (before the one rule, `impl="auto",
    interpret=True` meant "interpreted Pallas"; it must not silently become the reference now).
    The result's interpret is False for every implementation but "pallas".
    """
    if not set(supported) <= set(IMPLS):  # the op's own table, not the caller's input
        raise ValueError(f"{op}: supported={tuple(supported)} is not within {IMPLS}")
    if impl != "auto" and impl not in supported:
        raise ValueError(f"{op}: impl must be one of {('auto', *supported)}, got {impl!r}")
    if interpret and impl != "pallas":
        raise ValueError(
            f"{op}: interpret=True applies to impl='pallas' only, got impl={impl!r} "
            "(off GPU impl='pallas' interprets by default)"
        )
    gpu = on_gpu()
    if impl == "auto":
        impl = auto_gpu if gpu else auto_other
    if impl != "pallas":
        return Resolved(impl, False)
    return Resolved(impl, (not gpu) if interpret is None else bool(interpret))
