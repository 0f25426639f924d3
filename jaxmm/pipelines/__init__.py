"""Model-driven pipelines: each module `jaxmm.pipelines.<name>` defines `PIPELINE`, a
`runtime.Pipeline` (a function of one record that calls a backend); `runtime.run_pipeline`
maps it over a JSONL file resumably; `launch/pipeline.py --pipeline=<name>` is the CLI."""

from __future__ import annotations

import importlib
import pkgutil

from jaxmm.pipelines.runtime import Pipeline

_NOT_PIPELINES = {"runtime"}


def names() -> list[str]:
    """The pipeline modules in jaxmm/pipelines/."""
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if m.name not in _NOT_PIPELINES)


def get(name: str) -> Pipeline:
    """The `PIPELINE` of `jaxmm.pipelines.<name>`; a clear error naming the known ones."""
    if name not in names():
        raise ValueError(f"unknown pipeline {name!r}; known: {names()}")
    return importlib.import_module(f"{__name__}.{name}").PIPELINE
