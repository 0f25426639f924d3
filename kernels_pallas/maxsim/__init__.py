"""MaxSim (late-interaction) kernels: Pallas GPU kernels with pure-jnp reference twins.

Public ops (dispatch GPU -> Pallas, CPU -> reference, `interpret=True` -> Pallas interpreter):
`maxsim`, `maxsim_modality` (CLaMR), `maxsim_packed` (variable-length docs), `maxsim_topk`
(streaming top-k search).
"""

from kernels_pallas.maxsim.api import (
    KernelConfig,
    maxsim,
    maxsim_modality,
    maxsim_packed,
    maxsim_topk,
)

__all__ = ["KernelConfig", "maxsim", "maxsim_modality", "maxsim_packed", "maxsim_topk"]
