"""Optimizer and learning-rate schedule from `config.optimizer` (optax)."""

from __future__ import annotations

import math
from typing import Any

import jax
import ml_collections
import optax


def make_schedule(opt_cfg: ml_collections.ConfigDict, num_steps: int) -> optax.Schedule:
    """Linear warmup, then cosine / linear decay to `end_lr_ratio * lr`, or constant."""
    lr = float(opt_cfg.learning_rate)
    warmup = int(opt_cfg.warmup_steps)
    end = lr * float(opt_cfg.end_lr_ratio)
    decay_steps = max(num_steps - warmup, 1)
    if opt_cfg.schedule == "cosine":
        main = optax.cosine_decay_schedule(lr, decay_steps, alpha=opt_cfg.end_lr_ratio)
    elif opt_cfg.schedule == "linear":
        main = optax.linear_schedule(lr, end, decay_steps)
    else:
        main = optax.constant_schedule(lr)
    if warmup == 0:
        return main
    return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), main], [warmup])


def epoch_schedule(
    epochs: float, num_examples: int, global_batch: int, warmup_ratio: float = 0.0
) -> tuple[int, int]:
    """A recipe given in epochs -> (num_steps, warmup_steps) for the trainer, which counts
    steps: num_steps = ceil(epochs * num_examples / global_batch) (the last partial batch is
    a step), warmup = round(warmup_ratio * num_steps)."""
    if epochs <= 0 or num_examples <= 0 or global_batch <= 0:
        raise ValueError(
            f"epoch_schedule: epochs ({epochs}), num_examples ({num_examples}) and global_batch "
            f"({global_batch}) must all be > 0"
        )
    if not 0.0 <= warmup_ratio < 1.0:
        raise ValueError(f"epoch_schedule: warmup_ratio must be in [0, 1), got {warmup_ratio}")
    num_steps = math.ceil(epochs * num_examples / global_batch)
    return num_steps, round(warmup_ratio * num_steps)


def decay_mask(params: Any, min_ndim: int) -> Any:
    """Weight decay only on matrices and larger (not on biases, norms, scalars)."""
    return jax.tree.map(lambda p: p.ndim >= min_ndim, params)


def lr_scale_labels(params: Any, scales: dict[str, float]) -> Any:
    """Per leaf, the first key of `scales` that names a module on its path, else "base"."""

    def label(path, _):
        names = [getattr(k, "key", getattr(k, "name", None)) for k in path]
        return next((name for name in scales if name in names), "base")

    return jax.tree_util.tree_map_with_path(label, params)


def make_optimizer(
    opt_cfg: ml_collections.ConfigDict,
    num_steps: int,
    trainable: Any | None = None,
    params: Any | None = None,
) -> optax.GradientTransformation:
    """Clip -> optimizer with schedule; frozen leaves (trainable=False) get zero updates.

    `opt_cfg.lr_scale` (optional, {module name: factor}): parameter groups whose learning rate
    is the schedule times the factor, e.g. {"frames": 10.0} for a newly initialised module
    trained beside pretrained ones (a leaf joins the first group whose name is a key on its
    path; `params`, the parameter tree or its shapes, is then required to name the groups).
    The gradient clip stays global over all parameters."""
    schedule = make_schedule(opt_cfg, num_steps)
    mask_fn = lambda p: decay_mask(p, opt_cfg.weight_decay_min_ndim)

    def optimizer(lr: optax.Schedule) -> optax.GradientTransformation:
        if opt_cfg.name == "adamw":
            return optax.adamw(
                lr, b1=opt_cfg.b1, b2=opt_cfg.b2, weight_decay=opt_cfg.weight_decay, mask=mask_fn
            )
        if opt_cfg.name == "lion":
            return optax.lion(
                lr, b1=opt_cfg.b1, b2=opt_cfg.b2, weight_decay=opt_cfg.weight_decay, mask=mask_fn
            )
        if opt_cfg.name == "sgd":
            return optax.chain(
                optax.add_decayed_weights(opt_cfg.weight_decay, mask_fn),
                optax.sgd(lr, momentum=opt_cfg.b1 or None),
            )
        raise ValueError(f"config.optimizer.name: unknown optimizer {opt_cfg.name!r}")

    scales = {str(k): float(v) for k, v in dict(opt_cfg.get("lr_scale", None) or {}).items()}
    for name, factor in scales.items():
        if not factor > 0:
            raise ValueError(f"config.optimizer.lr_scale.{name}: must be > 0, got {factor}")
    if not scales:
        opt = optimizer(schedule)
        if opt_cfg.clip_norm > 0:
            opt = optax.chain(optax.clip_by_global_norm(opt_cfg.clip_norm), opt)
        if trainable is not None:
            labels = jax.tree.map(lambda t: "train" if t else "freeze", trainable)
            opt = optax.multi_transform({"train": opt, "freeze": optax.set_to_zero()}, labels)
        return opt

    groups = {"base": optimizer(schedule), "freeze": optax.set_to_zero()}
    for name, factor in scales.items():
        groups[name] = optimizer(lambda step, f=factor: f * schedule(step))

    if params is None:
        raise ValueError("config.optimizer.lr_scale needs make_optimizer(..., params=) to label")
    labels = lr_scale_labels(params, scales)
    missing = set(scales) - set(jax.tree.leaves(labels))
    if missing:
        raise ValueError(f"config.optimizer.lr_scale: {sorted(missing)} name no parameter module")
    if trainable is not None:
        labels = jax.tree.map(lambda n, t: n if t else "freeze", labels, trainable)
    opt = optax.multi_transform(groups, labels)
    if opt_cfg.clip_norm > 0:
        opt = optax.chain(optax.clip_by_global_norm(opt_cfg.clip_norm), opt)
    return opt
