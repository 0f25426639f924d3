"""The engine's host-side slot state: which request each KV-cache slot decodes, and the small
per-slot arrays the jitted decode reads every call (kept in numpy so the host can update one
slot without a device round trip)."""

from __future__ import annotations

import dataclasses

import numpy as np

from jaxmm.generate.requests import Request


@dataclasses.dataclass
class Slots:
    """One entry per cache slot; `requests[i] is None` when slot i is free."""

    requests: list[Request | None]
    last: np.ndarray  # int32: the slot's latest token, the next decode step's input
    n_gen: np.ndarray  # int32: tokens generated so far (the sampling key's step)
    max_new: np.ndarray  # int32
    seed: np.ndarray  # uint32
    temp: np.ndarray  # float32
    top_k: np.ndarray  # int32
    top_p: np.ndarray  # float32

    @classmethod
    def empty(cls, n: int) -> Slots:
        return cls(
            requests=[None] * n,
            last=np.zeros(n, np.int32),
            n_gen=np.zeros(n, np.int32),
            max_new=np.ones(n, np.int32),
            seed=np.zeros(n, np.uint32),
            temp=np.zeros(n, np.float32),
            top_k=np.zeros(n, np.int32),
            top_p=np.ones(n, np.float32),
        )

    def free(self) -> list[int]:
        return [i for i, r in enumerate(self.requests) if r is None]

    def active(self) -> np.ndarray:
        return np.array([r is not None for r in self.requests])

    def any_active(self) -> bool:
        return any(r is not None for r in self.requests)

    def place(self, slot: int, req: Request, first_token: int) -> None:
        """Slot `slot` now decodes `req`, whose prefill sampled `first_token`."""
        p = req.params
        self.requests[slot] = req
        self.n_gen[slot] = 1
        self.last[slot] = first_token
        self.max_new[slot] = req.max_new
        self.seed[slot] = req.seed
        self.temp[slot] = p.temperature
        self.top_k[slot] = p.top_k
        self.top_p[slot] = p.top_p

    def advance(self, slot: int, token: int) -> None:
        """Account one decoded token of the slot's request."""
        self.n_gen[slot] += 1
        self.last[slot] = token

    def release(self, rid: int) -> bool:
        """Free the slot decoding request `rid`; whether one was."""
        for slot, req in enumerate(self.requests):
            if req is not None and req.rid == rid:
                self.requests[slot] = None
                return True
        return False
