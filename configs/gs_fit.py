"""Per-scene 3D / 4D Gaussian splatting fit (jaxmm/tasks/gs_fit.py).

    python launch/train.py --config configs/gs_fit.py:scene --workdir runs/lego \
        --config.data.path=data/lego                  # D-NeRF/NeRF-synthetic or COLMAP folder
    python launch/train.py --config configs/gs_fit.py:tiny --workdir runs/gs_fit  # procedural

A D-NeRF folder whose frames have different times is fitted with 4D Gaussians. Writes metrics
(eval/psnr_test, ssim_test, lpips_test with --config.evaluation.lpips_weights), held-out
renders and a contact sheet (workdir/renders/step_*/), turntable.gif/.mp4 and gaussians.ply
(3DGS layout, SH rest included). Variants: `scene` (a user's folder, CPU-sized: 128² views),
`tiny` (procedural, 48², minutes), `base` (GPU: 256², more Gaussians), `runlocal` (smoke).
"""

import ml_collections

from jaxmm.config import base_config, parse_variant


def get_config(arg: str | None = None):
    variant = parse_variant(arg, ("scene", "tiny", "base", "runlocal"), default="tiny")
    c = base_config()
    c.task = "gs_fit"
    c.num_steps = {"scene": 3000, "tiny": 500, "base": 7000, "runlocal": 20}[variant]
    c.batch_size = {"scene": 1, "runlocal": 2}.get(variant, 4)  # views per step (3DGS: 1)
    c.checkpoint.every_steps = 500
    c.log_every_steps = 50
    c.eval_every_steps = {"runlocal": 0}.get(variant, 500)

    m = c.model
    m.capacity = {"scene": 20000, "tiny": 4096, "base": 200000, "runlocal": 512}[variant]
    m.init = "auto"  # auto: SfM points if the folder has them, else random | sfm | random
    m.num_init = {"scene": 1000, "tiny": 512, "base": 20000, "runlocal": 256}[variant]
    m.init_extent = 1.0  # random init: uniform in [-e, e]^3 (scene units)
    m.init_time_scale = 0.25  # 4D: initial time std-dev as a fraction of the time span
    m.sh_degree = 3
    m.sh_degree_every = {"runlocal": 5}.get(variant, 250)  # one more band every N steps
    m.ssim_weight = 0.2
    m.lr = ml_collections.ConfigDict()
    # 3DGS's rates (positions × scene extent, decaying exponentially), raised for short runs.
    m.lr.means = 1.6e-3
    m.lr.means_final = 1.6e-5
    m.lr.log_scales = 5e-3
    m.lr.rotation = 1e-3
    m.lr.opacity_logits = 5e-2
    m.lr.sh_dc = 5e-3  # sh_rest gets 1/20 of it
    d = m.densify = ml_collections.ConfigDict()
    d.start = {"runlocal": 2}.get(variant, 100)
    d.stop = {"scene": 2000, "tiny": 400, "base": 5000, "runlocal": 20}[variant]
    d.every = {"runlocal": 5}.get(variant, 100)
    d.grad_threshold = 2e-4  # mean view-space gradient (3DGS's NDC units)
    d.percent_dense = 0.01  # clone if max scale <= this × extent, else split
    d.min_opacity = 0.005
    d.max_scale = 0.1  # prune when max scale > this × extent (0: never)
    d.reset_every = {"scene": 1000, "tiny": 0, "base": 3000, "runlocal": 0}[variant]
    d.reset_ceiling = 0.01
    d.seed = 0
    # Renderer: "auto" = Pallas on GPU, dense compositor on CPU where it fits (else reference).
    m.impl = "auto"
    m.tile_size = {"base": 16}.get(variant, 8)  # dense on CPU: small tiles need a smaller cap
    m.max_per_tile = {"scene": 512, "tiny": 512, "base": 4096, "runlocal": 512}[variant]
    m.intersections = 16 * m.capacity  # tiled renderers' intersection buffer
    m.on_overflow = "error"  # "error": TileOverflowError naming tile, count, cap | "count"

    c.data.path = ""  # scene folder; "" renders the procedural object in memory
    c.data.background = "white"  # white | black | random (per step; eval on white)
    c.data.downscale = 1
    c.data.test_every = 8  # COLMAP: every 8th image (by name) is a test view
    c.data.image_size = {"scene": 128, "tiny": 48, "base": 256, "runlocal": 32}[variant]
    c.data.num_train_views = {"runlocal": 8}.get(variant, 40)  # procedural only
    c.data.num_test_views = 8
    c.data.seed = 0

    c.evaluation = ml_collections.ConfigDict()
    c.evaluation.lpips_weights = ""  # LPIPS weights file(s) (see jaxmm.eval.lpips)
    c.evaluation.turntable_frames = {"runlocal": 0}.get(variant, 24)
    c.evaluation.mp4 = True
    return c
