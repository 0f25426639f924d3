"""Backends from command-line specs (`--backend=engine:<model>` or `openai:<url>`), checked
before anything loads."""

from __future__ import annotations

from jaxmm.generate.backends import Backend, EngineBackend, OpenAIBackend

_ENGINE_OPTIONS = {"max_seq_len": int, "max_batch": int, "dtype": str, "steps_per_call": int}


def backend_from_spec(spec: str) -> Backend:
    """A backend from a command-line spec:

    * `engine:<model folder or .gguf>[,max_seq_len=N,max_batch=N,dtype=D,steps_per_call=N]`:
      the in-process engine (loads JAX). On a CPU a short cache (`max_seq_len=512`) and
      `max_batch` near the concurrency make decoding much faster than the model's default.
    * `openai:<base url>[,model=NAME,api_key=KEY]`: any OpenAI-compatible server.
    """
    kind, _, rest = spec.partition(":")
    target, _, opts = rest.partition(",")
    pairs = [o.split("=", 1) for o in opts.split(",")] if opts else []
    allowed = {"openai": {"model": str, "api_key": str}, "engine": _ENGINE_OPTIONS}.get(kind)
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
        raise ValueError(f"backend spec {spec!r}: option values must be {allowed}") from None
    if kind == "openai":
        return OpenAIBackend(target, options.get("model", ""), api_key=options.get("api_key"))
    from jaxmm.generate.engine import Engine  # JAX only for the in-process engine

    return EngineBackend(Engine.from_pretrained(target, **options))
