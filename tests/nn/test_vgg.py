"""VGG-19 features: torchvision state-dict layout, parity with a torch VGG-19 stack, loss."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmm.nn import vgg


def _random_state_dict(seed=0):
    rng = np.random.default_rng(seed)
    state, c_in, idx = {}, 3, 0
    for item in vgg.VGG19_LAYOUT:
        if item == "M":
            idx += 1
            continue
        scale = np.sqrt(2.0 / (9 * c_in))
        state[f"features.{idx}.weight"] = (rng.normal(size=(item, c_in, 3, 3)) * scale).astype(
            np.float32
        )
        state[f"features.{idx}.bias"] = rng.normal(size=(item,)).astype(np.float32) * 0.1
        c_in, idx = item, idx + 2
    return state


def test_conv_indices_match_torchvision_layout():
    # torchvision vgg19.features: conv1_2 at 2, conv2_2 at 7, conv3_2 at 12, conv4_2 at 21,
    # conv5_2 at 30; 16 convs, last at 34.
    idx = vgg.CONV_TORCH_INDEX
    assert [idx[n] for n in vgg.PERCEPTUAL_LAYERS] == [2, 7, 12, 21, 30]
    assert len(idx) == 16 and idx["conv5_4"] == 34


@pytest.mark.torch
def test_features_match_torch_stack(tmp_path):
    import torch
    from safetensors.numpy import save_file

    state = _random_state_dict()
    path = str(tmp_path / "vgg19.safetensors")
    save_file(state, path)
    params = vgg.load_vgg19(path)
    layers, c_in = [], 3
    for item in vgg.VGG19_LAYOUT:  # the torchvision features Sequential, built by hand
        if item == "M":
            layers.append(torch.nn.MaxPool2d(2, 2))
        else:
            layers += [torch.nn.Conv2d(c_in, item, 3, padding=1), torch.nn.ReLU()]
            c_in = item
    net = torch.nn.Sequential(*layers)
    net.load_state_dict(
        {k.removeprefix("features."): torch.from_numpy(v) for k, v in state.items()}
    )
    img = np.random.default_rng(1).uniform(size=(2, 32, 32, 3)).astype(np.float32)
    x = torch.from_numpy(((img - vgg.IMAGENET_MEAN) / vgg.IMAGENET_STD).transpose(0, 3, 1, 2))
    ours = vgg.VGG19Features().apply(params, img)
    with torch.no_grad():
        for name in vgg.PERCEPTUAL_LAYERS:
            ref = net[: vgg.CONV_TORCH_INDEX[name] + 2](x).numpy().transpose(0, 2, 3, 1)
            scale = np.abs(ref).max()
            # fp32 convolutions stacked 13 deep: relative 1e-4 of the activation scale.
            np.testing.assert_allclose(ours[name], ref, atol=1e-4 * scale, err_msg=name)


def test_npz_loader_and_loss_shapes(tmp_path):
    state = _random_state_dict()
    np.savez(tmp_path / "w.npz", **state)
    params = vgg.load_vgg19(str(tmp_path / "w.npz"))
    a = jax.random.uniform(jax.random.key(0), (2, 3, 32, 32, 3))
    loss = vgg.perceptual_loss(params, a, a)
    assert loss.shape == (2, 3)
    np.testing.assert_allclose(loss, 0.0, atol=1e-6)
    b = jnp.clip(a + 0.1, 0, 1)
    assert float(jnp.min(vgg.perceptual_loss(params, a, b))) > 0
    with pytest.raises(FileNotFoundError, match="VGG-19 weights file"):
        vgg.load_vgg19(str(tmp_path / "missing.safetensors"))
