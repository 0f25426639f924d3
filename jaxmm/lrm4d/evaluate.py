"""PSNR / SSIM (/ LPIPS) of a 4D-LRM next to the nearest-view and mean-colour baselines."""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

from jaxmm.data import synthetic4d as syn
from jaxmm.eval import lrm4d_baselines as baselines
from jaxmm.eval.image_metrics import psnr, ssim
from jaxmm.eval.lpips import LPIPSMetric, as_metric
from jaxmm.lrm4d.inference import LRM4DModel, load
from jaxmm.lrm4d.media import (
    contact_sheet,
    save_ply,
    turntable,
    write_gif,
    write_mp4,
    write_png,
)
from jaxmm.lrm4d.setups import SETUPS, clip_cameras, dnerf_eval_clip, synthetic_eval_clips


def evaluate(
    model: LRM4DModel,
    dataset,
    setup: str = "alternating_canonical",
    *,
    num_scenes: int = 8,
    num_inputs: int | None = None,
    num_targets: int = 8,
    filters: bool = False,
    lpips_weights: str | LPIPSMetric | None = None,
    novel_times: bool = False,
    image_size: int | None = None,
) -> dict[str, float]:
    """PSNR / SSIM (/ LPIPS) of the model and the two baselines on held-out views and times.

    dataset: a `SceneSpec` or `Synthetic4D` (procedural held-out objects under `setup`), a
    D-NeRF folder path (inputs: the train views that follow `setup`, see
    `select_input_views`; targets: the test split), or a list of clip dicts (as returned by
    `synthetic_eval_clips`). num_inputs: default the count the model was trained with.
    Resolution contract: a model is evaluated at the resolution of its own config (the one it
    was last trained at); folder images are resized to it and `image_size` may only confirm it.
    lpips_weights: LPIPS weights file(s) (see `jaxmm.eval.lpips`) or a loaded metric; LPIPS is
    reported only when given. novel_times: procedural targets only at frames no input sees.
    """
    trained = int(model.config.data.image_size)
    if image_size is not None and int(image_size) != trained:
        raise ValueError(
            f"image_size={image_size}: this 4D-LRM was trained at {trained}x{trained} and is "
            f"evaluated at that resolution (images are resized to it); train or fine-tune at "
            f"{image_size} to evaluate there"
        )
    lpips = as_metric(lpips_weights)
    num_inputs = num_inputs or int(model.config.data.num_input_views)
    if isinstance(dataset, syn.Synthetic4D):
        dataset = dataset.spec
    if isinstance(dataset, syn.SceneSpec):
        clips = synthetic_eval_clips(
            dataset, num_scenes, setup, num_inputs, num_targets, novel_times=novel_times
        )
    elif isinstance(dataset, (str, os.PathLike)):
        clips = [dnerf_eval_clip(os.fspath(dataset), setup, num_inputs, trained)]
    else:
        clips = list(dataset)
    rows: dict[str, list[float]] = {}
    recon_s = []
    for clip in clips:
        t0 = time.perf_counter()
        g = model.reconstruct(
            clip["input_images"], clip_cameras(clip, "input"), clip["input_times"]
        )
        jax.block_until_ready(g)
        recon_s.append(time.perf_counter() - t0)
        target = clip["target_images"]
        preds = {
            "model": model.render_views(
                g, clip_cameras(clip, "target"), clip["target_times"], filters=filters
            ),
            "nearest_view": baselines.nearest_view(
                clip["input_images"],
                clip["input_c2w"],
                clip["input_times"],
                clip["target_c2w"],
                clip["target_times"],
            ),
            "mean_colour": baselines.mean_colour(clip["input_images"], len(target)),
        }
        for name, pred in preds.items():
            rows.setdefault(f"{name}/psnr", []).extend(np.asarray(psnr(pred, target)).tolist())
            rows.setdefault(f"{name}/ssim", []).extend(np.asarray(ssim(pred, target)).tolist())
            if lpips is not None:
                d = np.asarray(lpips(pred, target)).tolist()
                rows.setdefault(f"{name}/lpips", []).extend(d)
    metrics = {k: float(np.mean(v)) for k, v in rows.items()}
    for key in ("input_azimuth_gap_deg", "input_time_gap_frames"):
        gaps = [c["selection"][key] for c in clips if "selection" in c]
        if gaps:
            metrics[key] = float(np.mean(gaps))
    metrics["image_size"] = float(clips[0]["input_images"].shape[1])
    metrics["num_inputs"] = float(len(clips[0]["input_images"]))
    metrics["reconstruct_s"] = float(np.median(recon_s[1:] if len(recon_s) > 1 else recon_s))
    metrics["num_targets"] = float(len(rows["model/psnr"]))
    return metrics


def evaluate_synthetic(
    model: LRM4DModel, num_scenes: int = 8, setup: str = "alternating_canonical", **kw
) -> dict[str, float]:
    """Held-out procedural objects with the model's training-time input-view count."""
    if num_scenes <= 0:
        return {}
    kw.setdefault("num_inputs", model.config.data.num_input_views)
    return evaluate(
        model, syn.SceneSpec.from_config(model.config), setup, num_scenes=num_scenes, **kw
    )


def evaluate_workdir(
    workdir: str,
    *,
    setups: Sequence[str] = ("alternating_canonical",),
    num_scenes: int = 8,
    num_inputs: int | None = None,
    dnerf_root: str = "",
    filters: bool = False,
    out_dir: str | None = None,
    gif_frames: int = 24,
    lpips_weights: str | LPIPSMetric | None = None,
    novel_times: bool = False,
) -> dict:
    """Loads the workdir's model, evaluates each setup and writes into `out_dir`: metrics.json,
    prediction | ground truth as GIF and MP4 and a still (predicted row above ground-truth row)
    and a PLY at t = 0. With `dnerf_root` everything comes from that folder (the pictures show
    its test views: test_views.*); else from procedural held-out objects (turntable.*)."""
    lpips = as_metric(lpips_weights)  # a bad weights file fails before the model loads
    model = load(workdir)
    out_dir = out_dir or os.path.join(workdir, "eval")
    os.makedirs(out_dir, exist_ok=True)
    results: dict[str, Any] = {}
    n_in = num_inputs or int(model.config.data.num_input_views)
    for setup in setups:
        if dnerf_root:
            results[setup] = evaluate(
                model, dnerf_root, setup, num_inputs=n_in, filters=filters, lpips_weights=lpips
            )
        else:
            results[setup] = evaluate_synthetic(
                model,
                num_scenes,
                setup,
                num_inputs=n_in,
                filters=filters,
                lpips_weights=lpips,
                novel_times=novel_times,
            )
    pred, gt, g, stem = _media(model, dnerf_root, setups[0], n_in, gif_frames, filters)
    results["media_source"] = dnerf_root or "procedural held-out object"
    side_by_side = np.concatenate([pred, gt], axis=2)  # prediction | ground truth
    results["gif"] = write_gif(os.path.join(out_dir, f"{stem}.gif"), side_by_side)
    results["mp4"] = write_mp4(os.path.join(out_dir, f"{stem}.mp4"), side_by_side)
    results["png"] = write_png(
        os.path.join(out_dir, f"{stem}.png"),
        contact_sheet({"4D-LRM": pred, "ground truth": gt}),
    )
    results["ply"] = os.path.join(out_dir, "gaussians_t0.ply")
    results["ply_gaussians"] = save_ply(results["ply"], g, 0.0, filters=True)
    with open(os.path.join(out_dir, "metrics.json"), "w") as f:
        json.dump(results, f, indent=2, sort_keys=True)
    return results


def _media(model, dnerf_root: str, setup: str, n_in: int, gif_frames: int, filters: bool):
    """(predicted, ground-truth frames, Gaussians, file stem) for the run's pictures.

    A folder gives its test views in time order (`test_views.*`); the procedural path a
    turntable/time sweep of a held-out object (`turntable.*`).
    """
    if dnerf_root:
        clip = dnerf_eval_clip(dnerf_root, setup, n_in, int(model.config.data.image_size))
    else:
        spec = syn.SceneSpec.from_config(model.config)
        clip = synthetic_eval_clips(spec, 1, setup, n_in)[0]
    g = model.reconstruct(clip["input_images"], clip_cameras(clip, "input"), clip["input_times"])
    if not dnerf_root:
        pred, times = turntable(model, g, num_frames=gif_frames, filters=filters)
        return pred, _ground_truth_turntable(clip["scene"], spec, times), g, "turntable"
    order = np.argsort(clip["target_times"], kind="stable")
    cams = clip_cameras(clip, "target")
    pred = np.asarray(model.render_views(g, cams, clip["target_times"], filters=filters))
    return pred[order], clip["target_images"][order], g, "test_views"


def _ground_truth_turntable(
    scene, spec: syn.SceneSpec, times: np.ndarray, elevation_deg: float = 15.0, radius: float = 2.6
) -> np.ndarray:
    n = len(times)
    c2w = np.stack(
        [syn.orbit_c2w(2 * math.pi * j / n, math.radians(elevation_deg), radius) for j in range(n)]
    )
    rgb, _ = syn.render_scene(scene, c2w, times, spec)
    return rgb


def format_table(report: dict) -> str:
    """The PSNR / SSIM (/ LPIPS) table of an `evaluate_workdir` report, one row per method."""
    with_lpips = any("model/lpips" in report.get(s, {}) for s in SETUPS)
    head = f"{'setup':24s} {'method':14s} {'PSNR':>7s} {'SSIM':>7s}"
    lines = [head + (f" {'LPIPS':>7s}" if with_lpips else "")]
    for s in SETUPS:
        if s not in report:
            continue
        for name in ("model", "nearest_view", "mean_colour"):
            row = report[s]
            line = f"{s:24s} {name:14s} {row[f'{name}/psnr']:7.2f} {row[f'{name}/ssim']:7.3f}"
            if with_lpips:
                line += f" {row.get(f'{name}/lpips', float('nan')):7.3f}"
            lines.append(line)
    if "beats_baselines" in report:
        lines.append(f"4D-LRM beats both baselines on every setup: {report['beats_baselines']}")
    return "\n".join(lines)
