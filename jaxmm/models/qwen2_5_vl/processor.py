"""Qwen2.5-VL input processing without torch: image/video resizing (`smart_resize`),
patchification in the vision tower's order, grids, frame sampling at a target fps, and the
expansion of one placeholder token into one token per merged patch.

Follows transformers' `Qwen2VLImageProcessorPil` (images: PIL bicubic resize of uint8 pixels,
rescale 1/255, CLIP mean/std) and `Qwen2VLVideoProcessor` (frame sampling, frame padding to a
multiple of the temporal patch, patch order). transformers resizes videos with torchvision;
here video frames are resized like images (PIL bicubic), so video pixel values can differ
from transformers' in the last bits of the resampling while grids and layout agree.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np
from PIL import Image

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def smart_resize(
    height: int,
    width: int,
    factor: int = 28,
    min_pixels: int = 56 * 56,
    max_pixels: int = 14 * 14 * 4 * 1280,
) -> tuple[int, int]:
    """(height, width) divisible by `factor`, area within [min_pixels, max_pixels], aspect
    ratio kept as closely as possible (transformers' / qwen-vl-utils' `smart_resize`)."""
    if min(height, width) < 1:
        raise ValueError(f"smart_resize: image size {height}x{width} must be positive")
    if max(height, width) / min(height, width) > 200:
        raise ValueError(
            f"smart_resize: absolute aspect ratio must be smaller than 200, got "
            f"{max(height, width) / min(height, width)}"
        )
    h_bar = round(height / factor) * factor
    w_bar = round(width / factor) * factor
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def frame_indices_at_fps(
    total_frames: int,
    video_fps: float,
    fps: float = 2.0,
    *,
    min_frames: int = 4,
    max_frames: int = 768,
    temporal_patch_size: int = 2,
) -> np.ndarray:
    """Indices of the frames kept when sampling `fps` frames per second of a video of
    `total_frames` at `video_fps` (transformers' `Qwen2VLVideoProcessor.sample_frames`): a
    multiple of the temporal patch, at least `min_frames`, evenly spaced from frame 0."""
    if total_frames < 1 or video_fps <= 0 or fps <= 0:
        raise ValueError(
            f"frame_indices_at_fps: total_frames={total_frames}, video_fps={video_fps} and "
            f"fps={fps} must be positive"
        )
    tp = temporal_patch_size
    max_frames = math.floor(min(max_frames, total_frames) / tp) * tp
    num = total_frames / video_fps * fps
    num = min(max(num, min_frames), max_frames, total_frames)
    num = math.floor(num / tp) * tp
    if num < 1:
        raise ValueError(
            f"frame_indices_at_fps: a {total_frames}-frame video has fewer frames than one "
            f"temporal patch ({tp})"
        )
    # torch.arange(0, total, total / num) in float32, then .int() (truncation).
    step = np.float32(total_frames / num)
    return np.trunc(np.arange(num, dtype=np.float32) * step).astype(np.int64)


@dataclasses.dataclass(frozen=True)
class Qwen25VLProcessor:
    """Pixels -> (pixel_values, grid_thw) for the vision tower; defaults are the released
    checkpoints' (images: 56*56 .. 28*28*1280 px; videos: 128*28*28 .. 768*28*28 px/frame)."""

    patch_size: int = 14
    temporal_patch_size: int = 2
    merge_size: int = 2
    min_pixels: int = 56 * 56
    max_pixels: int = 28 * 28 * 1280
    video_min_pixels: int = 128 * 28 * 28
    video_max_pixels: int = 28 * 28 * 768
    image_mean: tuple[float, ...] = CLIP_MEAN
    image_std: tuple[float, ...] = CLIP_STD

    @property
    def factor(self) -> int:
        return self.patch_size * self.merge_size

    def _resize_normalize(self, image: np.ndarray, height: int, width: int) -> np.ndarray:
        """uint8 [H, W, C] -> float32 [C, height, width], PIL bicubic, rescaled, normalised."""
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
            raise ValueError(
                f"Qwen25VLProcessor: expected a uint8 RGB image [H, W, 3], got {image.dtype} "
                f"{image.shape}"
            )
        if image.shape[:2] != (height, width):
            resized = Image.fromarray(image).resize((width, height), Image.Resampling.BICUBIC)
            image = np.asarray(resized)
        x = (image.astype(np.float64) * (1 / 255)).astype(np.float32)
        x = (x - np.asarray(self.image_mean, np.float32)) / np.asarray(self.image_std, np.float32)
        return np.moveaxis(x, -1, 0)

    def _patchify(self, frames: np.ndarray) -> tuple[np.ndarray, tuple[int, int, int]]:
        """[F, C, H, W] (F a multiple of the temporal patch) -> [t * h * w, patch_dim] in
        block-major order (each merge x merge group consecutive), rows flattened (c, t, y, x)."""
        f, c, hh, ww = frames.shape
        p, m, tp = self.patch_size, self.merge_size, self.temporal_patch_size
        t, h, w = f // tp, hh // p, ww // p
        x = frames.reshape(t, tp, c, h // m, m, p, w // m, m, p)
        x = x.transpose(0, 3, 6, 4, 7, 2, 1, 5, 8)  # t, h/m, w/m, m, m, c, tp, p, p
        return np.ascontiguousarray(x.reshape(t * h * w, c * tp * p * p)), (t, h, w)

    def image(self, image: np.ndarray) -> tuple[np.ndarray, tuple[int, int, int]]:
        """One uint8 RGB image [H, W, 3] -> (patches [h * w, patch_dim], grid (1, h, w)); the
        image fills both temporal slots of its patches."""
        height, width = smart_resize(
            image.shape[0], image.shape[1], self.factor, self.min_pixels, self.max_pixels
        )
        x = self._resize_normalize(image, height, width)
        return self._patchify(np.repeat(x[None], self.temporal_patch_size, axis=0))

    def video(self, frames: np.ndarray) -> tuple[np.ndarray, tuple[int, int, int]]:
        """Sampled uint8 frames [F, H, W, 3] -> (patches, grid (t, h, w)); the last frame is
        repeated up to a multiple of the temporal patch."""
        frames = np.asarray(frames)
        if frames.ndim != 4 or len(frames) < 1:
            raise ValueError(
                f"Qwen25VLProcessor.video: frames must be [F, H, W, 3], got {frames.shape}"
            )
        height, width = smart_resize(
            frames.shape[1],
            frames.shape[2],
            self.factor,
            self.video_min_pixels,
            self.video_max_pixels,
        )
        x = np.stack([self._resize_normalize(f, height, width) for f in frames])
        if pad := -len(x) % self.temporal_patch_size:
            x = np.concatenate([x, np.repeat(x[-1:], pad, axis=0)])
        return self._patchify(x)

    def images(self, images: Sequence[np.ndarray]) -> tuple[np.ndarray, list[tuple[int, ...]]]:
        """Several images -> (pixel_values [N, patch_dim] concatenated, grids)."""
        out = [self.image(im) for im in images]
        return np.concatenate([p for p, _ in out]), [g for _, g in out]

    def num_tokens(self, grid: Sequence[int]) -> int:
        """Placeholder tokens of one image/video: its merged patches."""
        return int(np.prod(grid)) // self.merge_size**2

    def second_per_grid_t(self, sampled_fps: float) -> float:
        """Seconds spanned by one temporal patch of a video sampled at `sampled_fps`."""
        return self.temporal_patch_size / sampled_fps


def expand_placeholders(
    token_ids: Sequence[int],
    *,
    image_token_id: int,
    video_token_id: int,
    image_tokens: Sequence[int] = (),
    video_tokens: Sequence[int] = (),
) -> list[int]:
    """Each single image/video placeholder id in `token_ids` -> as many copies as that
    image/video has merged patches (`Qwen25VLProcessor.num_tokens`), in order."""
    counts = {image_token_id: iter(image_tokens), video_token_id: iter(video_tokens)}
    out: list[int] = []
    for token in token_ids:
        if token in counts:
            n = next(counts[token], None)
            if n is None:
                kind = "image" if token == image_token_id else "video"
                raise ValueError(f"expand_placeholders: more {kind} placeholders than {kind}s")
            out += [token] * n
        else:
            out.append(token)
    for token, rest in counts.items():
        if next(rest, None) is not None:
            kind = "image" if token == image_token_id else "video"
            raise ValueError(f"expand_placeholders: more {kind}s than {kind} placeholders")
    return out
