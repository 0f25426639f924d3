"""4D-LRM: posed images at arbitrary times -> per-pixel 4D Gaussians (arXiv 2506.18890).

    python launch/train.py --config configs/lrm4d.py:tiny --workdir runs/lrm4d_tiny

Variants:
  tiny      CPU demo: 32², 4×4 patches, 4 input / 4 supervision views, 4-layer width-128
            transformer, dense renderer.
  runlocal  tiny for 5 steps (smoke test of the whole path).
  small     8 layers, width 512, 64², 8 input / 8 supervision views.
  base      paper base (12/768/12), stage 1: 128², 12 input / 24 supervision views, 24 frames.
  large     paper large (24/1024/16), stage 1 at 128².
Arguments after the size (big_vision style, `configs/lrm4d.py:<size>[,key=value]`):
  res=256   stage 2 of the curriculum: 256², initialised (params only) from the stage-1
      workdir in `init_from` (default runs/lrm4d_<size>; the model has no positional
      embedding, so the same params serve both resolutions):
      python launch/train.py --config configs/lrm4d.py:large --workdir runs/lrm4d_large
      python launch/train.py --config configs/lrm4d.py:large,res=256 \
          --workdir runs/lrm4d_large_256
Perceptual loss: pass --config.loss.vgg19_weights=/path/vgg19.safetensors (see jaxmm/nn/vgg.py).
"""

from jaxmm.config import base_config, parse_arg

VARIANTS = ("tiny", "runlocal", "small", "base", "large")


def get_config(arg: str | None = None):
    args = parse_arg(arg, variants=VARIANTS, default="tiny", res=0)
    variant = args.variant
    size_name = variant if variant != "runlocal" else "tiny"
    if args.res not in (0, 256):
        raise ValueError(f"configs/lrm4d.py: res={args.res}; 256 (curriculum stage 2) or unset")
    stage2 = args.res == 256
    cpu = size_name == "tiny"

    c = base_config()
    c.task = "lrm4d"
    c.num_steps = {"tiny": 300, "small": 20_000, "base": 100_000, "large": 100_000}[size_name]
    if variant == "runlocal":
        c.num_steps = 5
    if stage2:
        c.num_steps = 20_000
        c.init_from = f"runs/lrm4d_{size_name}"
    c.batch_size = 8 if cpu else 256
    c.optimizer.name = "adamw"
    c.optimizer.learning_rate = 3e-3 if cpu else 4e-4  # tiny: short CPU run, small model
    c.optimizer.b1, c.optimizer.b2 = 0.9, 0.95
    c.optimizer.weight_decay = 0.05
    c.optimizer.clip_norm = 1.0
    c.optimizer.schedule = "cosine"
    c.optimizer.warmup_steps = min(c.num_steps // 10, 2_500) if not stage2 else 1_000
    c.precision.compute_dtype = "float32" if cpu else "bfloat16"
    c.checkpoint.every_steps = 100 if cpu else 2_000
    c.log_every_steps = 20 if cpu else 100
    c.progress_bar = True

    c.model.size = size_name  # tiny | small | base | large (jaxmm.models.lrm4d.SIZES)
    # 8×8 as in the paper; tiny's 32² views would give only 16 tokens each, so it uses 4×4
    # (64 tokens per view; +0.6 dB PSNR and +0.03 SSIM on the demo at about the same cost).
    c.model.patch_size = 4 if cpu else 8
    c.model.width = None  # None: from the size
    c.model.num_layers = None
    c.model.num_heads = None
    c.model.num_free_gaussians = 0
    c.model.remat = not cpu
    c.model.renderer = "dense" if cpu else "splat"  # dense: small-image CPU compositor
    # dense renderer: nearest Gaussians kept per 8x8 tile (0: all; dropped pairs are counted in
    # stats.tile_overflow). The trained demo model's busiest tiles list ~300; keeping 256 halves
    # the step time against 512 and moved its renders by < 0.09 (max abs, 3 test views).
    c.model.render_capacity = 256
    # Supervision views rendered together (vmap) per checkpointed step: all of them on the CPU
    # demo (small images: parallelism wins), one at a time at scale (bounds activation memory).
    c.model.render_views_per_step = 4 if cpu else 1

    d = c.data
    d.image_size = {"tiny": 32, "small": 64, "base": 128, "large": 128}[size_name]
    if stage2:
        d.image_size = 256
    d.num_frames = 24
    d.num_input_views = 4 if cpu else (8 if size_name == "small" else 12)
    d.num_target_views = 4 if cpu else (8 if size_name == "small" else 24)
    d.max_primitives = 2 if cpu else 3
    d.points_per_primitive = 96
    d.seed = 0

    c.loss = base_config().model  # an empty ConfigDict
    c.loss.mse_weight = 1.0
    c.loss.perceptual_weight = 0.5
    c.loss.vgg19_weights = ""  # local torchvision VGG-19 (.safetensors/.npz); "" = term off

    c.eval = base_config().model
    c.eval.num_scenes = 8 if cpu else 64
    c.eval.setup = "alternating_canonical"
    # LPIPS weights file(s), comma-separated (jaxmm/eval/lpips.py); "" = LPIPS not reported.
    c.eval.lpips_weights = ""
    # A D-NeRF folder to evaluate on instead of procedural objects (inputs follow eval.setup;
    # `data.*` keeps describing the procedural training stream).
    c.eval.data_path = ""
    return c
