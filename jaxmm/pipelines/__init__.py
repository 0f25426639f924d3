"""Model-driven pipelines: each module `jaxmm.pipelines.<name>` defines `PIPELINE`, a
`runtime.Pipeline` (a function of one record that calls a backend); `runtime.run_pipeline`
maps it over a JSONL file resumably; `launch/pipeline.py --pipeline=<name>` is the CLI."""

from __future__ import annotations

import importlib
import pkgutil

from jaxmm.pipelines.runtime import Pipeline


def names() -> list[str]:
    """The modules of jaxmm/pipelines/ that define a `PIPELINE` (helpers such as `runtime`
    or `genprog_program` do not)."""
    found = []
    for m in pkgutil.iter_modules(__path__):
        if hasattr(importlib.import_module(f"{__name__}.{m.name}"), "PIPELINE"):
            found.append(m.name)
    return sorted(found)


def get(name: str) -> Pipeline:
    """The `PIPELINE` of `jaxmm.pipelines.<name>`; a clear error naming the known ones."""
    if name not in names():
        raise ValueError(f"unknown pipeline {name!r}; known: {names()}")
    return importlib.import_module(f"{__name__}.{name}").PIPELINE
