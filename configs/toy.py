"""Toy experiment: residual MLP regressing a random teacher; trains in seconds on CPU.

    python launch/train.py --config configs/toy.py:tiny --workdir runs/toy

Variants: `tiny` (CI / demo, ~10 s), `base` (wider, longer), `runlocal` (tiny, 20 steps).
"""

from jaxmm.config import base_config, parse_variant


def get_config(arg: str | None = None):
    variant = parse_variant(arg, ("tiny", "base", "runlocal"), default="tiny")
    c = base_config()
    c.task = "toy"
    c.num_steps = {"tiny": 200, "base": 2000, "runlocal": 20}[variant]
    c.batch_size = 32
    c.optimizer.learning_rate = 3e-3
    c.optimizer.warmup_steps = 10
    c.optimizer.weight_decay = 1e-4
    c.checkpoint.every_steps = 50
    c.log_every_steps = 20

    c.model.features = 64 if variant != "base" else 256
    c.model.hidden = 128 if variant != "base" else 1024
    c.model.depth = 2 if variant != "base" else 4

    c.data.d_in = 16
    c.data.d_out = 4
    c.data.train_size = 4096
    c.data.eval_size = 512
    c.data.seed = 0
    return c
