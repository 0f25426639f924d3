"""Config helpers: the trainer's base config, variant parsing and validation with clear errors.

Every `configs/<experiment>.py` builds on `base_config()` and returns a locked ConfigDict,
so `--config.lerning_rate=1` fails and names the closest valid keys.
"""

from __future__ import annotations

import difflib
import importlib.util
import os
from collections.abc import Iterable, Sequence

import ml_collections

from jaxmm import sharding


def base_config() -> ml_collections.ConfigDict:
    """Fields the shared trainer reads. Experiments override and add `model` / `data`."""
    c = ml_collections.ConfigDict()
    c.task = ""
    c.seed = 0
    c.num_steps = 100
    c.batch_size = 8  # global, across all processes and accumulation steps
    c.grad_accum_steps = 1

    c.optimizer = ml_collections.ConfigDict()
    c.optimizer.name = "adamw"  # adamw | sgd | lion
    c.optimizer.learning_rate = 1e-3
    c.optimizer.b1 = 0.9
    c.optimizer.b2 = 0.999
    c.optimizer.weight_decay = 0.0
    c.optimizer.weight_decay_min_ndim = 2  # decay only params with ndim >= this
    c.optimizer.clip_norm = 1.0  # 0 disables
    c.optimizer.schedule = "cosine"  # cosine | linear | constant
    c.optimizer.warmup_steps = 0
    c.optimizer.end_lr_ratio = 0.0

    c.precision = ml_collections.ConfigDict()
    c.precision.param_dtype = "float32"
    c.precision.compute_dtype = "float32"  # bfloat16 on GPU/TPU

    c.mesh = ml_collections.ConfigDict()
    c.mesh.data = -1  # -1: all devices not used by the other axes
    c.mesh.fsdp = 1
    c.mesh.tensor = 1
    c.logical_axis_rules = sharding.DEFAULT_RULES

    c.checkpoint = ml_collections.ConfigDict()
    c.checkpoint.every_steps = 50
    c.checkpoint.keep = 3
    c.checkpoint.async_save = True

    c.log_every_steps = 10
    c.eval_every_steps = 0  # 0: evaluate only at the end
    c.profile_steps = ()  # (first_step, num_steps): trace that window into workdir/profile
    c.max_consecutive_nonfinite = 5
    # Wall-clock budget of this process's training loop (compile included); 0 = none. When it
    # runs out the run saves, evaluates and ends as if num_steps were reached.
    c.max_train_minutes = 0.0
    c.progress_bar = True
    c.init_from = ""  # workdir or checkpoint dir whose params initialise this run (curricula)

    c.model = ml_collections.ConfigDict()
    c.data = ml_collections.ConfigDict()
    return c


def parse_arg(
    arg: str | None, *, variants: Sequence[str], default: str, **options
) -> ml_collections.ConfigDict:
    """`configs/x.py:<arg>` in big_vision's style: `variant[,key=value][,flag]...`.

    The first token names the variant (`default` when absent or empty); `key=value` sets one of
    `options` (parsed as the type of its default); a bare `flag` sets a bool option to True.
    E.g. `parse_arg("large,res=256", variants=SIZES, default="tiny", res=0)` ->
    {variant: "large", res: 256}. Unknown variants and keys raise, naming the valid ones.
    """
    tokens = [t.strip() for t in (arg or "").split(",")]
    name = tokens[0] if tokens and "=" not in tokens[0] else ""
    rest = tokens[1:] if name or (tokens and not tokens[0]) else tokens
    out = ml_collections.ConfigDict({"variant": _one_of(name or default, variants, "variant")})
    out.update(options)
    for token in filter(None, rest):
        key, eq, raw = token.partition("=")
        key = _one_of(key.strip(), list(options), "config argument")
        current = options[key]
        if not eq:
            if not isinstance(current, bool):
                raise ValueError(f"config argument {key!r} needs a value: {key}=...")
            out[key] = True
            continue
        try:
            out[key] = (
                (raw.strip().lower() in ("1", "true", "yes"))
                if isinstance(current, bool)
                else type(current)(raw.strip())
            )
        except ValueError:
            raise ValueError(
                f"config argument {key}={raw!r}: expected a {type(current).__name__}"
            ) from None
    return out


def parse_variant(arg: str | None, variants: Sequence[str], default: str) -> str:
    """Returns the variant named by `configs/x.py:<arg>`, or raises naming the valid ones."""
    return parse_arg(arg, variants=variants, default=default).variant


def _one_of(name: str, valid: Sequence[str], what: str) -> str:
    if name not in valid:
        close = difflib.get_close_matches(name, valid, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        label = "unknown config variant" if what == "variant" else f"unknown {what}"
        raise ValueError(f"{label} {name!r}; choose one of {list(valid)}.{hint}")
    return name


def lock(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    config.lock()
    return config


def _all_keys(config: ml_collections.ConfigDict, prefix: str = "") -> list[str]:
    keys = []
    for k, v in config.items():
        full = f"{prefix}{k}"
        keys.append(full)
        if isinstance(v, ml_collections.ConfigDict):
            keys.extend(_all_keys(v, full + "."))
    return keys


def apply_overrides(config: ml_collections.ConfigDict, overrides: Iterable[str]) -> None:
    """Applies `key.sub=value` strings (values parsed as Python literals when possible)."""
    import ast

    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r} must look like key.sub=value")
        key, raw = item.split("=", 1)
        try:
            value = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            value = raw
        set_key(config, key, value)


def set_key(config: ml_collections.ConfigDict, dotted: str, value) -> None:
    """Sets one dotted key, failing with the closest valid keys when it does not exist."""
    node = config
    parts = dotted.split(".")
    for i, part in enumerate(parts):
        if not isinstance(node, ml_collections.ConfigDict) or part not in node:
            raise KeyError(unknown_key_message(config, dotted))
        if i < len(parts) - 1:
            node = node[part]
    current = node[parts[-1]]
    if isinstance(current, float) and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if isinstance(current, tuple) and isinstance(value, list):
        value = tuple(value)
    try:
        with node.unlocked():
            node[parts[-1]] = value
    except TypeError as e:
        raise TypeError(
            f"config.{dotted}: cannot set {value!r} ({type(value).__name__}) on a field of type "
            f"{type(current).__name__}"
        ) from e


def unknown_key_message(config: ml_collections.ConfigDict, dotted: str) -> str:
    close = difflib.get_close_matches(dotted, _all_keys(config), n=3, cutoff=0.5)
    hint = f" Closest valid keys: {close}." if close else ""
    return f"config has no key {dotted!r}.{hint}"


def load_config_file(spec: str) -> ml_collections.ConfigDict:
    """Loads `path/to/config.py[:arg]` and returns its locked `get_config(arg)`."""
    path, _, arg = spec.partition(":")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"config file {path!r} does not exist")
    mod_spec = importlib.util.spec_from_file_location("_jaxmm_config", path)
    module = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise ValueError(f"config file {path!r} defines no get_config(arg)")
    config = module.get_config(arg or None)
    config.lock()
    return config


def validate(config: ml_collections.ConfigDict, num_devices: int | None = None) -> None:
    """Checks the trainer fields before any device work; raises ValueError naming the field."""

    def need(cond: bool, field: str, msg: str) -> None:
        if not cond:
            raise ValueError(f"config.{field}: {msg}")

    need(
        isinstance(config.task, str) and config.task != "", "task", "must name a jaxmm.tasks module"
    )
    need(
        isinstance(config.num_steps, int) and config.num_steps > 0,
        "num_steps",
        "must be an int > 0",
    )
    need(isinstance(config.batch_size, int) and config.batch_size > 0, "batch_size", "must be > 0")
    need(
        config.get("max_train_minutes", 0) >= 0, "max_train_minutes", "must be >= 0 (0 = no budget)"
    )
    accum = config.grad_accum_steps
    need(isinstance(accum, int) and accum >= 1, "grad_accum_steps", "must be an int >= 1")
    need(
        config.batch_size % accum == 0,
        "batch_size",
        f"{config.batch_size} is not divisible by grad_accum_steps={accum}",
    )
    opt = config.optimizer
    need(opt.name in ("adamw", "sgd", "lion"), "optimizer.name", f"unknown optimizer {opt.name!r}")
    need(opt.learning_rate > 0, "optimizer.learning_rate", "must be > 0")
    need(
        opt.schedule in ("cosine", "linear", "constant"),
        "optimizer.schedule",
        f"unknown schedule {opt.schedule!r}",
    )
    need(
        0 <= opt.warmup_steps <= config.num_steps,
        "optimizer.warmup_steps",
        f"must be in [0, num_steps={config.num_steps}]",
    )
    need(opt.clip_norm >= 0, "optimizer.clip_norm", "must be >= 0")
    for field in ("param_dtype", "compute_dtype"):
        need(
            config.precision[field] in ("float32", "bfloat16", "float16"),
            f"precision.{field}",
            f"{config.precision[field]!r} is not float32/bfloat16/float16",
        )
    need(config.checkpoint.every_steps >= 0, "checkpoint.every_steps", "must be >= 0")
    need(config.checkpoint.keep >= 1, "checkpoint.keep", "must be >= 1")
    prof = tuple(config.profile_steps)
    need(
        len(prof) in (0, 2) and all(isinstance(p, int) and p >= 0 for p in prof),
        "profile_steps",
        "must be () or (first_step, num_steps)",
    )
    rule_names = [r[0] for r in config.logical_axis_rules]
    for name, axes in config.logical_axis_rules:
        for ax in (axes,) if isinstance(axes, str) else (axes or ()):
            need(
                ax in sharding.MESH_AXES,
                "logical_axis_rules",
                f"rule {name!r} -> unknown mesh axis {ax!r}",
            )
    need(len(set(rule_names)) == len(rule_names), "logical_axis_rules", "duplicate logical names")
    # The mesh is checked by the one function that builds it (errors name config.mesh).
    shape = sharding.resolve_mesh_shape(config.mesh, num_devices)
    if num_devices is not None:
        data_par = shape["data"] * shape["fsdp"]
        need(
            config.batch_size // accum % data_par == 0,
            "batch_size",
            f"micro-batch {config.batch_size // accum} is not divisible by the data-parallel "
            f"size data*fsdp={data_par}",
        )
