"""Pre-LN encoder block: parity with torch's TransformerEncoderLayer, init scales, remat."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmm.nn.transformer import INIT_STD, Encoder, EncoderBlock


@pytest.mark.torch
def test_block_matches_torch_pre_ln_encoder_layer():
    import torch

    width, heads, seq = 32, 4, 10
    torch.manual_seed(0)
    ref = torch.nn.TransformerEncoderLayer(
        width,
        heads,
        dim_feedforward=4 * width,
        dropout=0.0,
        activation="gelu",
        batch_first=True,
        norm_first=True,
        bias=False,
    )
    with torch.no_grad():  # non-trivial norm scales so they are checked too
        ref.norm1.weight.uniform_(0.5, 1.5)
        ref.norm2.weight.uniform_(0.5, 1.5)
    ref.eval()
    sd = {k: v.detach().numpy() for k, v in ref.state_dict().items()}
    wq, wk, wv = np.split(sd["self_attn.in_proj_weight"], 3, axis=0)
    hd = width // heads
    params = {
        "ln_attn": {"scale": sd["norm1.weight"]},
        "ln_mlp": {"scale": sd["norm2.weight"]},
        "attn": {
            "query": {"kernel": wq.T.reshape(width, heads, hd)},
            "key": {"kernel": wk.T.reshape(width, heads, hd)},
            "value": {"kernel": wv.T.reshape(width, heads, hd)},
            "out": {"kernel": sd["self_attn.out_proj.weight"].T.reshape(heads, hd, width)},
        },
        "mlp": {
            "fc1": {"kernel": sd["linear1.weight"].T},
            "fc2": {"kernel": sd["linear2.weight"].T},
        },
    }
    x = np.random.default_rng(0).normal(size=(2, seq, width)).astype(np.float32)
    block = EncoderBlock(num_heads=heads, num_layers=1)
    shapes = jax.tree.map(jnp.shape, nn.meta.unbox(block.init(jax.random.key(0), x))["params"])
    assert shapes == jax.tree.map(np.shape, params)  # same parameter set: no biases anywhere
    ours = block.apply({"params": params}, x)
    with torch.no_grad():
        theirs = ref(torch.from_numpy(x)).numpy()
    # fp32 parity tolerance (docs/testing.md): 1e-4 max abs diff; both are fp32 matmuls + erf GeLU.
    np.testing.assert_allclose(np.asarray(ours), theirs, atol=1e-4, rtol=0)


def test_init_scales_bias_free_and_logical_axes():
    layers, width = 6, 256
    enc = Encoder(num_layers=layers, num_heads=4)
    variables = enc.init(jax.random.key(0), jnp.zeros((1, 4, width)))
    boxed = variables["params"]["block_0"]
    assert boxed["attn"]["query"]["kernel"].names == ("embed", "heads", "head_dim")
    assert boxed["mlp"]["fc1"]["kernel"].names == ("embed", "mlp")
    params = nn.meta.unbox(variables)["params"]
    names = [
        "/".join(str(k.key) for k in path)
        for path, _ in jax.tree_util.tree_leaves_with_path(params)
    ]
    assert not any("bias" in n for n in names)
    b = params["block_3"]
    # Sample std of 256x256+ normal draws is within a few % of the target: 10% margin.
    np.testing.assert_allclose(np.std(b["mlp"]["fc1"]["kernel"]), INIT_STD, rtol=0.1)
    resid = INIT_STD / np.sqrt(2 * layers)
    np.testing.assert_allclose(np.std(b["mlp"]["fc2"]["kernel"]), resid, rtol=0.1)
    np.testing.assert_allclose(np.std(b["attn"]["out"]["kernel"]), resid, rtol=0.1)


def test_remat_same_values_and_grads():
    x = jax.random.normal(jax.random.key(1), (2, 6, 32))
    plain, remat = Encoder(2, 4), Encoder(2, 4, remat=True)
    params = plain.init(jax.random.key(0), x)
    loss = lambda m: lambda p: jnp.sum(jnp.sin(m.apply(p, x)))
    g1 = jax.grad(loss(plain))(params)
    g2 = jax.grad(loss(remat))(params)
    # Recomputation replays the same fp32 ops: differences are reassociation-level only.
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5), g1, g2)
