"""peft LoRA adapters in and out (`jaxmm.models.peft`), checked against `peft` itself.

In: a tiny random Llama / Qwen2 in transformers gets a peft LoRA with random non-zero A and B
(`init_lora_weights=False`), `save_pretrained`; jaxmm loads the base (`load_hf`) + the adapter
and must give peft's logits. Out: jaxmm adds LoRA with random non-zero factors,
`save_peft_adapter`, and `PeftModel.from_pretrained` must give jaxmm's logits.

Tolerance (docs/testing.md, model parity vs torch, fp32): max abs logit diff 1e-4.
"""

import copy
import json
import warnings
import zlib

import jax
import numpy as np
import pytest

from jaxmm.models.hf import abstract_params, load_hf
from jaxmm.models.llm import LLM
from jaxmm.models.peft import PeftAdapterError, load_peft_adapter, save_peft_adapter
from jaxmm.nn.lora import LoRAConfig, add_lora, lora_state, save_adapters

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

pytestmark = pytest.mark.torch

LOGIT_ATOL = 1e-4  # docs/testing.md: model parity vs the torch reference, fp32
VOCAB = 128
COMMON = dict(
    vocab_size=VOCAB,
    hidden_size=64,
    intermediate_size=96,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    rms_norm_eps=1e-5,
)
TOKENS = np.random.default_rng(3).integers(0, VOCAB, (2, 11), dtype=np.int32)


def _randomise(model, seed: int):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            p.copy_(1.0 + 0.1 * noise if name.endswith("norm.weight") else 0.08 * noise)
    return model.eval()


def _build(family: str, layers: int = 2, hidden: int = 64):
    common = {**COMMON, "num_hidden_layers": layers, "hidden_size": hidden}
    if family == "llama":
        cfg = transformers.LlamaConfig(**common, tie_word_embeddings=False)
        return _randomise(transformers.LlamaForCausalLM(cfg), 0)
    cfg = transformers.Qwen2Config(**common, tie_word_embeddings=True)
    return _randomise(transformers.Qwen2ForCausalLM(cfg), 1)


@pytest.fixture(scope="module", params=["llama", "qwen2"])
def base(request, tmp_path_factory):
    """(family, torch base model, HF folder)."""
    model = _build(request.param)
    folder = tmp_path_factory.mktemp(request.param)
    model.save_pretrained(folder)
    return request.param, model, folder


def _torch_logits(model) -> np.ndarray:
    with torch.no_grad():
        return model(torch.as_tensor(TOKENS, dtype=torch.long)).logits.numpy()


def _jax_logits(config, params) -> np.ndarray:
    return np.asarray(LLM(config).apply({"params": params}, TOKENS)[0])


def _peft_adapter(torch_base, out_dir, seed: int = 5, **lora_kwargs):
    """A peft LoRA (random A and B) on a copy of the base, saved; returns the peft model."""
    torch.manual_seed(seed)
    kwargs = dict(r=4, lora_alpha=8, lora_dropout=0.1, init_lora_weights=False)
    model = peft.get_peft_model(copy.deepcopy(torch_base), peft.LoraConfig(**kwargs | lora_kwargs))
    with torch.no_grad():  # modules_to_save start as copies of the base: make them differ
        for name, p in model.named_parameters():
            if "modules_to_save" in name:
                p.add_(0.05 * torch.randn_like(p))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.save_pretrained(out_dir)
    return model.eval()


LOAD_CASES = {
    "attn": dict(target_modules=["q_proj", "v_proj"]),
    "all_linear_rslora": dict(target_modules="all-linear", use_rslora=True, lora_alpha=16),
    "mlp_layer1_regex": dict(target_modules=r".*\.1\.mlp\.(up|down)_proj"),
    "layer0_only": dict(target_modules=["gate_proj", "v_proj"], layers_to_transform=[0]),
    "modules_to_save": dict(target_modules=["k_proj", "o_proj"], modules_to_save=["lm_head"]),
}


@pytest.mark.parametrize("case", sorted(LOAD_CASES))
def test_load_peft_adapter_matches_peft(base, case, tmp_path):
    family, torch_base, folder = base
    kwargs = LOAD_CASES[case]
    if family == "qwen2" and case == "modules_to_save":  # tied: the one way peft keeps the tie
        kwargs = kwargs | dict(modules_to_save=["embed_tokens"], ensure_weight_tying=True)
    want = _torch_logits(_peft_adapter(torch_base, tmp_path, **kwargs))
    config, params = load_hf(folder)
    params, lora = load_peft_adapter(params, config, tmp_path)
    got = _jax_logits(config.replace(lora=lora), params)
    assert np.abs(want - _torch_logits(torch_base)).max() > 0.05  # the adapter matters
    diff = np.abs(got - want).max()
    print(f"{family}/{case}: max |logit diff| = {diff:.2e} (max |logit| {np.abs(want).max():.1f})")
    assert diff < LOGIT_ATOL, diff


def _jax_lora_params(folder, lora: LoRAConfig, seed: int, **overrides):
    """Base from `folder` + LoRA with random non-zero A and B (add_lora zeroes B)."""
    config, params = load_hf(folder, **overrides)
    config = config.replace(lora=lora)
    params = add_lora(params, abstract_params(config), jax.random.key(seed))

    def randomise(path, leaf):
        if path[-1].key != "lora_b":
            return leaf
        name = jax.tree_util.keystr(path).encode()
        key = jax.random.fold_in(jax.random.key(seed), zlib.crc32(name) % 2**31)
        return 0.3 * jax.random.normal(key, leaf.shape, leaf.dtype)

    return config, jax.tree_util.tree_map_with_path(randomise, params)


SAVE_CASES = {
    "attn_mlp": LoRAConfig(rank=4, alpha=8.0, targets=("q_proj", "v_proj", "down_proj")),
    "rslora_layer1": LoRAConfig(rank=3, alpha=6.0, targets=("layers_1/*",), use_rslora=True),
}


@pytest.mark.parametrize("case", sorted(SAVE_CASES))
def test_save_peft_adapter_loads_in_peft(base, case, tmp_path):
    family, torch_base, folder = base
    config, params = _jax_lora_params(folder, SAVE_CASES[case], seed=2)
    save_peft_adapter(params, config, config.lora, tmp_path, base_model_name_or_path="tiny")
    model = peft.PeftModel.from_pretrained(copy.deepcopy(torch_base), tmp_path).eval()
    want = _torch_logits(model)
    got = _jax_logits(config, params)
    assert np.abs(got - _torch_logits(torch_base)).max() > 0.05  # the adapter matters
    diff = np.abs(got - want).max()
    print(f"{family}/{case}: max |logit diff| = {diff:.2e} (max |logit| {np.abs(want).max():.1f})")
    assert diff < LOGIT_ATOL, diff
    saved = json.loads((tmp_path / "adapter_config.json").read_text())
    assert saved["base_model_name_or_path"] == "tiny"


def test_save_modules_to_save_loads_in_peft(base, tmp_path):
    """Untied Llama saves lm_head; tied Qwen2 saves embed_tokens (with ensure_weight_tying)."""
    family, torch_base, folder = base
    module = "lm_head" if family == "llama" else "embed_tokens"
    config, params = _jax_lora_params(folder, LoRAConfig(rank=2, alpha=4.0, targets=("o_proj",)), 4)
    path = ("lm_head", "kernel") if module == "lm_head" else ("embed_tokens", "embedding")
    leaf = params[path[0]][path[1]]
    params[path[0]][path[1]] = leaf + 0.05 * jax.random.normal(jax.random.key(9), leaf.shape)
    save_peft_adapter(params, config, config.lora, tmp_path, modules_to_save=[module])
    model = peft.PeftModel.from_pretrained(copy.deepcopy(torch_base), tmp_path).eval()
    diff = np.abs(_jax_logits(config, params) - _torch_logits(model)).max()
    print(f"{family}/modules_to_save={module}: max |logit diff| = {diff:.2e}")
    assert diff < LOGIT_ATOL, diff
    loaded, _ = load_peft_adapter(load_hf(folder)[1], config.replace(lora=None), tmp_path)
    np.testing.assert_array_equal(loaded[path[0]][path[1]], params[path[0]][path[1]])


def test_round_trip_scanned_layers(tmp_path):
    """save -> load with stacked layers gives back the same LoRA leaves and config."""
    torch_base = _build("llama")
    torch_base.save_pretrained(tmp_path / "base")
    lora = LoRAConfig(rank=4, alpha=2.0, dropout=0.05, targets=("k_proj", "up_proj"))
    config, params = _jax_lora_params(tmp_path / "base", lora, seed=6, scan_layers=True)
    save_peft_adapter(params, config, lora, tmp_path / "ad")
    _, base_params = load_hf(tmp_path / "base", scan_layers=True)
    loaded, lora2 = load_peft_adapter(base_params, config.replace(lora=None), tmp_path / "ad")
    assert lora2 == LoRAConfig(rank=4, alpha=2.0, dropout=0.05, targets=("k_proj", "up_proj"))
    want, got = lora_state(params), lora_state(loaded)
    assert sorted(want) == sorted(got)
    for name in want:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)


# --- errors -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    """(torch model, folder, config, params) of the 2-layer tiny Llama."""
    model = _build("llama")
    folder = tmp_path_factory.mktemp("llama_err")
    model.save_pretrained(folder)
    config, params = load_hf(folder)
    return model, folder, config, params


def _edit_config(adapter_dir, **changes):
    path = adapter_dir / "adapter_config.json"
    path.write_text(json.dumps(json.loads(path.read_text()) | changes))


def test_error_missing_files(llama, tmp_path):
    torch_base, _, config, params = llama
    with pytest.raises(FileNotFoundError, match="adapter_config.json"):
        load_peft_adapter(params, config, tmp_path)
    _peft_adapter(torch_base, tmp_path, target_modules=["q_proj"])
    (tmp_path / "adapter_model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="adapter_model.safetensors"):
        load_peft_adapter(params, config, tmp_path)


def test_error_jaxmm_format_adapter(llama, tmp_path):
    """jaxmm's own save_adapters writes an adapter_config.json too: point to the right reader."""
    _, folder, _, _ = llama
    lora = LoRAConfig(rank=2, alpha=4.0, targets=("q_proj",))
    config, params = _jax_lora_params(folder, lora, seed=1)
    save_adapters(params, lora, tmp_path)
    with pytest.raises(PeftAdapterError, match="jaxmm.nn.lora.load_adapters"):
        load_peft_adapter(params, config, tmp_path)


def test_error_adapter_for_another_base(llama, tmp_path):
    _, _, config, params = llama
    _peft_adapter(_build("llama", hidden=32), tmp_path / "narrow", target_modules=["q_proj"])
    with pytest.raises(
        PeftAdapterError, match=r"q_proj\.lora_A\.weight has shape \(4, 32\).*\(4, 64\)"
    ):
        load_peft_adapter(params, config, tmp_path / "narrow")
    _peft_adapter(_build("llama", layers=3), tmp_path / "deep", target_modules=["q_proj"])
    with pytest.raises(PeftAdapterError, match="layer 2, but the model has 2 layers"):
        load_peft_adapter(params, config, tmp_path / "deep")


def test_error_base_model_name(llama, tmp_path):
    torch_base, _, config, params = llama
    _peft_adapter(torch_base, tmp_path, target_modules=["q_proj"])
    _edit_config(tmp_path, base_model_name_or_path="meta-llama/Llama-3.2-1B")
    with pytest.raises(PeftAdapterError, match="Llama-3.2-1B.*expected 'Qwen/Qwen2.5-0.5B'"):
        load_peft_adapter(params, config, tmp_path, expected_base_model="Qwen/Qwen2.5-0.5B")
    load_peft_adapter(params, config, tmp_path, expected_base_model="/ckpts/Llama-3.2-1B")


@pytest.mark.parametrize(
    "kind, match",
    [
        ("ia3", "peft_type 'IA3' is not supported"),
        ("dora", "use_dora=True is not supported"),
        ("rank_pattern", "rank_pattern=.*is not supported"),
        ("embedding", "target module 'embed_tokens'.*embeddings"),
        ("unknown_target", "target module 'c_attn' is not a jaxmm LoRA module"),
        ("lm_head_regex", "LoRA on 'lm_head' is not supported"),
    ],
)
def test_error_unsupported(llama, tmp_path, kind, match):
    torch_base, _, config, params = llama
    if kind == "ia3":
        model = peft.get_peft_model(
            copy.deepcopy(torch_base),
            peft.IA3Config(
                target_modules=["k_proj", "down_proj"], feedforward_modules=["down_proj"]
            ),
        )
        model.save_pretrained(tmp_path)
    elif kind == "dora":
        _peft_adapter(torch_base, tmp_path, target_modules=["q_proj"], use_dora=True)
    elif kind == "rank_pattern":
        _peft_adapter(torch_base, tmp_path, target_modules=["q_proj"], rank_pattern={"q_proj": 2})
    elif kind == "embedding":
        _peft_adapter(torch_base, tmp_path, target_modules=["embed_tokens", "q_proj"])
    elif kind == "unknown_target":
        _peft_adapter(torch_base, tmp_path, target_modules=["q_proj"])
        _edit_config(tmp_path, target_modules=["c_attn"])
    else:
        _peft_adapter(torch_base, tmp_path, target_modules="lm_head|.*q_proj")
    with pytest.raises(PeftAdapterError, match=match):
        load_peft_adapter(params, config, tmp_path)


def test_error_tied_modules_to_save(tmp_path):
    qwen = _build("qwen2")
    qwen.save_pretrained(tmp_path / "base")
    config, params = load_hf(tmp_path / "base")
    _peft_adapter(
        qwen, tmp_path / "ad", target_modules=["q_proj"], modules_to_save=["embed_tokens"]
    )
    with pytest.raises(PeftAdapterError, match="tied embeddings without ensure_weight_tying"):
        load_peft_adapter(params, config, tmp_path / "ad")
