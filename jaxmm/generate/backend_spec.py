"""Backends from command-line specs (`--backend=engine:<model>` or `openai:<url>`), checked
before anything loads."""

from __future__ import annotations

from jaxmm.generate.backends import Backend, EngineBackend
from jaxmm.generate.openai_backend import OpenAIBackend


def _flag(value: str) -> bool:
    if value.lower() not in ("true", "false", "1", "0"):
        raise ValueError(value)
    return value.lower() in ("true", "1")


_ENGINE_OPTIONS = {
    "max_seq_len": int,
    "max_batch": int,
    "dtype": str,
    "steps_per_call": int,
    "vision": str,
}
_OPENAI_OPTIONS = {"model": str, "api_key": str, "images": _flag}


def backend_from_spec(spec: str) -> Backend:
    """A backend from a command-line spec:

    * `engine:<model folder or .gguf>[,max_seq_len=N,max_batch=N,dtype=D,steps_per_call=N,
      vision=tiny_random]`: the in-process engine (loads JAX). On a CPU a short cache
      (`max_seq_len=512`) and `max_batch` near the concurrency make decoding much faster
      than the model's default. `vision=tiny_random` adds a random image tower (the engine
      takes images; orchestration only: `jaxmm.generate.vision.tiny_random_encoder`).
    * `openai:<base url>[,model=NAME,api_key=KEY,images=true]`: any OpenAI-compatible
      server; `images=true` when it takes `image_url` parts (a VLM server).
    """
    kind, _, rest = spec.partition(":")
    target, _, opts = rest.partition(",")
    pairs = [o.split("=", 1) for o in opts.split(",")] if opts else []
    allowed = {"openai": _OPENAI_OPTIONS, "engine": _ENGINE_OPTIONS}.get(kind)
    if allowed is None or not target:
        raise ValueError(
            f"backend spec {spec!r}: expected engine:<model path> or openai:<base url>[,model=NAME]"
        )
    bad = [p[0] for p in pairs if len(p) != 2 or p[0] not in allowed]
    if bad:
        raise ValueError(
            f"backend spec {spec!r}: unknown option(s) {bad}; allowed: {list(allowed)}"
        )
    try:
        options = {k: allowed[k](v) for k, v in pairs}
    except ValueError:
        types = {k: "true/false" if t is _flag else t.__name__ for k, t in allowed.items()}
        raise ValueError(f"backend spec {spec!r}: option values must be {types}") from None
    if kind == "openai":
        return OpenAIBackend(
            target,
            options.get("model", ""),
            api_key=options.get("api_key"),
            images=options.get("images", False),
        )
    if options.get("vision") not in (None, "tiny_random"):
        raise ValueError(f"backend spec {spec!r}: vision must be 'tiny_random'")
    from jaxmm.generate.engine import Engine  # JAX only for the in-process engine

    return EngineBackend(Engine.from_pretrained(target, **options))
