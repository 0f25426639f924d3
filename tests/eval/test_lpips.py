"""LPIPS: lpips-package state-dict layout, parity with a torch reference written here, errors."""

import numpy as np
import pytest

from jaxmm.eval import lpips


def _torch_lpips(state, net, img0, img1):
    """The lpips package's forward (normalize=True), rebuilt from torch.nn.functional."""
    import torch
    import torch.nn.functional as F

    t = {k: torch.from_numpy(np.asarray(v)) for k, v in state.items()}
    weights = {
        int(k.split(".")[2]): (t[k], t[k.replace("weight", "bias")])
        for k in t
        if k.startswith("net.") and k.endswith("weight")
    }
    x = torch.from_numpy(np.concatenate([img0, img1]).transpose(0, 3, 1, 2))
    x = (2 * x - 1 - t["scaling_layer.shift"]) / t["scaling_layer.scale"]
    n, total = len(img0), 0
    taps = [b - 1 for b in lpips.SLICE_ENDS[net]]
    for index, layer in enumerate(lpips.LAYOUTS[net][: taps[-1] + 1]):
        if layer[0] == "conv":
            x = F.conv2d(x, *weights[index], stride=layer[3], padding=layer[4])
        elif layer[0] == "relu":
            x = F.relu(x)
        else:
            x = F.max_pool2d(x, layer[1], layer[2])
        if index in taps:
            k = taps.index(index)
            f = x / (torch.sqrt(torch.sum(x**2, dim=1, keepdim=True)) + 1e-10)
            d = (f[:n] - f[n:]) ** 2
            total = total + F.conv2d(d, t[f"lin{k}.model.1.weight"]).mean([2, 3], keepdim=True)
    return total.flatten().numpy()


@pytest.mark.torch
@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_matches_torch_reference(tmp_path, net):
    from safetensors.numpy import save_file

    state = lpips.random_state_dict(net)
    path = str(tmp_path / f"lpips_{net}.safetensors")
    save_file(state, path)
    metric = lpips.load_lpips(path)
    assert metric.net == net
    rng = np.random.default_rng(1)
    a = rng.uniform(size=(3, 64, 64, 3)).astype(np.float32)
    b = np.clip(a + rng.normal(size=a.shape) * 0.1, 0, 1).astype(np.float32)
    ours = np.asarray(metric(a, b))
    ref = _torch_lpips(state, net, a, b)
    np.testing.assert_allclose(ours, ref, rtol=1e-4)


def test_properties_and_batch_shape(tmp_path):
    np.savez(tmp_path / "w.npz", **lpips.random_state_dict("alex"))
    metric = lpips.load_lpips(str(tmp_path / "w.npz"), net="alex")
    rng = np.random.default_rng(2)
    a = rng.uniform(size=(2, 3, 48, 48, 3)).astype(np.float32)
    d_same = np.asarray(metric(a, a))
    assert d_same.shape == (2, 3)
    np.testing.assert_allclose(d_same, 0.0, atol=1e-7)
    small = np.asarray(metric(a, np.clip(a + 0.02, 0, 1)))
    large = np.asarray(metric(a, np.clip(a + 0.3, 0, 1)))
    assert np.all(small > 0) and np.all(large > small)
    np.testing.assert_allclose(metric(a, a[::-1]), metric(a[::-1], a), rtol=1e-5)  # symmetric


def test_two_files_torchvision_backbone_plus_lin_heads(tmp_path):
    from safetensors.numpy import save_file

    state = lpips.random_state_dict("vgg")
    backbone = {
        "features." + k.split(".", 2)[2]: v for k, v in state.items() if k.startswith("net.")
    }
    heads = {k: v for k, v in state.items() if k.startswith("lin")}
    save_file(backbone, str(tmp_path / "vgg16.safetensors"))
    save_file(heads, str(tmp_path / "lin.safetensors"))
    both = lpips.load_lpips(f"{tmp_path}/vgg16.safetensors,{tmp_path}/lin.safetensors")
    one_path = str(tmp_path / "all.safetensors")
    save_file(state, one_path)
    one = lpips.load_lpips(one_path)
    a = np.random.default_rng(3).uniform(size=(2, 32, 32, 3)).astype(np.float32)
    np.testing.assert_allclose(both(a, a[::-1]), one(a, a[::-1]), rtol=1e-6)


def test_errors_name_the_problem(tmp_path):
    from safetensors.numpy import save_file

    with pytest.raises(FileNotFoundError, match="LPIPS weights file"):
        lpips.load_lpips(str(tmp_path / "missing.safetensors"))
    state = lpips.random_state_dict("alex")
    no_head = {k: v for k, v in state.items() if not k.startswith("lin3")}
    save_file(no_head, str(tmp_path / "a.safetensors"))
    with pytest.raises(KeyError, match="lin3"):
        lpips.load_lpips(str(tmp_path / "a.safetensors"))
    with pytest.raises(ValueError, match="'alex' backbone, not 'vgg'"):
        lpips.params_from_state_dict(state, net="vgg")
    bad = dict(state)
    bad["net.slice2.3.weight"] = bad["net.slice2.3.weight"][:, :32]
    with pytest.raises(ValueError, match="conv 3"):
        lpips.params_from_state_dict(bad)
    metric = lpips.params_from_state_dict(state)
    with pytest.raises(ValueError, match="must match"):
        metric(np.zeros((1, 32, 32, 3)), np.zeros((1, 32, 16, 3)))
    with pytest.raises(ValueError, match="31x31 minimum"):
        metric(np.zeros((1, 24, 24, 3)), np.zeros((1, 24, 24, 3)))
