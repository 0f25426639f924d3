"""The torch-free Qwen2.5-VL processor vs transformers.

Images: against `Qwen2VLImageProcessorPil` (transformers' numpy/PIL path; the default
processor needs torchvision, absent here), pixel_values bit for bit. Videos: transformers'
video processor module imports torchvision, so its `sample_frames` and `patchify` are read from
its source file and run here with torch (same code, no re-typing); video resizing is not
compared (transformers uses torchvision's, jaxmm PIL's).
"""

import ast
import inspect
import math
import types

import numpy as np
import pytest

from jaxmm.models.qwen2_5_vl.processor import (
    Qwen25VLProcessor,
    expand_placeholders,
    frame_indices_at_fps,
    smart_resize,
)

transformers = pytest.importorskip("transformers")


def _image(h, w, seed):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


# (height, width, min_pixels, max_pixels): plain, capped by max_pixels, raised to min_pixels,
# already a multiple of 28, extreme aspect ratio.
SIZES = [
    (100, 150, 56 * 56, 28 * 28 * 1280),
    (900, 700, 56 * 56, 28 * 28 * 64),
    (30, 40, 28 * 28 * 16, 28 * 28 * 1280),
    (56, 84, 56 * 56, 28 * 28 * 1280),
    (20, 1500, 56 * 56, 28 * 28 * 100),
]


@pytest.mark.parametrize("size", SIZES, ids=[f"{s[0]}x{s[1]}" for s in SIZES])
def test_image_matches_transformers_pil_processor(size):
    h, w, lo, hi = size
    image = _image(h, w, seed=h)
    ref = transformers.Qwen2VLImageProcessorPil(min_pixels=lo, max_pixels=hi)
    want = ref(images=[image], return_tensors="np")
    proc = Qwen25VLProcessor(min_pixels=lo, max_pixels=hi)
    pixels, grids = proc.images([image])
    np.testing.assert_array_equal(grids, want["image_grid_thw"])
    assert pixels.dtype == np.float32
    np.testing.assert_array_equal(pixels, want["pixel_values"])
    # placeholder count and transformers' own count helper
    n = ref.get_number_of_image_patches(h, w, {"min_pixels": lo, "max_pixels": hi})
    assert proc.num_tokens(grids[0]) == n // 4


def test_two_images_concatenate_in_order():
    images = [_image(60, 90, 1), _image(120, 50, 2)]
    want = transformers.Qwen2VLImageProcessorPil()(images=images, return_tensors="np")
    pixels, grids = Qwen25VLProcessor().images(images)
    np.testing.assert_array_equal(grids, want["image_grid_thw"])
    np.testing.assert_array_equal(pixels, want["pixel_values"])


def test_smart_resize_matches_transformers():
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize as ref

    rng = np.random.default_rng(0)
    for _ in range(300):
        h, w = (int(v) for v in rng.integers(10, 3000, 2))
        if max(h, w) / min(h, w) > 200:
            continue
        lo, hi = sorted(int(v) for v in rng.integers(28 * 28, 28 * 28 * 2000, 2))
        assert smart_resize(h, w, 28, lo, hi) == ref(h, w, 28, lo, hi)
    with pytest.raises(ValueError, match="aspect ratio"):
        smart_resize(10, 2500)


def _hf_video_functions():
    """`sample_frames` and `patchify` of transformers' Qwen2VLVideoProcessor, from its source
    (the module itself imports torchvision, which is not installed here)."""
    torch = pytest.importorskip("torch")
    import transformers.models.qwen2_vl as pkg

    path = inspect.getfile(pkg).replace("__init__.py", "video_processing_qwen2_vl.py")
    tree = ast.parse(open(path).read())
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name.endswith("Processor"))
    namespace = {"torch": torch, "math": math}
    funcs = {}
    for node in cls.body:
        if isinstance(node, ast.FunctionDef) and node.name in ("sample_frames", "patchify"):
            node.decorator_list = []
            node.returns = None
            for a in node.args.args + node.args.kwonlyargs:
                a.annotation = None
            exec(compile(ast.Module([node], []), path, "exec"), namespace)
            funcs[node.name] = namespace[node.name]
    return torch, funcs


@pytest.mark.torch
@pytest.mark.parametrize(
    "total, video_fps, fps", [(300, 30.0, 2.0), (97, 24.0, 1.0), (13, 25.0, 2.0), (48, 8.0, 3.0)]
)
def test_frame_sampling_matches_transformers(total, video_fps, fps):
    _, funcs = _hf_video_functions()
    self = types.SimpleNamespace(
        num_frames=None, fps=None, temporal_patch_size=2, min_frames=4, max_frames=768
    )
    meta = types.SimpleNamespace(total_num_frames=total, fps=video_fps)
    want = funcs["sample_frames"](self, meta, fps=fps).numpy()
    np.testing.assert_array_equal(frame_indices_at_fps(total, video_fps, fps), want)


@pytest.mark.torch
@pytest.mark.parametrize("num_frames", [4, 5])
def test_video_patch_order_matches_transformers(num_frames):
    """Frames already at a multiple of 28 (no resize): grid, frame padding and patch order."""
    torch, funcs = _hf_video_functions()
    frames = np.stack([_image(56, 84, seed=i) for i in range(num_frames)])
    proc = Qwen25VLProcessor(video_min_pixels=28 * 28, video_max_pixels=28 * 28 * 100)
    pixels, grid = proc.video(frames)
    normalised = np.stack([proc._resize_normalize(f, 56, 84) for f in frames])
    want, *want_grid = funcs["patchify"](None, torch.as_tensor(normalised[None]), 14, 2, 2)
    assert grid == tuple(want_grid) == (math.ceil(num_frames / 2), 4, 6)
    np.testing.assert_array_equal(pixels, want[0].numpy())
    assert proc.num_tokens(grid) == grid[0] * 6


def test_expand_placeholders():
    ids = [1, 250, 2, 251, 250, 3]
    out = expand_placeholders(
        ids, image_token_id=250, video_token_id=251, image_tokens=[2, 3], video_tokens=[4]
    )
    assert out == [1, 250, 250, 2, 251, 251, 251, 251, 250, 250, 250, 3]
    with pytest.raises(ValueError, match="more image placeholders"):
        expand_placeholders(
            ids, image_token_id=250, video_token_id=251, image_tokens=[2], video_tokens=[4]
        )
    with pytest.raises(ValueError, match="more videos"):
        expand_placeholders(
            ids, image_token_id=250, video_token_id=251, image_tokens=[1, 1], video_tokens=[1, 1]
        )
