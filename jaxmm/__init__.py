"""jaxmm: a JAX/Flax research stack for 2025 multimodal papers on one shared core.

Subpackages are imported lazily so `import jaxmm` stays cheap:
`jaxmm.train` (the one trainer), `jaxmm.gaussians` (4DGS renderer), `jaxmm.retrieval`
(multi-vector index), `jaxmm.models`, `jaxmm.generate`, `jaxmm.data`, `jaxmm.eval`.
"""

__version__ = "0.1.0"
