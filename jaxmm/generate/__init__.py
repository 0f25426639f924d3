"""Text generation: engine (KV cache, continuous batching), sampling, backends, server.

`GenerationParams` and the backends import no JAX, so a pipeline that talks to a remote
OpenAI-compatible server stays light; `Engine` and `OpenAIServer` load JAX on first use.
"""

from jaxmm.generate.backends import Backend, BackendError, EngineBackend
from jaxmm.generate.call_cache import CachedBackend
from jaxmm.generate.openai_backend import OpenAIBackend
from jaxmm.generate.params import GenerationParams

__all__ = [
    "Backend",
    "BackendError",
    "CachedBackend",
    "Engine",
    "EngineBackend",
    "GenerationParams",
    "OpenAIBackend",
    "OpenAIServer",
]


def __getattr__(name: str):
    if name == "Engine":
        from jaxmm.generate.engine import Engine

        return Engine
    if name == "OpenAIServer":
        from jaxmm.generate.server import OpenAIServer

        return OpenAIServer
    raise AttributeError(f"module 'jaxmm.generate' has no attribute {name!r}")
