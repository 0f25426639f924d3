"""LoRA on the LLM's named linears: placement by pattern, zero-init identity, merge equals
unmerged, trainable mask freezes the base, adapters saved and loaded alone, dropout."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxmm.models.llm import LLM, LLMConfig
from jaxmm.nn.lora import (
    LoRAConfig,
    add_lora,
    load_adapters,
    merge_lora,
    save_adapters,
    trainable_mask,
)

# fp32 on CPU: merged W + sAB vs x W + s (x A) B differ by float32 reassociation only.
ATOL = 1e-5

BASE = LLMConfig(
    vocab_size=64,
    hidden_size=32,
    intermediate_size=48,
    num_layers=2,
    num_heads=4,
    num_kv_heads=2,
    head_dim=8,
    attention_impl="xla",
)
LORA = LoRAConfig(rank=4, alpha=8.0, targets=("q_proj", "v_proj", "layers_1/mlp/*"))
TOKENS = np.random.default_rng(0).integers(0, 64, (2, 6), dtype=np.int32)
POSITIONS = np.broadcast_to(np.arange(6, dtype=np.int32), (2, 6))


def _init(config):
    return nn.meta.unbox(
        jax.jit(LLM(config).init)(jax.random.key(0, impl="rbg"), TOKENS, POSITIONS)["params"]
    )


def _random_params(config, seed):
    """Random params of the right shapes without compiling an init (fast on a busy CPU)."""
    rng = np.random.default_rng(seed)
    shapes = nn.meta.unbox(jax.eval_shape(LLM(config).init, jax.random.key(0), TOKENS, POSITIONS))
    return jax.tree.map(
        lambda s: jnp.asarray(0.2 * rng.standard_normal(s.shape), s.dtype), shapes["params"]
    )


@pytest.fixture(scope="module")
def initial_params():
    """Freshly initialised LoRA params (B = 0)."""
    return _init(BASE.replace(lora=LORA))


@functools.partial(jax.jit, static_argnums=0)
def _jit_logits(config, params):
    return LLM(config).apply({"params": params}, TOKENS, POSITIONS)[0]


def _logits(config, params):
    return np.asarray(_jit_logits(config, params))


@pytest.fixture(scope="module")
def lora_params(initial_params):
    """LoRA params with a non-zero B (as after some training)."""
    params = initial_params
    rng = np.random.default_rng(5)

    def perturb(path, x):
        name = path[-1].key
        if name == "lora_b":
            return jnp.asarray(0.3 * rng.standard_normal(x.shape), x.dtype)
        return x

    return jax.tree_util.tree_map_with_path(perturb, params)


def _lora_paths(params):
    return sorted(
        "/".join(k.key for k in p)
        for p, _ in jax.tree_util.tree_leaves_with_path(params)
        if p[-1].key.startswith("lora")
    )


def test_lora_sits_on_the_named_linears_only(lora_params):
    paths = _lora_paths(lora_params)
    modules = sorted({p.rsplit("/", 1)[0] for p in paths})
    assert modules == [
        "layers_0/self_attn/q_proj",
        "layers_0/self_attn/v_proj",
        "layers_1/mlp/down_proj",
        "layers_1/mlp/gate_proj",
        "layers_1/mlp/up_proj",
        "layers_1/self_attn/q_proj",
        "layers_1/self_attn/v_proj",
    ]
    q = lora_params["layers_0"]["self_attn"]["q_proj"]
    assert q["lora_a"].shape == (32, 4) and q["lora_b"].shape == (4, 4, 8)
    o = lora_params["layers_0"]["self_attn"]
    assert "lora_a" not in o["o_proj"] and "lora_a" not in o["k_proj"]


def test_zero_init_b_reproduces_the_base_model(initial_params):
    assert all(
        not np.any(np.asarray(x))
        for p, x in jax.tree_util.tree_leaves_with_path(initial_params)
        if p[-1].key == "lora_b"
    )
    base = merge_lora(initial_params, LORA)  # B = 0: the base weights unchanged
    np.testing.assert_allclose(
        _logits(BASE.replace(lora=LORA), initial_params), _logits(BASE, base), atol=ATOL
    )


def test_merged_logits_equal_unmerged(lora_params):
    unmerged = _logits(BASE.replace(lora=LORA), lora_params)
    merged_params = merge_lora(lora_params, LORA)
    assert not _lora_paths(merged_params)
    merged = _logits(BASE, merged_params)
    np.testing.assert_allclose(merged, unmerged, atol=ATOL)
    # The adapters matter: dropping them changes the output (so the check can fail).
    dropped = jax.tree_util.tree_map(
        lambda x: x, merge_lora(lora_params, LoRAConfig(rank=4, alpha=0.0, targets=LORA.targets))
    )
    assert np.abs(_logits(BASE, dropped) - unmerged).max() > 1e-3


def test_trainable_mask_freezes_base_params(lora_params):
    config = BASE.replace(lora=LORA)
    mask = trainable_mask(lora_params)
    flags = {"/".join(k.key for k in p): v for p, v in jax.tree_util.tree_leaves_with_path(mask)}
    assert all(v == ("lora" in k) for k, v in flags.items()) and any(flags.values())

    opt = optax.multi_transform({True: optax.adam(1e-2), False: optax.set_to_zero()}, mask)
    state = opt.init(lora_params)

    def loss(p):
        logits = LLM(config).apply({"params": p}, TOKENS, POSITIONS)[0]
        return -jnp.mean(jax.nn.log_softmax(logits)[..., 0])

    @jax.jit
    def step(params, state):
        updates, _ = opt.update(jax.grad(loss)(params), state, params)
        return optax.apply_updates(params, updates)

    new = step(lora_params, state)
    for path, old_leaf in jax.tree_util.tree_leaves_with_path(lora_params):
        changed = not np.array_equal(_get(new, path), old_leaf)
        assert changed == flags["/".join(k.key for k in path)], path


def _get(tree, path):
    for k in path:
        tree = tree[k.key]
    return tree


def test_adapters_save_and_load_alone(lora_params, initial_params, tmp_path):
    save_adapters(lora_params, LORA, tmp_path)
    fresh = initial_params  # same base, zero B
    loaded, lora = load_adapters(fresh, tmp_path)
    assert lora == LORA
    np.testing.assert_allclose(
        _logits(BASE.replace(lora=LORA), loaded),
        _logits(BASE.replace(lora=LORA), lora_params),
        atol=ATOL,
    )
    other = _random_params(BASE.replace(lora=LoRAConfig(rank=4, targets=("k_proj",))), 0)
    with pytest.raises(ValueError, match="same LoRA targets"):
        load_adapters(other, tmp_path)


def test_dropout_only_in_training_mode():
    config = BASE.replace(lora=LoRAConfig(rank=4, dropout=0.5, targets=("q_proj",)))
    params = _random_params(config, seed=1)
    model = LLM(config)

    @functools.partial(jax.jit, static_argnums=1)
    def run(seed, deterministic):
        return model.apply(
            {"params": params},
            TOKENS,
            POSITIONS,
            deterministic=deterministic,
            rngs={"dropout": jax.random.key(seed)},
        )[0]

    np.testing.assert_array_equal(run(1, True), run(2, True))
    assert np.abs(run(1, False) - run(2, False)).max() > 1e-4


def test_bad_lora_config():
    with pytest.raises(ValueError, match="rank"):
        LoRAConfig(rank=0)
    with pytest.raises(ValueError, match="targets"):
        LoRAConfig(targets="q_proj")


def test_add_lora_to_loaded_base_params(lora_params):
    base = merge_lora(lora_params, LORA)  # stands in for params loaded with load_hf
    config = BASE.replace(lora=LORA)
    shapes = jax.eval_shape(LLM(config).init, jax.random.key(0), TOKENS, POSITIONS)["params"]
    params = add_lora(base, shapes, jax.random.key(3))
    assert _lora_paths(params) == _lora_paths(lora_params)
    np.testing.assert_array_equal(
        params["layers_0"]["mlp"]["up_proj"]["kernel"], base["layers_0"]["mlp"]["up_proj"]["kernel"]
    )
    np.testing.assert_allclose(_logits(config, params), _logits(BASE, base), atol=ATOL)
    with pytest.raises(ValueError, match="no leaf"):
        add_lora({"layers_0": {}}, shapes, jax.random.key(3))


def test_lora_with_scanned_layers_merges():
    config = BASE.replace(scan_layers=True, lora=LoRAConfig(rank=2, targets=("q_proj", "up_proj")))
    params = _random_params(config, seed=4)
    assert params["layers"]["self_attn"]["q_proj"]["lora_a"].shape == (2, 32, 2)
    merged = merge_lora(params, config.lora)
    np.testing.assert_allclose(
        _logits(config.replace(lora=None), merged), _logits(config, params), atol=ATOL
    )
