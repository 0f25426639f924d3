"""Write a procedural 4D scene as a D-NeRF folder (`transforms_{train,val,test}.json` + RGBA PNGs).

Why: the folder path of every loader and evaluator must be exercised on data whose ground truth
is known. Like D-NeRF's Blender captures, each training image is one random camera on the
sphere at its own time (a monocular, moving-camera capture); test views are random cameras at
random times.

    python -m jaxmm.data.synthetic_dnerf --out data/dnerf_synth --train 48 --test 8 --size 64
"""

from __future__ import annotations

import argparse
import os

import numpy as np

from jaxmm.data import synthetic4d as syn
from jaxmm.data.dnerf import write_split


def _straight(rgb_on_white: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Colour before compositing (PNG RGBA stores straight alpha; renders are on white)."""
    a = alpha[..., None]
    straight = (rgb_on_white - (1.0 - a)) / np.maximum(a, 1e-6)
    return np.where(a > 1e-4, np.clip(straight, 0.0, 1.0), 1.0)


def write_dnerf_scene(
    root: str | os.PathLike,
    spec: syn.SceneSpec,
    index: int = 0,
    *,
    num_train: int = 48,
    num_test: int = 8,
    num_val: int = 0,
) -> dict[str, int]:
    """Renders scene `index` of `spec` into `root`; times in the file are D-NeRF's [0, 1]."""
    source = syn.Synthetic4D(spec)
    scene = source.scene(index)
    rng = np.random.default_rng([spec.seed, spec.stream, index, 99])
    counts = {"train": num_train, "val": num_val, "test": num_test}
    for split, n in counts.items():
        if n <= 0:
            continue
        c2w = syn.sphere_camera_c2w(rng, spec, n)
        # train: evenly spread times in capture order (one image per instant); else random.
        times01 = np.linspace(0.0, 1.0, n) if split == "train" else rng.uniform(0, 1, n)
        rgb, alpha = syn.render_scene(scene, c2w, (2.0 * times01 - 1.0).astype(np.float32), spec)
        write_split(os.fspath(root), split, _straight(rgb, alpha), alpha, times01, c2w,
                    syn.focal_px(spec))  # fmt: skip
    return {k: v for k, v in counts.items() if v > 0}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--train", type=int, default=48)
    parser.add_argument("--test", type=int, default=8)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--scene", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    spec = syn.SceneSpec(image_size=args.size, seed=args.seed, stream=1)
    counts = write_dnerf_scene(args.out, spec, args.scene, num_train=args.train, num_test=args.test)
    print(counts, "->", args.out)


if __name__ == "__main__":
    main()
