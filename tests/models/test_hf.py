"""safetensors <-> params: round trips, sharded placement on 8 fake devices, clear errors.

Checkpoints here are written by `save_hf` from random jaxmm params (no torch needed); the
transformers side of the format is covered by test_llm_parity.py.
"""

import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P
from safetensors.numpy import load_file, save_file

from jaxmm.models.hf import INDEX_FILE, abstract_params, load_hf, save_hf
from jaxmm.models.llm import LLM, LLMConfig
from jaxmm.sharding import DEFAULT_RULES, logical_to_spec, make_mesh

# Sharded vs single-device forward: same fp32 math, different reduction order across devices.
ATOL = 1e-5

CONFIG = LLMConfig(
    vocab_size=96,
    hidden_size=32,
    intermediate_size=64,
    num_layers=2,
    num_heads=4,
    num_kv_heads=2,
    head_dim=8,
    model_type="qwen2",
    qkv_bias=True,
    attention_impl="xla",
)


@pytest.fixture(scope="module")
def params():
    tokens = jnp.zeros((1, 4), jnp.int32)
    return nn.meta.unbox(
        jax.jit(LLM(CONFIG).init)(jax.random.key(1, impl="rbg"), tokens, tokens)["params"]
    )


@pytest.fixture(scope="module")
def ckpt(params, tmp_path_factory):
    folder = tmp_path_factory.mktemp("ckpt")
    save_hf(params, CONFIG, folder)
    return folder


def _assert_trees_equal(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_roundtrip_single_and_sharded_files(params, ckpt, tmp_path):
    config, loaded = load_hf(ckpt, attention_impl="xla")
    assert config == CONFIG
    _assert_trees_equal(loaded, params)
    files = save_hf(params, CONFIG, tmp_path, max_shard_bytes=10_000)
    index = json.loads((tmp_path / INDEX_FILE).read_text())
    assert len(set(index["weight_map"].values())) > 1
    assert not list(tmp_path.glob("*.tmp")) and len(files) >= 4
    _assert_trees_equal(load_hf(tmp_path, attention_impl="xla")[1], params)


def test_load_into_mesh_gives_expected_specs_and_logits(params, ckpt, tmp_path):
    mesh = make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    config, sharded = load_hf(ckpt, mesh=mesh, rules=DEFAULT_RULES, attention_impl="xla")
    attn = sharded["layers_0"]["self_attn"]
    assert attn["q_proj"]["kernel"].sharding.spec == P("fsdp", "tensor", None)
    assert attn["q_proj"]["bias"].sharding.spec == P("tensor", None)
    assert attn["o_proj"]["kernel"].sharding.spec == P("tensor", None, "fsdp")
    assert sharded["layers_1"]["mlp"]["down_proj"]["kernel"].sharding.spec == P("tensor", "fsdp")
    assert sharded["embed_tokens"]["embedding"].sharding.spec == P("tensor", "fsdp")
    # Every leaf carries the spec its logical axes name, and holds only its shard per device.
    logical = nn.get_partition_spec(abstract_params(config))
    for (path, arr), axes in zip(
        jax.tree_util.tree_leaves_with_path(sharded),
        jax.tree.leaves(logical, is_leaf=lambda x: isinstance(x, P)),
        strict=True,
    ):
        assert arr.sharding.spec == logical_to_spec(tuple(axes), DEFAULT_RULES), path
        assert arr.sharding.mesh == mesh
    q = attn["q_proj"]["kernel"]
    assert q.addressable_shards[0].data.shape == (16, 2, 8)

    tokens = np.random.default_rng(0).integers(0, 96, (4, 6), dtype=np.int32)
    positions = np.broadcast_to(np.arange(6, dtype=np.int32), tokens.shape)
    want, _ = jax.jit(LLM(config).apply)({"params": params}, tokens, positions)
    with jax.set_mesh(mesh), nn.logical_axis_rules(DEFAULT_RULES):
        got, _ = jax.jit(LLM(config).apply)({"params": sharded}, tokens, positions)
    # Sharded params export to the same checkpoint.
    save_hf(sharded, config, tmp_path)
    _assert_trees_equal(load_hf(tmp_path, attention_impl="xla")[1], params)
    # The activation annotations took effect: logits are split over batch and vocab.
    assert got.sharding.spec == P(("data", "fsdp"), None, "tensor")
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=ATOL)


def _rewrite(ckpt, tmp_path, edit):
    tensors = load_file(str(ckpt / "model.safetensors"))
    edit(tensors)
    save_file(tensors, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    (tmp_path / "config.json").write_text((ckpt / "config.json").read_text())
    return tmp_path


def test_missing_tensor_is_named(ckpt, tmp_path):
    folder = _rewrite(ckpt, tmp_path, lambda t: t.pop("model.layers.1.mlp.up_proj.weight"))
    with pytest.raises(ValueError, match=r"missing 1 tensors.*layers\.1\.mlp\.up_proj\.weight"):
        load_hf(folder)


def test_unexpected_tensor_is_named(ckpt, tmp_path):
    def add(t):
        t["model.layers.2.mlp.up_proj.weight"] = np.zeros((2, 2), np.float32)

    with pytest.raises(ValueError, match=r"does not use.*layers\.2\.mlp\.up_proj"):
        load_hf(_rewrite(ckpt, tmp_path, add))


def test_shape_mismatch_names_tensor_and_both_shapes(ckpt, tmp_path):
    config = json.loads((ckpt / "config.json").read_text())
    config["intermediate_size"] = 48
    folder = _rewrite(ckpt, tmp_path, lambda t: None)
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"gate_proj\.weight has shape \(64, 32\).*\(48, 32\)"):
        load_hf(folder)


def test_unknown_architecture_and_missing_files(ckpt, tmp_path):
    config = json.loads((ckpt / "config.json").read_text())
    config.update(model_type="gemma2", architectures=["Gemma2ForCausalLM"])
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="gemma2"):
        load_hf(tmp_path)
    (tmp_path / "config.json").write_text((ckpt / "config.json").read_text())
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        load_hf(tmp_path)


def test_save_refuses_unmerged_lora(params, tmp_path):
    with_lora = jax.tree.map(lambda x: x, params)
    with_lora["layers_0"]["self_attn"]["q_proj"]["lora_a"] = jnp.zeros((32, 2))
    with pytest.raises(ValueError, match="merge_lora"):
        save_hf(with_lora, CONFIG, tmp_path)


def test_bfloat16_checkpoint_loads_in_either_dtype(params, tmp_path):
    half = jax.tree.map(lambda x: x.astype(jnp.bfloat16), params)
    save_hf(half, CONFIG.replace(param_dtype="bfloat16"), tmp_path)
    # Params default to float32 (training); inference asks for bfloat16 explicitly.
    _, as_fp32 = load_hf(tmp_path, attention_impl="xla")
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(as_fp32))
    _assert_trees_equal(as_fp32, jax.tree.map(lambda x: x.astype(jnp.float32), half))
    _, as_bf16 = load_hf(tmp_path, attention_impl="xla", param_dtype="bfloat16")
    _assert_trees_equal(as_bf16, half)


def test_scanned_layers_load_sharded(params, ckpt):
    """Stacked params: the `layers` axis is not in the rules, so it stays unsharded."""
    mesh = make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    config, sharded = load_hf(
        ckpt, mesh=mesh, rules=DEFAULT_RULES, scan_layers=True, attention_impl="xla"
    )
    q = sharded["layers"]["self_attn"]["q_proj"]["kernel"]
    assert q.shape == (2, 32, 4, 8) and q.sharding.spec == P(None, "fsdp", "tensor", None)
    np.testing.assert_array_equal(q[1], params["layers_1"]["self_attn"]["q_proj"]["kernel"])
