"""LoRA's scale pinned to its definition, y = x W + (alpha / rank) x A B, and to `peft`.

`tests/nn/test_lora.py` compares merged with unmerged weights, which share `LoRAConfig.scale`;
a wrong scale (alpha / sqrt(rank), rsLoRA's) passes there. Here the output is checked against
hand-computed numpy and against a `peft` LoRA layer holding the same weights.

Tolerance (docs/testing.md): fp32 on CPU, the same products in another order: 1e-5.
"""

import flax.linen as nn
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmm.nn.lora import Linear, LoRAConfig, merge_lora

D_IN, D_OUT, RANK, ALPHA = 12, 10, 4, 8.0  # alpha / rank = 2, alpha / sqrt(rank) = 4
LORA = LoRAConfig(rank=RANK, alpha=ALPHA, targets=("proj",))


class Block(nn.Module):
    lora: LoRAConfig | None = LORA

    @nn.compact
    def __call__(self, x):
        return Linear(features=(D_OUT,), kernel_axes=(None, None), lora=self.lora, name="proj")(x)


def _weights():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((D_IN, D_OUT)).astype(np.float32)
    a = rng.standard_normal((D_IN, RANK)).astype(np.float32)
    b = rng.standard_normal((RANK, D_OUT)).astype(np.float32)  # non-zero: the branch counts
    x = rng.standard_normal((3, D_IN)).astype(np.float32)
    return x, w, a, b


def _params(w, a, b):
    return {"proj": {"kernel": jnp.asarray(w), "lora_a": jnp.asarray(a), "lora_b": jnp.asarray(b)}}


def test_lora_output_and_merge_match_hand_computed_scale():
    x, w, a, b = _weights()
    x64, w64, a64, b64 = (v.astype(np.float64) for v in (x, w, a, b))
    expected = x64 @ w64 + (ALPHA / RANK) * (x64 @ a64 @ b64)
    y = Block().apply({"params": _params(w, a, b)}, x)
    np.testing.assert_allclose(np.asarray(y), expected, atol=1e-5 * np.abs(expected).max())
    merged = merge_lora(_params(w, a, b), LORA)
    np.testing.assert_allclose(
        np.asarray(merged["proj"]["kernel"]), w64 + (ALPHA / RANK) * a64 @ b64, atol=1e-5
    )


@pytest.mark.torch
def test_lora_matches_peft_layer_with_same_weights():
    torch = pytest.importorskip("torch")
    peft = pytest.importorskip("peft")
    x, w, a, b = _weights()

    class TorchBlock(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = torch.nn.Linear(D_IN, D_OUT, bias=False)

        def forward(self, x):
            return self.proj(x)

    model = peft.get_peft_model(
        TorchBlock(),
        peft.LoraConfig(r=RANK, lora_alpha=ALPHA, target_modules=["proj"], lora_dropout=0.0),
    )
    layer = model.base_model.model.proj
    with torch.no_grad():  # torch Linear weights are [out, in]
        layer.base_layer.weight.copy_(torch.from_numpy(w.T))
        layer.lora_A["default"].weight.copy_(torch.from_numpy(a.T))
        layer.lora_B["default"].weight.copy_(torch.from_numpy(b.T))
        expected = model(torch.from_numpy(x)).numpy()
        merged_w = model.merge_and_unload().proj.weight.numpy().T
    assert layer.scaling["default"] == ALPHA / RANK
    y = Block().apply({"params": _params(w, a, b)}, x)
    np.testing.assert_allclose(np.asarray(y), expected, atol=1e-5 * np.abs(expected).max())
    merged = merge_lora(_params(w, a, b), LORA)
    np.testing.assert_allclose(np.asarray(merged["proj"]["kernel"]), merged_w, atol=1e-5)
