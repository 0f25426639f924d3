"""Loading transformers' Qwen2.5-VL checkpoints: `save_pretrained` of the tiny torch model ->
`load_hf` (sharded files, placed by the logical-axis rules on 8 fake devices) -> parity with an
image input; the transformers-5 tensor naming; tied embeddings; named errors."""

import flax.linen as nn
import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P
from safetensors.numpy import load_file, save_file

from jaxmm.models.qwen2_5_vl.hf import V5_NAMES, abstract_params, load_hf
from jaxmm.models.qwen2_5_vl.model import Qwen25VL
from jaxmm.models.qwen2_5_vl.mrope import rope_index, token_types
from jaxmm.models.qwen2_5_vl.vision import vision_layout
from jaxmm.sharding import DEFAULT_RULES, logical_to_spec, make_mesh

from . import tiny

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

pytestmark = pytest.mark.torch

LOGIT_ATOL = 1e-4  # docs/testing.md model parity (fp32)
GRID = (1, 4, 6)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    model = tiny.torch_model(torch, transformers, seed=7)
    folder = tmp_path_factory.mktemp("qwen25vl_sharded")
    model.save_pretrained(folder, max_shard_size="60KB")
    assert (folder / "model.safetensors.index.json").exists()
    return model, folder


def _inputs(config):
    n = GRID[0] * GRID[1] * GRID[2]
    row = [5, 9, tiny.VISION_START] + [tiny.IMAGE_TOKEN] * (n // 4) + [tiny.VISION_END, 7, 3]
    tokens = np.asarray([row, row[::-1]], np.int64)  # the second row holds the run reversed
    pixels = np.random.default_rng(1).normal(size=(2 * n, config.vision.patch_dim))
    positions, _ = rope_index(
        tokens,
        image_token_id=config.image_token_id,
        video_token_id=config.video_token_id,
        spatial_merge_size=2,
        tokens_per_second=config.vision.tokens_per_second,
        image_grid_thw=[GRID, GRID],
    )
    return tokens, pixels.astype(np.float32), positions


def _torch_logits(model, tokens, pixels, config):
    with torch.no_grad():
        return model(
            input_ids=torch.as_tensor(tokens),
            pixel_values=torch.as_tensor(pixels),
            image_grid_thw=torch.as_tensor([GRID, GRID]),
            mm_token_type_ids=torch.as_tensor(
                token_types(tokens, config.image_token_id, config.video_token_id)
            ),
        ).logits.numpy()


def test_sharded_load_specs_and_parity(saved):
    model, folder = saved
    mesh = make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    overrides = {"attention_impl": "xla"}
    config, params = load_hf(
        folder, mesh=mesh, rules=DEFAULT_RULES, text_overrides=overrides, vision_overrides=overrides
    )
    lm, visual = params["lm"], params["visual"]
    assert lm["layers_0"]["self_attn"]["q_proj"]["kernel"].sharding.spec == P(
        "fsdp", "tensor", None
    )
    assert visual["blocks_0"]["qkv"]["kernel"].sharding.spec == P("fsdp", None, "tensor", None)
    assert visual["blocks_2"]["proj"]["kernel"].sharding.spec == P("tensor", None, "fsdp")
    logical = nn.get_partition_spec(abstract_params(config))
    for (path, arr), axes in zip(
        jax.tree_util.tree_leaves_with_path(params),
        jax.tree.leaves(logical, is_leaf=lambda x: isinstance(x, P)),
        strict=True,
    ):
        assert arr.sharding.spec == logical_to_spec(tuple(axes), DEFAULT_RULES), path
        assert arr.sharding.mesh == mesh

    tokens, pixels, positions = _inputs(config)
    layout = vision_layout([GRID, GRID], config.vision)
    with jax.set_mesh(mesh), nn.logical_axis_rules(DEFAULT_RULES):
        got, _ = jax.jit(Qwen25VL(config).apply)(
            {"params": params}, tokens, positions, pixel_values=pixels, image_layout=layout
        )
    want = _torch_logits(model, tokens, pixels, config)
    np.testing.assert_allclose(np.asarray(got), want, atol=LOGIT_ATOL, rtol=0)


def _single_file(folder, out, edit=None, rename=None):
    tensors = {}
    for f in sorted(folder.glob("*.safetensors")):
        tensors.update(load_file(str(f)))
    if rename:
        tensors = {rename(k): v for k, v in tensors.items()}
    if edit:
        edit(tensors)
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    (out / "config.json").write_text((folder / "config.json").read_text())
    return out


def test_transformers5_names_load_the_same(saved, tmp_path):
    _, folder = saved
    text, vision = V5_NAMES

    def rename(name):
        if name.startswith("visual."):
            return vision + name[len("visual.") :]
        if name.startswith("model."):
            return text + name[len("model.") :]
        return name

    _, want = load_hf(folder)
    _, got = load_hf(_single_file(folder, tmp_path, rename=rename))
    jax.tree.map(np.testing.assert_array_equal, got, want)


def test_tied_embeddings(tmp_path):
    model = tiny.torch_model(torch, transformers, seed=3, tie=True)
    model.save_pretrained(tmp_path)
    config, params = load_hf(tmp_path)
    assert config.text.tie_embeddings and "lm_head" not in params["lm"]
    tokens, pixels, positions = _inputs(config)
    got, _ = jax.jit(Qwen25VL(config).apply)(
        {"params": params},
        tokens,
        positions,
        pixel_values=pixels,
        image_layout=vision_layout([GRID, GRID], config.vision),
    )
    want = _torch_logits(model, tokens, pixels, config)
    np.testing.assert_allclose(np.asarray(got), want, atol=LOGIT_ATOL, rtol=0)


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda t: t.pop("visual.blocks.1.attn.qkv.bias"), "missing 1 tensors"),
        (lambda t: t.update(extra=np.zeros(2, np.float32)), "does not use"),
        (
            lambda t: t.update({"visual.merger.mlp.2.weight": np.zeros((64, 64), np.float32)}),
            r"visual.merger.mlp.2.weight has shape \(64, 64\)",
        ),
    ],
    ids=["missing", "unexpected", "shape"],
)
def test_named_errors(saved, tmp_path, edit, match):
    _, folder = saved
    with pytest.raises(ValueError, match=match):
        load_hf(_single_file(folder, tmp_path, edit=edit))


def test_bfloat16_load_runs_close_to_float32(saved):
    """bf16 params and compute (vision RoPE and norms still in float32): logits within bf16
    rounding of the fp32 ones. Tolerance: bf16 keeps 8 mantissa bits (~4e-3 relative per op);
    over 2 + 3 layers the logits (|x| ~2.4) moved by 0.03 when measured; 0.1 is the bound."""
    _, folder = saved
    out = {}
    for dtype in ("float32", "bfloat16"):
        over = {"dtype": dtype, "param_dtype": dtype}
        config, params = load_hf(folder, text_overrides=over, vision_overrides=over)
        assert params["visual"]["blocks_0"]["qkv"]["kernel"].dtype == dtype
        tokens, pixels, positions = _inputs(config)
        logits, _ = jax.jit(Qwen25VL(config).apply)(
            {"params": params},
            tokens,
            positions,
            pixel_values=pixels,
            image_layout=vision_layout([GRID, GRID], config.vision),
        )
        out[dtype] = np.asarray(logits, np.float32)
    np.testing.assert_allclose(out["bfloat16"], out["float32"], atol=0.1, rtol=0)


def test_scanned_text_layers_load_and_match(saved):
    """`scan_layers=True`: the text layers stacked on a `layers` axis give the same logits."""
    _, folder = saved
    out = []
    for scan in (False, True):
        config, params = load_hf(folder, text_overrides={"scan_layers": scan})
        tokens, pixels, positions = _inputs(config)
        logits, _ = jax.jit(Qwen25VL(config).apply)(
            {"params": params},
            tokens,
            positions,
            pixel_values=pixels,
            image_layout=vision_layout([GRID, GRID], config.vision),
        )
        out.append(np.asarray(logits))
    assert params["lm"]["layers"]["self_attn"]["q_proj"]["kernel"].shape[0] == 2
    np.testing.assert_allclose(out[1], out[0], atol=1e-5, rtol=0)
