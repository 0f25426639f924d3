"""`GenerationParams`: the sampling request shared by the engine, the backends and the server.

Kept free of JAX imports so a pipeline that only talks to a remote server never loads JAX.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any


@dataclasses.dataclass(frozen=True)
class GenerationParams:
    """How to sample one completion.

    `temperature == 0` means greedy decoding; `top_k == 0` and `top_p == 1` disable those
    filters. `max_tokens=None` lets a request run to the end of the context window. `seed`
    fixes the sampling keys of one request, independent of what else is batched with it.
    """

    max_tokens: int | None = 256
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    stop: tuple[str, ...] = ()
    seed: int | None = None

    def __post_init__(self):
        stop = self.stop
        if isinstance(stop, str):
            stop = (stop,)
        object.__setattr__(self, "stop", tuple(stop or ()))
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the bad field (before any device work)."""
        if self.max_tokens is not None and (not _is_int(self.max_tokens) or self.max_tokens < 1):
            raise ValueError(
                f"max_tokens must be a positive integer or None, got {self.max_tokens!r}"
            )
        if not _is_number(self.temperature) or self.temperature < 0:
            raise ValueError(f"temperature must be a number >= 0, got {self.temperature!r}")
        if not _is_number(self.top_p) or not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be a number in (0, 1], got {self.top_p!r}")
        if not _is_int(self.top_k) or self.top_k < 0:
            raise ValueError(f"top_k must be an integer >= 0, got {self.top_k!r}")
        if self.seed is not None and not _is_int(self.seed):
            raise ValueError(f"seed must be an integer or None, got {self.seed!r}")
        for s in self.stop:
            if not isinstance(s, str) or not s:
                raise ValueError(f"stop must hold non-empty strings, got {s!r}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (used as part of cache keys and request bodies)."""
        d = dataclasses.asdict(self)
        d["stop"] = list(self.stop)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> GenerationParams:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown GenerationParams fields: {sorted(unknown)}")
        kwargs = dict(d)
        if isinstance(kwargs.get("stop"), Sequence) and not isinstance(kwargs["stop"], str):
            kwargs["stop"] = tuple(kwargs["stop"])
        return cls(**kwargs)


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)
