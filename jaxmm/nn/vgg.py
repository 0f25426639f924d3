"""VGG-19 convolutional features in Flax and the Chen & Koltun perceptual loss.

Weights come from torchvision's `vgg19` state dict saved as safetensors or npz, or its .pth (keys
`features.<i>.weight` [out, in, 3, 3] and `features.<i>.bias`); nothing is downloaded. Export:

    import torch, torchvision, safetensors.torch
    sd = torchvision.models.vgg19(weights="IMAGENET1K_V1").features.state_dict()
    safetensors.torch.save_file({f"features.{k}": v for k, v in sd.items()}, "vgg19.safetensors")

The loss is the sum over conv1_2, conv2_2, conv3_2, conv4_2, conv5_2 (post-ReLU) of the mean
absolute feature difference, weighted 1/2.6, 1/4.8, 1/3.7, 1/5.6, 10/1.5, plus the pixel L1
term, as in Chen & Koltun (2017) and the LRM family's perceptual loss.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from jaxmm.io.state_dict import load_state_dict

# torchvision vgg19.features: (conv out-channels | "M" for max-pool), in module-index order.
VGG19_LAYOUT = (
    64,
    64,
    "M",
    128,
    128,
    "M",
    256,
    256,
    256,
    256,
    "M",
    512,
    512,
    512,
    512,
    "M",
    512,
    512,
    512,
    512,
    "M",
)
# Name of each conv (blockN_convM) and the torchvision module index it sits at.
_CONV_NAMES: list[tuple[str, int]] = []
_idx, _block, _conv = 0, 1, 1
for _item in VGG19_LAYOUT:
    if _item == "M":
        _idx += 1
        _block, _conv = _block + 1, 1
    else:
        _CONV_NAMES.append((f"conv{_block}_{_conv}", _idx))
        _idx += 2  # conv + ReLU
        _conv += 1
CONV_TORCH_INDEX = dict(_CONV_NAMES)

PERCEPTUAL_LAYERS = ("conv1_2", "conv2_2", "conv3_2", "conv4_2", "conv5_2")
PERCEPTUAL_WEIGHTS = (1 / 2.6, 1 / 4.8, 1 / 3.7, 1 / 5.6, 10 / 1.5)
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)


class VGG19Features(nn.Module):
    """Returns {conv name: post-ReLU activation} up to the deepest layer in `layers`."""

    layers: tuple[str, ...] = PERCEPTUAL_LAYERS

    @nn.compact
    def __call__(self, images: Array) -> dict[str, Array]:
        """images [..., H, W, 3] in [0, 1]."""
        x = (images - IMAGENET_MEAN) / IMAGENET_STD
        deepest = max(CONV_TORCH_INDEX[name] for name in self.layers)
        feats, names = {}, iter(_CONV_NAMES)
        for item in VGG19_LAYOUT:
            if item == "M":
                x = nn.max_pool(x, (2, 2), strides=(2, 2))
                continue
            name, index = next(names)
            x = nn.relu(nn.Conv(item, (3, 3), padding=1, name=name)(x))
            if name in self.layers:
                feats[name] = x
            if index == deepest:
                break
        return feats


def params_from_state_dict(state: dict[str, np.ndarray]) -> dict:
    """torchvision `features.<i>.{weight,bias}` -> Flax params of `VGG19Features`."""
    params = {}
    for name, index in _CONV_NAMES:
        wkey, bkey = f"features.{index}.weight", f"features.{index}.bias"
        if wkey not in state or bkey not in state:
            raise KeyError(f"VGG-19 state dict lacks {wkey!r}/{bkey!r} (for {name})")
        w = np.asarray(state[wkey], np.float32)
        params[name] = {
            "kernel": np.transpose(w, (2, 3, 1, 0)),  # [3, 3, in, out]
            "bias": np.asarray(state[bkey], np.float32),
        }
    return {"params": params}


def load_vgg19(path: str) -> dict:
    """Loads torchvision VGG-19 weights from a .safetensors or .npz file (or the torchvision
    .pth itself when torch is installed)."""
    state = load_state_dict(path, what="VGG-19 weights")
    state = {k if k.startswith("features.") else f"features.{k}": v for k, v in state.items()}
    return params_from_state_dict(state)


def perceptual_loss(vgg_params: dict, pred: Array, target: Array) -> Array:
    """Chen & Koltun perceptual loss per image: [..., H, W, 3] x2 -> [...]."""
    lead = pred.shape[:-3]
    both = jnp.concatenate(
        [pred.reshape(-1, *pred.shape[-3:]), target.reshape(-1, *target.shape[-3:])], axis=0
    )
    feats = VGG19Features().apply(vgg_params, both)
    n = both.shape[0] // 2
    loss = jnp.mean(jnp.abs(pred - target).reshape(n, -1), axis=-1)
    for name, w in zip(PERCEPTUAL_LAYERS, PERCEPTUAL_WEIGHTS, strict=True):
        f = feats[name]
        loss = loss + w * jnp.mean(jnp.abs(f[:n] - f[n:]).reshape(n, -1), axis=-1)
    return loss.reshape(lead)


def random_params(rng: jax.Array, image_size: int = 32) -> dict:
    """Random VGG-19 params with the real shapes (tests only: never used as a loss)."""
    return VGG19Features().init(rng, jnp.zeros((1, image_size, image_size, 3)))
