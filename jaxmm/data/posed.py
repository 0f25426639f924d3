"""Posed images of one scene, whatever folder they came from (D-NeRF transforms or COLMAP).

The fitting task (`jaxmm.tasks.gs_fit`) reads every scene through this one type: images
composited on a background, their alpha, OpenCV camera-to-world poses, per-image pinhole
intrinsics, optional times (dynamic scenes) and optional SfM points for initialisation.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from jaxmm.gaussians.camera import Camera


@dataclasses.dataclass(frozen=True)
class PosedImages:
    images: np.ndarray  # [N, H, W, 3] float32 in [0, 1], composited on `background`
    alphas: np.ndarray  # [N, H, W] float32 (1 where the image has no alpha)
    c2w: np.ndarray  # [N, 4, 4] float32, OpenCV axes
    intrinsics: np.ndarray  # [N, 4] float32 (fx, fy, cx, cy) in pixels
    names: tuple[str, ...]
    background: str = "white"
    times: np.ndarray | None = None  # [N] float32 (dynamic scenes)
    points: np.ndarray | None = None  # [P, 3] float32 SfM points (COLMAP)
    point_colors: np.ndarray | None = None  # [P, 3] float32 in [0, 1]

    @property
    def num(self) -> int:
        return len(self.images)

    @property
    def height(self) -> int:
        return self.images.shape[1]

    @property
    def width(self) -> int:
        return self.images.shape[2]

    def cameras(self) -> Camera:
        """All views as one stacked Camera [N]."""
        return Camera.from_intrinsics(
            self.c2w, self.intrinsics, width=self.width, height=self.height
        )

    def camera_extent(self) -> float:
        """3DGS's scene scale: 1.1 × the largest camera distance from the cameras' centre."""
        centres = self.c2w[:, :3, 3]
        return 1.1 * float(np.max(np.linalg.norm(centres - centres.mean(0), axis=-1)) or 1.0)

    def model_times(self) -> np.ndarray:
        """Stored [0, 1] times (D-NeRF's convention) mapped to the model's [-1, 1]."""
        if self.times is None:
            raise ValueError("model_times: these views have no times (a static scene)")
        return (2.0 * self.times - 1.0).astype(np.float32)

    def focal(self) -> float:
        """The shared focal length in pixels; a ValueError when views differ (COLMAP)."""
        fx = self.intrinsics[:, :2]
        if not np.allclose(fx, fx.flat[0]):
            raise ValueError("focal: the views have different focal lengths; use intrinsics")
        return float(fx.flat[0])
