"""Posed images of one scene, whatever folder they came from (D-NeRF transforms or COLMAP).

The fitting task (`jaxmm.tasks.gs_fit`) reads every scene through this one type: images
composited on a background, their alpha, OpenCV camera-to-world poses, per-image pinhole
intrinsics, optional times (dynamic scenes) and optional SfM points for initialisation.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from jaxmm.data.dnerf import DNerfSplit
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

    @classmethod
    def from_dnerf(cls, split: DNerfSplit, dynamic: bool) -> PosedImages:
        n, h, w = split.num, split.height, split.width
        intr = np.tile(np.array([split.focal, split.focal, 0.5 * w, 0.5 * h], np.float32), (n, 1))
        alphas = split.alphas if split.alphas is not None else np.ones((n, h, w), np.float32)
        return cls(
            images=split.images,
            alphas=alphas,
            c2w=split.c2w,
            intrinsics=intr,
            names=split.paths,
            background=split.background,
            times=split.times if dynamic else None,
        )
