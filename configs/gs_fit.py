"""Per-scene 3D Gaussian splatting fit of a procedural scene (jaxmm/tasks/gs_fit.py).

    python launch/train.py --config configs/gs_fit.py:tiny --workdir runs/gs_fit

Writes metrics, checkpoints, held-out renders (workdir/renders/step_*/test_*.png: render |
ground truth) and the fitted Gaussians as a 3DGS PLY (workdir/gaussians.ply).
Variants: `tiny` (CPU, a few minutes, held-out PSNR > 25 dB), `base` (GPU: more Gaussians,
256² images, Pallas rasteriser), `runlocal` (smoke: 20 steps).
"""

from jaxmm.config import base_config, parse_variant


def get_config(arg: str | None = None):
    variant = parse_variant(arg, ("tiny", "base", "runlocal"), default="tiny")
    c = base_config()
    c.task = "gs_fit"
    c.num_steps = {"tiny": 500, "base": 3000, "runlocal": 20}[variant]
    c.batch_size = 4  # views per step
    c.optimizer.learning_rate = 1e-2
    c.optimizer.b2 = 0.99
    c.optimizer.warmup_steps = 0
    c.optimizer.clip_norm = 0.0
    c.optimizer.end_lr_ratio = 0.1
    c.checkpoint.every_steps = 200
    c.log_every_steps = 50
    c.eval_every_steps = 200

    c.model.num_gaussians = {"tiny": 512, "base": 16384, "runlocal": 256}[variant]
    c.model.init_extent = 0.9
    c.model.init_scale = 0.05
    c.model.mse_weight = 0.5
    c.model.capacity = 16 * c.model.num_gaussians
    # The CPU reference scans `max_per_tile` entries per tile whatever the real count;
    # longer lists are truncated and counted in the `tile_overflow` metric.
    c.model.max_per_tile = {"tiny": 384, "base": 16384, "runlocal": 256}[variant]
    c.model.impl = "auto"  # Pallas on GPU, pure-jnp reference on CPU

    c.data.image_size = {"tiny": 48, "base": 256, "runlocal": 32}[variant]
    c.data.num_train_views = 32
    c.data.num_test_views = 8
    c.data.seed = 0
    return c
