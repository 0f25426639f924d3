"""CLaMR's Qwen2.5-VL backbone starts from the checkpoint folder's weights: a tiny random
transformers Qwen2_5_VLForConditionalGeneration saved with `save_pretrained` (safetensors)."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from configs.clamr import get_config
from jaxmm import tasks
from jaxmm.models.clamr import encode_queries
from jaxmm.tasks.clamr import with_backbone
from tests.models.qwen2_5_vl.tiny import write_folder

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_folder(tmp_path_factory.mktemp("qwen_tiny"), seed=1)


def _task(model_dir, **model):
    c = get_config("qwen_tiny")
    c.model.model_dir = str(model_dir)
    for k, v in model.items():
        c.model[k] = v
    return tasks.build(c)


@functools.cache
def _abstract(task):
    return jax.eval_shape(task.init, jax.random.key(0))


def test_backbone_params_are_the_checkpoint_and_hidden_states_match_torch(folder):
    task = _task(folder)
    abstract = _abstract(task)
    params = task.pretrained_params(abstract)
    hf = load_file(str(folder / "model.safetensors"))
    lm, vis = params["backbone"]["lm"], params["backbone"]["visual"]
    np.testing.assert_array_equal(lm["embed_tokens"]["embedding"], hf["model.embed_tokens.weight"])
    np.testing.assert_array_equal(lm["norm"]["scale"], hf["model.norm.weight"])
    np.testing.assert_array_equal(
        lm["layers_1"]["mlp"]["down_proj"]["kernel"], hf["model.layers.1.mlp.down_proj.weight"].T
    )
    np.testing.assert_array_equal(
        vis["merger"]["fc2"]["kernel"], hf["visual.merger.mlp.2.weight"].T
    )
    # the head and the LoRA factors are init's (head N(0, 0.02)); B = 0: starts at the base
    assert params["head"]["kernel"].shape == (64, 128)
    assert 0.015 < float(np.std(params["head"]["kernel"])) < 0.025
    q_lora = lm["layers_0"]["self_attn"]["q_proj"]
    assert not np.any(q_lora["lora_b"]) and np.any(q_lora["lora_a"])

    # Text-only hidden states (a query) against transformers' final-norm hidden states.
    ids, mask = task.inputs.queries(["a red circle moving left", "KALOMI"])
    got = jax.jit(
        lambda p: task.model.apply(
            {"params": p},
            ids,
            mask,
            jnp.zeros_like(mask, bool),
            None,
            method=lambda m, *a: m.backbone(*a),
        )
    )(params)
    model = transformers.Qwen2_5_VLForConditionalGeneration.from_pretrained(folder).eval()
    with torch.no_grad():
        want = model.model(
            input_ids=torch.tensor(ids, dtype=torch.long),
            attention_mask=torch.tensor(mask, dtype=torch.long),
        ).last_hidden_state.numpy()
    real = mask > 0
    np.testing.assert_allclose(np.asarray(got)[real], want[real], atol=1e-4)
    assert np.abs(want[real]).max() > 0.1
    emb, _ = encode_queries(task.model, params, ids, mask)
    assert np.isfinite(np.asarray(emb)).all()


def test_a_checkpoint_of_another_base_model_is_named(folder, tmp_path):
    bad = tmp_path / "text_only"
    bad.mkdir()
    for name in ("config.json", "tokenizer.json"):
        (bad / name).write_text((folder / name).read_text())
    tensors = load_file(str(folder / "model.safetensors"))
    save_file(
        {k: v for k, v in tensors.items() if not k.startswith("visual.")},
        str(bad / "model.safetensors"),
    )
    task = _task(bad)
    with pytest.raises(ValueError, match="missing .* tensors"):
        task.pretrained_params(_abstract(task))

    # The tree check behind the loader: a wrong shape or a missing param names the param.
    good = _task(folder)
    abstract = _abstract(good)
    base = _zeros_without_lora(nn.meta.unbox(abstract)["backbone"])
    base["lm"]["norm"]["scale"] = np.zeros((32,), np.float32)
    with pytest.raises(ValueError, match=r"lm/norm/scale has shape \(32,\), the model wants"):
        with_backbone(abstract, base, good.init, 0)
    del base["lm"]["norm"]
    with pytest.raises(ValueError, match="has no param backbone/lm/norm/scale"):
        with_backbone(abstract, base, good.init, 0)


def _zeros_without_lora(tree):
    if not isinstance(tree, dict):
        return np.zeros(tree.shape, tree.dtype)
    return {k: _zeros_without_lora(v) for k, v in tree.items() if k not in ("lora_a", "lora_b")}


def test_scanned_layers_load_the_same_tensors(folder):
    """`model.scan_layers` / `model.remat` reach both the backbone and the loader, so the
    stacked [layers, ...] weights are the checkpoint's (layer 1 = model.layers.1)."""
    task = _task(folder, scan_layers=True, remat="full")
    assert task.model.backbone.config.text.scan_layers
    params = task.pretrained_params(_abstract(task))
    hf = load_file(str(folder / "model.safetensors"))
    layers = params["backbone"]["lm"]["layers"]
    np.testing.assert_array_equal(
        layers["mlp"]["down_proj"]["kernel"][1], hf["model.layers.1.mlp.down_proj.weight"].T
    )
    assert layers["self_attn"]["q_proj"]["lora_a"].shape[0] == 2  # LoRA stacked too


def test_weights_land_in_the_trainers_shardings(folder):
    """Abstract params as the trainer passes them (NamedShardings on a data=2 x fsdp=2 x
    tensor=2 mesh of the 8 fake CPU devices): each loaded tensor comes back in its sharding."""
    from jaxmm import sharding

    task = _task(folder)
    boxed = _abstract(task)
    mesh = sharding.make_mesh({"data": 2, "fsdp": 2, "tensor": 2}, jax.devices()[:8])
    shardings = sharding.params_shardings(boxed, mesh, tuple(task.config.logical_axis_rules))
    abstract = jax.tree.map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
        nn.meta.unbox(boxed),
        shardings,
    )
    params = task.pretrained_params(abstract)
    emb = params["backbone"]["lm"]["embed_tokens"]["embedding"]
    want = abstract["backbone"]["lm"]["embed_tokens"]["embedding"].sharding
    assert emb.sharding.is_equivalent_to(want, emb.ndim)
    assert want.spec != jax.sharding.PartitionSpec()  # actually split over the mesh
    hf = load_file(str(folder / "model.safetensors"))
    np.testing.assert_array_equal(np.asarray(emb), hf["model.embed_tokens.weight"])
