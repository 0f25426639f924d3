"""Static cost of a config's train step: compile without running and read XLA's analyses.

`launch/profile.py` prints FLOPs, bytes accessed and memory (arguments, outputs, temporaries,
generated code) from the compiled executable, and can dump the optimised HLO. For a runtime
trace, set `--config.profile_steps=(10,5)` on `launch/train.py` and open
`<workdir>/profile` in TensorBoard or Perfetto.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

import jax
import ml_collections

from jaxmm import sharding
from jaxmm.train.task import Task
from jaxmm.train.trainer import Trainer


def compile_train_step(config: ml_collections.ConfigDict, task: Task, workdir: str | None = None):
    """Returns (trainer, compiled executable) for one train step of `task` under `config`."""
    workdir = workdir or tempfile.mkdtemp(prefix="jaxmm_profile_")
    trainer = Trainer(config, workdir, task)
    batch = next(trainer.data_iterator())
    step_fn, axes = trainer.compile_step(batch)
    abstract_batch = jax.tree.map(
        lambda x, a: jax.ShapeDtypeStruct(
            (x.shape[0] * jax.process_count(),) + x.shape[1:],
            x.dtype,
            sharding=sharding.logical_sharding(trainer.mesh, a, trainer.rules),
        ),
        batch,
        axes,
        is_leaf=lambda x: hasattr(x, "shape"),
    )
    with trainer._context():
        compiled = step_fn.lower(trainer.abstract_state, abstract_batch).compile()
    return trainer, compiled


def analyse(compiled) -> dict[str, Any]:
    """FLOPs / bytes from cost_analysis and byte counts from memory_analysis."""
    cost = compiled.cost_analysis()
    if isinstance(cost, list):  # older JAX returned one dict per device program
        cost = cost[0] if cost else {}
    cost = cost or {}
    out: dict[str, Any] = {
        "flops": float(cost.get("flops", 0.0)),
        "transcendentals": float(cost.get("transcendentals", 0.0)),
        "bytes_accessed": float(cost.get("bytes accessed", 0.0)),
    }
    mem = compiled.memory_analysis()
    if mem is not None:
        for field in (
            "argument_size_in_bytes",
            "output_size_in_bytes",
            "temp_size_in_bytes",
            "generated_code_size_in_bytes",
            "alias_size_in_bytes",
        ):
            out[field] = int(getattr(mem, field, 0))
    if out["bytes_accessed"]:
        out["arithmetic_intensity"] = out["flops"] / out["bytes_accessed"]
    return out


def dump_hlo(compiled, directory: str) -> str:
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, "train_step.optimized.hlo.txt")
    with open(path, "w") as f:
        f.write(compiled.as_text())
    return path


def format_report(stats: dict[str, Any], num_devices: int) -> str:
    def human(n: float, unit: str) -> str:
        for prefix in ("", "K", "M", "G", "T", "P"):
            if abs(n) < 1000:
                return f"{n:.3g} {prefix}{unit}"
            n /= 1000
        return f"{n:.3g} E{unit}"

    lines = [f"devices: {num_devices} ({jax.devices()[0].platform})"]
    labels = {
        "flops": ("FLOPs per step (per device program)", "FLOP"),
        "bytes_accessed": ("bytes accessed", "B"),
        "argument_size_in_bytes": ("memory: arguments", "B"),
        "output_size_in_bytes": ("memory: outputs", "B"),
        "temp_size_in_bytes": ("memory: temporaries", "B"),
        "generated_code_size_in_bytes": ("memory: generated code", "B"),
    }
    for key, (label, unit) in labels.items():
        if key in stats:
            lines.append(f"{label:40s} {human(stats[key], unit)}")
    if "arithmetic_intensity" in stats:
        lines.append(f"{'arithmetic intensity':40s} {stats['arithmetic_intensity']:.3g} FLOP/B")
    return "\n".join(lines)
