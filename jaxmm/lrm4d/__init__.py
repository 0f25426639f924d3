"""4D-LRM inference and evaluation API.

    from jaxmm import lrm4d
    model = lrm4d.load("runs/lrm4d_tiny")                 # latest checkpoint + its config
    g4d = model.reconstruct(images, cameras, times)       # one forward pass -> Gaussians4D
    frame = model.render(g4d, camera, t)                  # any view at any time: .rgb [H, W, 3]
    metrics = lrm4d.evaluate(model, dataset, setup="alternating_canonical")

Times are in the model's units, [-1, 1] over the clip (frame k of K -> 2k/(K-1) - 1).
Camera setups follow the paper: `alternating_canonical` (one view per frame cycling
front/left/back/right), `frame_interpolation` (front and back views on even frames; odd frames
are never seen), `two_rotating` (two opposite cameras orbiting over the clip, alternating frames).

Modules: `inference` (load / reconstruct / render / filters), `setups` (camera setups and
evaluation clips), `evaluate` (metrics next to the baselines), `media` (GIF / MP4 / PNG / PLY).
The `make demo` job that trains and evaluates the tiny model is `launch/demo.py`.
"""

from jaxmm.lrm4d.evaluate import evaluate, evaluate_synthetic, evaluate_workdir, format_table
from jaxmm.lrm4d.inference import LRM4DModel, apply_filters, keep_mask, load
from jaxmm.lrm4d.media import (
    contact_sheet,
    save_ply,
    turntable,
    write_gif,
    write_mp4,
    write_png,
)
from jaxmm.lrm4d.setups import (
    CANONICAL_AZIMUTH_DEG,
    SETUPS,
    camera_azimuths,
    clip_cameras,
    dnerf_eval_clip,
    select_input_views,
    setup_views,
    synthetic_eval_clips,
)

__all__ = [
    "CANONICAL_AZIMUTH_DEG",
    "SETUPS",
    "LRM4DModel",
    "apply_filters",
    "camera_azimuths",
    "clip_cameras",
    "contact_sheet",
    "dnerf_eval_clip",
    "evaluate",
    "evaluate_synthetic",
    "evaluate_workdir",
    "format_table",
    "keep_mask",
    "load",
    "save_ply",
    "select_input_views",
    "setup_views",
    "synthetic_eval_clips",
    "turntable",
    "write_gif",
    "write_mp4",
    "write_png",
]
