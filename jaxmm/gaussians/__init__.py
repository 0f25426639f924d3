"""4D Gaussian splatting: parameters, slicing at time t, projection, binning and rendering.

    from jaxmm import gaussians
    out = gaussians.render(g3d, camera, background=(1.0, 1.0, 1.0))
    out = gaussians.render_4d(g4d, camera, t)
    outs = gaussians.render_batch(g4d, gaussians.stack_cameras(cams), times)  # [V, ...]
    out.rgb [H, W, 3]; out.alpha [H, W]; out.depth [H, W]; out.stats (intersections, overflow)

See docs/splatting.md.
"""

from jaxmm.gaussians.binning import Binned, bin_gaussians
from jaxmm.gaussians.camera import Camera, look_at_c2w, orbit_cameras, rays, stack_cameras
from jaxmm.gaussians.params import (
    SH_C0,
    Gaussians3D,
    Gaussians4D,
    Slice3D,
    covariances_3d,
    gaussians_3d_from_slice,
    quat_to_rotmat,
    rgb_to_sh_dc,
    rotation_4d,
    rotmat_to_quat,
    sh_dc_to_rgb,
    slice_at,
)
from jaxmm.gaussians.ply import load_ply, save_ply
from jaxmm.gaussians.projection import Projected, project
from jaxmm.gaussians.render import (
    RenderOutput,
    RenderStats,
    TileOverflowError,
    auto_impl,
    default_capacity,
    render,
    render_4d,
    render_batch,
    render_slice,
)

__all__ = [
    "SH_C0",
    "Binned",
    "Camera",
    "Gaussians3D",
    "Gaussians4D",
    "Projected",
    "RenderOutput",
    "RenderStats",
    "TileOverflowError",
    "Slice3D",
    "auto_impl",
    "bin_gaussians",
    "covariances_3d",
    "default_capacity",
    "gaussians_3d_from_slice",
    "load_ply",
    "look_at_c2w",
    "orbit_cameras",
    "project",
    "quat_to_rotmat",
    "rays",
    "render",
    "render_4d",
    "render_batch",
    "render_slice",
    "rgb_to_sh_dc",
    "rotation_4d",
    "rotmat_to_quat",
    "save_ply",
    "sh_dc_to_rgb",
    "slice_at",
    "stack_cameras",
]
