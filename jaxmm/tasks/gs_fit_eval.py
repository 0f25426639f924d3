"""Evaluation and artefacts of a `gs_fit` run: test-split PSNR / SSIM (LPIPS when weights are
given), held-out renders and a contact sheet, a turntable (GIF + MP4) and the PLY.

Metrics come from the one metrics module (`jaxmm.eval.image_metrics`, `jaxmm.eval.lpips`),
media from the 4D-LRM writers (`jaxmm.lrm4d.media`), the PLY from `jaxmm.gaussians.save_ply`
(3DGS layout with f_rest for SH degree ≤ 3; a dynamic fit also writes the scene sliced at its
middle time, which 3DGS viewers open, next to the 4D file).
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np

from jaxmm import gaussians as G
from jaxmm.data.posed import PosedImages
from jaxmm.eval import image_metrics, lpips
from jaxmm.lrm4d import media


def render_split(task, params, views, background) -> np.ndarray:
    """[V, H, W, 3] renders of `views` (a PosedImages) on `background`."""
    cams = views.cameras()
    times = jnp.asarray(views.times if views.times is not None else np.zeros(views.num))
    bg = jnp.asarray(background, jnp.float32)
    kwargs = dict(task.render_kwargs, on_overflow="count")

    @jax.jit
    def run(params, cams, times):
        def one(xs):
            cam, t = xs
            g = task.gaussians(params, cam)
            if task.dynamic:
                return G.render_4d(g, cam, t, background=bg, **kwargs).rgb
            return G.render(g, cam, background=bg, **kwargs).rgb

        return jax.lax.map(one, (cams, times))

    return np.asarray(run(params, cams, times))


def turntable_cameras(task, num_frames: int = 24) -> list[G.Camera]:
    """An orbit around the training cameras' look-at centre, at their mean distance, about
    their mean up axis."""
    c2w = task.train.c2w
    centres, forward, up = c2w[:, :3, 3], c2w[:, :3, 2], -c2w[:, :3, 1]
    # Least-squares point closest to every optical axis: the scene centre.
    eye = np.eye(3)[None] - forward[:, :, None] * forward[:, None, :]
    target = np.linalg.lstsq(eye.sum(0), np.einsum("nij,nj->i", eye, centres), rcond=None)[0]
    up_axis = up.mean(0) / max(np.linalg.norm(up.mean(0)), 1e-9)
    radius = float(np.mean(np.linalg.norm(centres - target, axis=-1)))
    side = np.cross(up_axis, [1.0, 0.0, 0.0] if abs(up_axis[0]) < 0.9 else [0.0, 1.0, 0.0])
    side /= np.linalg.norm(side)
    other = np.cross(up_axis, side)
    fx = float(task.train.intrinsics[0, 0])
    cams = []
    for j in range(num_frames):
        a = 2 * np.pi * j / num_frames
        direction = np.cos(a) * side + np.sin(a) * other + 0.35 * up_axis
        eye_pos = target + radius * direction / np.linalg.norm(direction)
        cams.append(G.Camera.look_at(eye=eye_pos, target=target, up=up_axis, fx=fx,
                                     width=task.width, height=task.height))  # fmt: skip
    return cams


def save_ply(task, params, path: str) -> int:
    """Alive Gaussians to a 3DGS PLY (SH rest included); returns how many were written."""
    p = jax.device_get(params)
    keep = np.asarray(p["alive"]) > 0.5
    g = jax.tree.map(lambda x: np.asarray(x)[keep], task.gaussians(p))
    rest = np.asarray(p["sh_rest"])[keep]
    if task.dynamic:
        G.save_ply(path.replace(".ply", "_4d.ply"), g)
        t_mid = float(np.mean(task.train.times))
        g = G.gaussians_3d_from_slice(G.slice_at(jax.tree.map(jnp.asarray, g), t_mid))
        g = jax.tree.map(np.asarray, g)
    G.save_ply(path, g, sh_rest=rest)
    return int(keep.sum())


def evaluate(task, params, step: int, workdir: str) -> dict[str, float]:
    bg = np.asarray(task.eval_background, np.float32)
    test = task.test
    gt = test.images + (1.0 - test.alphas[..., None]) * bg
    pred = render_split(task, params, test, bg)
    psnr = np.asarray(image_metrics.psnr(jnp.asarray(pred), jnp.asarray(gt)))
    out = {
        "psnr_test": float(psnr.mean()),
        "psnr_test_min": float(psnr.min()),
        "alive": float(np.sum(np.asarray(params["alive"]) > 0.5)),
    }
    if min(task.height, task.width) >= 11:
        out["ssim_test"] = float(np.mean(image_metrics.ssim(jnp.asarray(pred), jnp.asarray(gt))))
    metric = lpips.as_metric(task.config.evaluation.lpips_weights)
    if metric is not None:
        out["lpips_test"] = float(np.mean(metric(jnp.asarray(pred), jnp.asarray(gt))))
    if workdir and jax.process_index() == 0:
        out_dir = os.path.join(workdir, "renders", f"step_{step:06d}")
        for i, (a, b) in enumerate(zip(pred, gt, strict=True)):
            media.write_png(os.path.join(out_dir, f"test_{i:02d}.png"),
                            media.to_uint8(np.concatenate([a, b], axis=1)))  # fmt: skip
        cols = min(len(pred), 8)
        sheet = media.contact_sheet({"prediction": pred, "ground truth": gt}, cols, scale=1)
        media.write_png(os.path.join(out_dir, "contact_sheet.png"), sheet)
        save_ply(task, params, os.path.join(workdir, "gaussians.ply"))
        frames = task.config.evaluation.turntable_frames
        if frames:
            cams = G.stack_cameras(turntable_cameras(task, frames))
            times = (
                np.linspace(test.times.min(), test.times.max(), frames) if task.dynamic else None
            )
            spin = _render_cams(task, params, cams, times, bg)
            media.write_gif(os.path.join(workdir, "turntable.gif"), spin, scale=2)
            if task.config.evaluation.mp4:
                media.write_mp4(os.path.join(workdir, "turntable.mp4"), spin, scale=2)
    return out


def _render_cams(task, params, cams, times, bg) -> np.ndarray:
    n = cams.c2w.shape[0]
    views = PosedImages(
        images=np.zeros((n, task.height, task.width, 3), np.float32),
        alphas=np.zeros((n, task.height, task.width), np.float32),
        c2w=np.asarray(cams.c2w),
        intrinsics=np.asarray(cams.intrinsics),
        names=(),
        times=None if times is None else np.asarray(times, np.float32),
    )
    return render_split(task, params, views, bg)
