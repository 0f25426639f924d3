"""Device mesh and logical-axis sharding (MaxText style).

Model code names logical axes (`batch`, `embed`, `heads`, ...); one rules table in the
config maps them to the mesh axes `data`, `fsdp`, `tensor`. Parameters and optimizer state
are created already sharded by jitting `init` with these shardings as `out_shardings`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

Rules = Sequence[tuple[str, Any]]

MESH_AXES = ("data", "fsdp", "tensor")

# Default logical-axis rules: logical name -> mesh axis / axes / None. Data parallel over
# (data, fsdp); parameters' `embed` axis sharded over fsdp (ZeRO-3 style); heads / mlp / vocab
# over tensor (Megatron style).
DEFAULT_RULES: tuple[tuple[str, str | tuple[str, ...] | None], ...] = (
    ("batch", ("data", "fsdp")),
    ("seq", None),
    ("embed", "fsdp"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("head_dim", None),
    ("mlp", "tensor"),
    ("vocab", "tensor"),
)


def resolve_mesh_shape(
    mesh_cfg: Mapping[str, int], num_devices: int | None = None
) -> dict[str, int]:
    """Checks `config.mesh` and fills its one -1 axis with the remaining devices.

    Without `num_devices` only the sizes themselves are checked (config validation before any
    device is known) and a -1 axis stays -1.
    """
    sizes = {a: mesh_cfg[a] for a in MESH_AXES}
    if not all(isinstance(s, int) and (s == -1 or s >= 1) for s in sizes.values()):
        raise ValueError(f"config.mesh: axis sizes must be >= 1 or -1, got {sizes}")
    wild = [a for a, s in sizes.items() if s == -1]
    if len(wild) > 1:
        raise ValueError(f"config.mesh: at most one axis may be -1, got {sizes}")
    if num_devices is None:
        return sizes
    fixed = math.prod(s for s in sizes.values() if s != -1)
    if wild:
        if num_devices % fixed:
            raise ValueError(
                f"config.mesh: {num_devices} devices are not divisible by the fixed axes "
                f"{ {a: s for a, s in sizes.items() if s != -1} } (product {fixed})"
            )
        sizes[wild[0]] = num_devices // fixed
    if math.prod(sizes.values()) != num_devices:
        raise ValueError(
            f"config.mesh: axis sizes {sizes} multiply to {math.prod(sizes.values())}, "
            f"but there are {num_devices} devices"
        )
    return sizes


def make_mesh(mesh_cfg: Mapping[str, int], devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A (data, fsdp, tensor) mesh over all devices (of all processes)."""
    devices = list(devices if devices is not None else jax.devices())
    shape = resolve_mesh_shape(mesh_cfg, len(devices))
    dims = tuple(shape[a] for a in MESH_AXES)
    try:
        device_array = mesh_utils.create_device_mesh(dims, devices=devices)
    except (ValueError, NotImplementedError, AssertionError):
        device_array = np.asarray(devices).reshape(dims)
    return Mesh(device_array, MESH_AXES)


def logical_to_spec(logical_axes: Sequence[str | None] | None, rules: Rules) -> PartitionSpec:
    """Maps logical axis names to a PartitionSpec; a mesh axis is used at most once."""
    if logical_axes is None:
        return PartitionSpec()
    return nn.logical_to_mesh_axes(tuple(logical_axes), tuple(rules))


def logical_sharding(mesh: Mesh, logical_axes: Sequence[str | None] | None, rules: Rules):
    return NamedSharding(mesh, logical_to_spec(logical_axes, rules))


def params_shardings(abstract_params: Any, mesh: Mesh, rules: Rules) -> Any:
    """NamedShardings for a (possibly logically partitioned) param tree; unnamed -> replicated."""
    specs = nn.get_partition_spec(abstract_params)
    specs = nn.logical_to_mesh(specs, tuple(rules))
    specs = unbox(specs)
    return jax.tree.map(
        lambda s: NamedSharding(mesh, s if s is not None else PartitionSpec()),
        specs,
        is_leaf=lambda x: isinstance(x, PartitionSpec) or x is None,
    )


def unbox(tree: Any) -> Any:
    """Strips Flax partitioning metadata boxes, leaving plain arrays."""
    return nn.meta.unbox(tree)


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def shard_batch(batch: Any, mesh: Mesh, logical_axes: Any, rules: Rules) -> Any:
    """Turns this process's numpy batch into global jax.Arrays sharded by logical axes."""
    shardings = jax.tree.map(
        lambda axes: logical_sharding(mesh, axes, rules),
        logical_axes,
        is_leaf=lambda x: isinstance(x, tuple),
    )
    return jax.tree.map(
        lambda x, s: jax.make_array_from_process_local_data(s, np.asarray(x)), batch, shardings
    )


def batch_mesh_axes(rules: Rules | None = None) -> tuple[str, ...]:
    """The mesh axes the logical `batch` axis maps to: under `rules`, else the active
    `nn.logical_axis_rules` context (the trainer sets `config.logical_axis_rules`), else
    DEFAULT_RULES (("data", "fsdp"))."""
    if rules is None:
        rules = nn.get_logical_axis_rules() or DEFAULT_RULES
    for name, axes in rules:
        if name == "batch":
            if axes is None:
                return ()
            return (axes,) if isinstance(axes, str) else tuple(axes)
    return ()


def shard_map_batch(fn: Callable, rules: Rules | None = None) -> Callable:
    """`fn` run per batch shard with `jax.shard_map` over the current mesh's batch axes.

    Every input and output leaf of `fn` must have the batch as its leading axis, and `fn` must
    treat batch elements independently (e.g. a `jax.vmap`). This is for ops XLA cannot
    partition, above all `pallas_call` (no partitioning rule: under GSPMD it is replicated, so
    every device would compute the whole global batch): inside the shard_map each device runs
    `fn` on its own [global_batch / n] slice, and the gradient's backward kernel runs per shard
    too. The mesh is manual over all its axes; inputs are split over the batch axes and
    replicated over the others (e.g. `tensor`, whose devices compute the same slice).

    `fn` itself runs, unchanged, when no mesh is set (`jax.set_mesh`), when the batch axes
    have one device in all, or when the batch does not divide over them.
    """

    def wrapped(*args):
        mesh = jax.sharding.get_abstract_mesh()
        if mesh.empty:
            return fn(*args)
        axes = tuple(a for a in batch_mesh_axes(rules) if mesh.shape.get(a, 1) > 1)
        n = math.prod(mesh.shape[a] for a in axes)
        sizes = {(jax.numpy.shape(x) or (None,))[0] for x in jax.tree.leaves(args)}
        if len(sizes) != 1:
            raise ValueError(f"shard_map_batch: leading (batch) dims differ: {sorted(sizes)}")
        if n == 1 or sizes.pop() % n:
            return fn(*args)
        spec = PartitionSpec(axes)
        return jax.shard_map(fn, mesh=mesh, in_specs=spec, out_specs=spec, check_vma=False)(*args)

    return wrapped
