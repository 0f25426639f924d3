"""4D Gaussian splatting: parameters, slicing at time t, projection, binning and rendering.

from jaxmm import gaussians
out = gaussians.render(g3d, camera, background=(1.0, 1.0, 1.0))
out = gaussians.render_4d(g4d, camera, t)
"""

from jaxmm.gaussians.camera import Camera, look_at_c2w, orbit_cameras, rays, stack_cameras

__all__ = ["Camera", "look_at_c2w", "orbit_cameras", "rays", "stack_cameras"]
