"""Prints the max abs parity errors of jaxmm's Qwen2.5-VL vs transformers (the tests' tiny
random config, fp32, CPU): text logits, vision features, image/video logits. The tests assert
< 1e-4; this prints the measured values that docs/clamr.md quotes. Needs torch.

    PYTHONPATH=$PWD python tools/qwen25vl_parity.py
"""

import pathlib
import sys
import tempfile

import jax
import numpy as np
import torch
import transformers

sys.path.insert(0, str(pathlib.Path(__file__).parents[1] / "tests" / "models"))
from qwen2_5_vl import test_model_parity as cases  # noqa: E402
from qwen2_5_vl import tiny  # noqa: E402

from jaxmm.models.qwen2_5_vl.hf import load_hf  # noqa: E402
from jaxmm.models.qwen2_5_vl.model import Qwen25VL  # noqa: E402
from jaxmm.models.qwen2_5_vl.mrope import rope_index, token_types  # noqa: E402
from jaxmm.models.qwen2_5_vl.vision import VisionTower, vision_layout  # noqa: E402


def report(name: str, want: np.ndarray, got: np.ndarray) -> None:
    diff = np.abs(np.asarray(got) - want).max()
    print(f"{name:26s} max|ref| {np.abs(want).max():5.2f}   max abs diff {diff:.2e}")


def optional(x):
    return None if x is None else torch.as_tensor(x)


def main() -> None:
    folder = pathlib.Path(tempfile.mkdtemp())
    model = tiny.torch_model(torch, transformers, seed=4)
    model.save_pretrained(folder)
    cfg, params = load_hf(folder)
    apply = jax.jit(Qwen25VL(cfg).apply)

    tokens = tiny.text_tokens(2, 24, 1)
    random_3d = np.random.default_rng(3).integers(0, 60, (3, 2, 24))
    for name, pos in (("text", None), ("text, random 3-D positions", random_3d)):
        with torch.no_grad():
            want = model(input_ids=torch.as_tensor(tokens), position_ids=optional(pos)).logits
        ours = np.broadcast_to(np.arange(24), (3, 2, 24)) if pos is None else pos
        report(name, want.numpy(), apply({"params": params}, tokens, ours)[0])

    tower = jax.jit(VisionTower(cfg.vision).apply)
    for name, grids in (
        ("vision, image", [(1, 6, 10)]),
        ("vision, video", [(3, 4, 8)]),
        ("vision, image + video", [(1, 6, 10), (3, 4, 8)]),
    ):
        n = sum(int(np.prod(g)) for g in grids)
        px = np.random.default_rng(0).normal(size=(n, cfg.vision.patch_dim)).astype(np.float32)
        with torch.no_grad():
            want = model.model.visual(torch.as_tensor(px), grid_thw=torch.as_tensor(grids))
        layout = vision_layout(grids, cfg.vision)
        report(name, want.pooler_output.numpy(), tower({"params": params["visual"]}, px, layout))

    for case, spec in cases.CASES.items():
        rows = [cases._row(r, seed=i) for i, r in enumerate(spec["rows"])]
        tokens, mask = cases._tokens(rows)
        images, videos, seconds = spec.get("images"), spec.get("videos"), spec.get("seconds")
        am = mask if spec.get("mask") else None
        rng = np.random.default_rng(9)
        dim = cfg.vision.patch_dim
        px = rng.normal(size=(sum(np.prod(g) for g in images or []), dim)).astype(np.float32)
        pv = rng.normal(size=(sum(np.prod(g) for g in videos or []), dim)).astype(np.float32)
        positions, _ = rope_index(
            tokens,
            image_token_id=cfg.image_token_id,
            video_token_id=cfg.video_token_id,
            spatial_merge_size=2,
            tokens_per_second=cfg.vision.tokens_per_second,
            image_grid_thw=images,
            video_grid_thw=videos,
            second_per_grid_ts=seconds,
            attention_mask=am,
        )
        with torch.no_grad():
            want = model(
                input_ids=torch.as_tensor(tokens),
                mm_token_type_ids=torch.as_tensor(
                    token_types(tokens, cfg.image_token_id, cfg.video_token_id)
                ),
                image_grid_thw=optional(images),
                video_grid_thw=optional(videos),
                second_per_grid_ts=optional(seconds),
                attention_mask=optional(am),
                pixel_values=torch.as_tensor(px) if images else None,
                pixel_values_videos=torch.as_tensor(pv) if videos else None,
            ).logits.numpy()
        inputs = {}
        if images:
            inputs.update(pixel_values=px, image_layout=vision_layout(images, cfg.vision))
        if videos:
            inputs.update(pixel_values_videos=pv, video_layout=vision_layout(videos, cfg.vision))
        got = apply({"params": params}, tokens, positions, attention_mask=am, **inputs)[0]
        real = mask.astype(bool)
        report(f"model, {case}", want[real], np.asarray(got)[real])


if __name__ == "__main__":
    main()
