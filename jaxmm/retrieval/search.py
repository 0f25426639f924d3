"""Exhaustive MaxSim search with documents sharded over every device of a mesh.

Each device scores its slice of the documents with the streaming top-k MaxSim
(`kernels_pallas.maxsim.maxsim_topk`: `impl="auto"` is Pallas on GPU and the reference
elsewhere; `impl="pallas"` interprets off GPU unless `interpret=` says otherwise), keeps a
local top-k, and the per-device lists are merged into the global top-k. Queries are
replicated. Because max and top-k commute with partitioning, the result equals single-device
search.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from kernels_pallas.maxsim import maxsim_topk


def default_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A 1-D mesh over all devices, axis name `docs`."""
    devices = list(devices if devices is not None else jax.devices())
    return Mesh(np.asarray(devices), ("docs",))


def num_doc_shards(mesh: Mesh, doc_axes: Sequence[str]) -> int:
    return math.prod(mesh.shape[a] for a in doc_axes)


def doc_sharding(mesh: Mesh, doc_axes: Sequence[str]) -> NamedSharding:
    return NamedSharding(mesh, P(tuple(doc_axes)))


@functools.partial(
    jax.jit,
    static_argnames=(
        "k", "mesh", "doc_axes", "num_modalities", "normalize", "impl", "interpret", "chunk_docs",
    ),
)  # fmt: skip
def sharded_search(
    queries: jax.Array,
    q_mask: jax.Array,
    docs: jax.Array,
    doc_side: jax.Array,
    doc_valid: jax.Array,
    *,
    k: int,
    mesh: Mesh,
    doc_axes: tuple[str, ...],
    num_modalities: int | None = None,
    normalize: bool = False,
    impl: str = "auto",
    interpret: bool | None = None,
    chunk_docs: int = 8192,
):
    """Top-k (scores, doc_index) [n_q, k] over docs [n_d, d_len, dim] split along n_d.

    `doc_side` is the doc mask [n_d, d_len] (0/1) or, with `num_modalities`, modality ids
    (0 = pad); `doc_valid` [n_d] marks real documents (padding docs score -inf). n_d must be
    a multiple of the number of shards.
    """
    n_shards = num_doc_shards(mesh, doc_axes)
    n_d = docs.shape[0]
    if n_d % n_shards:
        raise ValueError(f"n_d={n_d} must be a multiple of the {n_shards} document shards")
    n_local = n_d // n_shards
    local_k = min(k, n_local)

    def local_topk(q, qm, d, side, valid):
        kw = dict(doc_valid=valid, chunk_docs=chunk_docs, impl=impl, interpret=interpret)
        if num_modalities is None:
            s, i = maxsim_topk(q, qm, d, side, local_k, normalize, **kw)
        else:
            s, i = maxsim_topk(
                q, qm, d, side > 0, local_k, normalize,
                d_modality=side, num_modalities=num_modalities, **kw,
            )  # fmt: skip
        shard = jax.lax.axis_index(doc_axes)
        return s, jnp.where(i >= 0, i + shard * n_local, -1)

    doc_spec = P(doc_axes)
    local_s, local_i = jax.shard_map(
        local_topk,
        mesh=mesh,
        in_specs=(P(), P(), doc_spec, doc_spec, doc_spec),
        out_specs=(P(None, doc_axes), P(None, doc_axes)),
        check_vma=False,
    )(queries, q_mask, docs, doc_side, doc_valid)
    top_s, pos = jax.lax.top_k(local_s, k)
    return top_s, jnp.take_along_axis(local_i, pos, axis=1)
