"""MaxSim (late-interaction) kernels: Pallas GPU kernels with pure-jnp reference twins.

Public ops (`impl="auto"`: Pallas on GPU, reference elsewhere; `impl="pallas"` interprets off
GPU): `maxsim`, `maxsim_modality` (CLaMR), `maxsim_packed` (variable-length docs),
`maxsim_topk` (streaming top-k search). `padding` is the kernels' shape contract, exported so
a corpus kept on device can be padded once (`jaxmm.retrieval.MultiVectorIndex`).
"""

from kernels_pallas.maxsim import padding
from kernels_pallas.maxsim.api import (
    KernelConfig,
    maxsim,
    maxsim_modality,
    maxsim_packed,
    maxsim_topk,
)

__all__ = ["KernelConfig", "maxsim", "maxsim_modality", "maxsim_packed", "maxsim_topk", "padding"]
