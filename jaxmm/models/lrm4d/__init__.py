"""4D-LRM (arXiv 2506.18890): the network (`network`) and the path around it (`reconstruct`):
config -> module, posed images -> per-pixel 4D Gaussians -> rendered views."""

from jaxmm.models.lrm4d.network import (
    INPUT_CHANNELS,
    LRM4D,
    NUM_CHANNELS,
    SIZES,
    LRM4DSize,
    activate,
    concat_gaussians,
    from_config,
    input_features,
)
from jaxmm.models.lrm4d.reconstruct import (
    build,
    example_inputs,
    init,
    model_config,
    reconstruct,
    render_options,
    render_scenes,
    render_views,
)

__all__ = [
    "INPUT_CHANNELS",
    "LRM4D",
    "NUM_CHANNELS",
    "SIZES",
    "LRM4DSize",
    "activate",
    "build",
    "concat_gaussians",
    "example_inputs",
    "from_config",
    "init",
    "input_features",
    "model_config",
    "reconstruct",
    "render_options",
    "render_scenes",
    "render_views",
]
