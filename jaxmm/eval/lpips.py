"""LPIPS v0.1 (Zhang et al. 2018) in Flax: AlexNet or VGG-16 features, learned linear heads.

Weights are never downloaded. Give one file holding everything, the state dict of
`lpips.LPIPS(net=...)` saved as safetensors (or npz, or the `.pth` itself when torch is
installed):

    import lpips, safetensors.torch
    safetensors.torch.save_file(lpips.LPIPS(net="alex").state_dict(), "lpips_alex.safetensors")

or two files: the torchvision backbone (`alexnet-owt-7be5be79.pth` / `vgg16-397923af.pth`,
keys `features.<i>.*`) and the lpips package's linear heads (`weights/v0.1/alex.pth`, keys
`lin<k>.model.1.weight`). The backbone (alex | vgg) is read off the first conv's kernel size.

Distance, as the lpips package computes it with its defaults (`normalize=True` inputs in
[0, 1]): scale to [-1, 1], shift/scale per channel, take five ReLU taps, unit-normalise each
feature vector over channels (eps 1e-10), square the difference, weight channels with the
learned 1×1 head, average over pixels, sum over taps. Lower is more similar.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from jaxmm.io.state_dict import load_state_dict

SHIFT = np.array([-0.030, -0.088, -0.188], np.float32)
SCALE = np.array([0.458, 0.448, 0.450], np.float32)
EPS = 1e-10

# torchvision `features` Sequentials, one entry per module index:
# ("conv", out_channels, kernel, stride, padding) | ("relu",) | ("pool", kernel, stride).
_ALEX = (
    ("conv", 64, 11, 4, 2),
    ("relu",),
    ("pool", 3, 2),
    ("conv", 192, 5, 1, 2),
    ("relu",),
    ("pool", 3, 2),
    ("conv", 384, 3, 1, 1),
    ("relu",),
    ("conv", 256, 3, 1, 1),
    ("relu",),
    ("conv", 256, 3, 1, 1),
    ("relu",),
)


def _vgg16_layout() -> tuple:
    layers: list[tuple] = []
    for block, (width, convs) in enumerate(((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))):
        if block:
            layers.append(("pool", 2, 2))
        for _ in range(convs):
            layers += [("conv", width, 3, 1, 1), ("relu",)]
    return tuple(layers)


LAYOUTS = {"alex": _ALEX, "vgg": _vgg16_layout()}
# lpips.pretrained_networks: the torchvision module index each slice (1-5) stops before; each
# of the five features (relu1 .. relu5[_3]) is tapped after the slice's last module.
SLICE_ENDS = {"alex": (2, 5, 8, 10, 12), "vgg": (4, 9, 16, 23, 30)}
TAPS = {net: tuple(end - 1 for end in ends) for net, ends in SLICE_ENDS.items()}
TAP_CHANNELS = {"alex": (64, 192, 384, 256, 256), "vgg": (64, 128, 256, 512, 512)}
# Smallest image side with at least one pixel left at the last tap.
MIN_SIZE = {"alex": 31, "vgg": 16}
# A metric, not a training loss: full f32 convolutions on GPU too (no TF32).
_PRECISION = jax.lax.Precision.HIGHEST


class LPIPS(nn.Module):
    """Per-pair distance [N] of images [N, H, W, 3] in [0, 1]."""

    net: str = "alex"

    @nn.compact
    def __call__(self, x0: Array, x1: Array) -> Array:
        n = x0.shape[0]
        x = (jnp.concatenate([x0, x1], axis=0) * 2.0 - 1.0 - SHIFT) / SCALE
        taps, distance = TAPS[self.net], jnp.zeros((n,), jnp.float32)
        for index, layer in enumerate(LAYOUTS[self.net]):
            if layer[0] == "conv":
                _, width, k, stride, pad = layer
                x = nn.Conv(
                    width,
                    (k, k),
                    strides=stride,
                    padding=((pad, pad), (pad, pad)),
                    precision=_PRECISION,
                    name=f"conv{index}",
                )(x)
            elif layer[0] == "relu":
                x = nn.relu(x)
            else:
                x = nn.max_pool(x, (layer[1], layer[1]), strides=(layer[2], layer[2]))
            if index in taps:
                k = taps.index(index)
                f = x / (jnp.sqrt(jnp.sum(x * x, axis=-1, keepdims=True)) + EPS)
                w = self.param(f"lin{k}", nn.initializers.ones, (x.shape[-1],))
                d = jnp.einsum("nhwc,c->nhw", (f[:n] - f[n:]) ** 2, w, precision=_PRECISION)
                distance = distance + jnp.mean(d, axis=(1, 2))
            if index == taps[-1]:
                break
        return distance


@dataclass(frozen=True)
class LPIPSMetric:
    """Loaded LPIPS: `metric(pred, target)` -> [...] for images [..., H, W, 3] in [0, 1]."""

    net: str
    params: Any

    def __call__(self, pred: Array, target: Array) -> Array:
        if pred.shape != target.shape or pred.shape[-1] != 3:
            raise ValueError(
                f"lpips: pred {pred.shape} and target {target.shape} must match "
                "and end in 3 channels"
            )
        if min(pred.shape[-3:-1]) < MIN_SIZE[self.net]:
            raise ValueError(
                f"lpips ({self.net}): images {pred.shape[-3:]} are smaller than its "
                f"{MIN_SIZE[self.net]}x{MIN_SIZE[self.net]} minimum"
            )
        lead = pred.shape[:-3]
        x0 = jnp.asarray(pred, jnp.float32).reshape(-1, *pred.shape[-3:])
        x1 = jnp.asarray(target, jnp.float32).reshape(-1, *target.shape[-3:])
        return _distance(self.net, self.params, x0, x1).reshape(lead)


@functools.partial(jax.jit, static_argnums=0)
def _distance(net: str, params, x0: Array, x1: Array) -> Array:
    return LPIPS(net).apply(params, x0, x1)


_BACKBONE_KEY = re.compile(r"^(?:net\.slice\d\.|features\.)(\d+)\.(weight|bias)$")
_LIN_KEY = re.compile(r"^lin(\d)\.(?:model\.\d\.)?weight$")


def params_from_state_dict(state: dict[str, np.ndarray], net: str | None = None) -> LPIPSMetric:
    """lpips / torchvision state-dict names -> `LPIPSMetric`; errors name the missing key."""
    backbone: dict[int, dict[str, np.ndarray]] = {}
    lins: dict[int, np.ndarray] = {}
    for key, value in state.items():
        if m := _BACKBONE_KEY.match(key):
            backbone.setdefault(int(m[1]), {})[m[2]] = np.asarray(value, np.float32)
        elif m := _LIN_KEY.match(key):
            lins[int(m[1])] = np.asarray(value, np.float32)
    if 0 not in backbone or "weight" not in backbone[0]:
        raise KeyError(
            "LPIPS weights lack the backbone's first conv ('net.slice1.0.weight' "
            "or 'features.0.weight')"
        )
    kernel = backbone[0]["weight"].shape[-1]
    detected = {11: "alex", 3: "vgg"}.get(kernel)
    if detected is None:
        raise ValueError(
            f"LPIPS backbone with a {kernel}x{kernel} first conv is not supported "
            "(alex: 11x11, vgg: 3x3; squeeze is not implemented)"
        )
    if net is not None and net != detected:
        raise ValueError(f"LPIPS weights are a {detected!r} backbone, not {net!r}")
    params: dict[str, np.ndarray | dict] = {}
    c_in = 3
    for index, layer in enumerate(LAYOUTS[detected][: TAPS[detected][-1] + 1]):
        if layer[0] != "conv":
            continue
        want = (layer[1], c_in, layer[2], layer[2])
        w, b = backbone.get(index, {}).get("weight"), backbone.get(index, {}).get("bias")
        if w is None or b is None:
            raise KeyError(f"LPIPS weights lack backbone conv {index} (weight and bias)")
        if w.shape != want:
            raise ValueError(f"LPIPS backbone conv {index}: weight {w.shape}, expected {want}")
        params[f"conv{index}"] = {"kernel": w.transpose(2, 3, 1, 0), "bias": b}
        c_in = layer[1]
    for k, channels in enumerate(TAP_CHANNELS[detected]):
        if k not in lins:
            raise KeyError(
                f"LPIPS weights lack linear head 'lin{k}.model.1.weight' "
                "(the lpips package's weights/v0.1 file)"
            )
        if lins[k].size != channels:
            raise ValueError(f"LPIPS lin{k}: {lins[k].shape}, expected {channels} channels")
        params[f"lin{k}"] = lins[k].reshape(channels)
    return LPIPSMetric(detected, {"params": params})


def load_lpips(paths: str | Sequence[str], net: str | None = None) -> LPIPSMetric:
    """One file, several files, or a comma-separated list of files whose state dicts merge."""
    if isinstance(paths, str):
        paths = [p for p in paths.split(",") if p]
    if not paths:
        raise ValueError("load_lpips: no weights file given")
    state: dict[str, np.ndarray] = {}
    for path in paths:
        state.update(load_state_dict(path, what="LPIPS weights"))
    return params_from_state_dict(state, net)


def as_metric(weights: str | Sequence[str] | LPIPSMetric | None) -> LPIPSMetric | None:
    """A loaded metric as is, weights file(s) loaded, None or "" -> None (LPIPS off)."""
    if weights is None or isinstance(weights, LPIPSMetric):
        return weights
    return load_lpips(weights) if weights else None


def random_state_dict(net: str, seed: int = 0) -> dict[str, np.ndarray]:
    """Random weights named as `lpips.LPIPS(net=net).state_dict()` (tests; not a metric)."""
    rng = np.random.default_rng(seed)
    state, c_in = {}, 3
    for index, layer in enumerate(LAYOUTS[net][: SLICE_ENDS[net][-1]]):
        if layer[0] != "conv":
            continue
        _, width, k, _, _ = layer
        s = 1 + next(i for i, end in enumerate(SLICE_ENDS[net]) if index < end)
        w = rng.normal(size=(width, c_in, k, k)) * np.sqrt(2.0 / (k * k * c_in))
        state[f"net.slice{s}.{index}.weight"] = w.astype(np.float32)
        state[f"net.slice{s}.{index}.bias"] = (rng.normal(size=width) * 0.1).astype(np.float32)
        c_in = width
    for k, c in enumerate(TAP_CHANNELS[net]):
        state[f"lin{k}.model.1.weight"] = rng.uniform(size=(1, c, 1, 1)).astype(np.float32)
    state["scaling_layer.shift"] = SHIFT[None, :, None, None]
    state["scaling_layer.scale"] = SCALE[None, :, None, None]
    return state
