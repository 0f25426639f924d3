"""Qwen25VLConfig.from_hf: both config layouts, and the named errors."""

import json

import pytest

from jaxmm.models.qwen2_5_vl.config import Qwen25VisionConfig, Qwen25VLConfig

V5 = {
    "architectures": ["Qwen2_5_VLForConditionalGeneration"],
    "model_type": "qwen2_5_vl",
    "image_token_id": 250,
    "video_token_id": 251,
    "vision_start_token_id": 252,
    "vision_end_token_id": 253,
    "tie_word_embeddings": False,
    "text_config": {
        "model_type": "qwen2_5_vl_text",
        "vocab_size": 256,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "rms_norm_eps": 1e-5,
        "hidden_act": "silu",
        "use_sliding_window": False,
        "rope_parameters": {"rope_type": "default", "mrope_section": [2, 3, 3], "rope_theta": 1e4},
    },
    "vision_config": {
        "depth": 3,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_heads": 2,
        "out_hidden_size": 64,
        "window_size": 56,
        "fullatt_block_indexes": [1],
        "tokens_per_second": 2,
        "hidden_act": "silu",
        "rope_parameters": {"rope_type": "axial", "rope_theta": 10000.0},
    },
}

# The original Qwen release: text fields at the top level, rope in `rope_scaling`.
ORIGINAL = {
    "architectures": ["Qwen2_5_VLForConditionalGeneration"],
    "model_type": "qwen2_5_vl",
    "vocab_size": 256,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "rope_theta": 1000000.0,
    "rope_scaling": {"type": "mrope", "mrope_section": [2, 3, 3]},
    "image_token_id": 250,
    "video_token_id": 251,
    "tie_word_embeddings": True,
    "vision_config": {
        "depth": 2,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_heads": 2,
        "in_chans": 3,
        "out_hidden_size": 64,
        "fullatt_block_indexes": [1],
        "window_size": 112,
        "tokens_per_second": 2,
    },
}


def test_v5_layout(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(V5))
    cfg = Qwen25VLConfig.from_hf(tmp_path, text_overrides={"attention_impl": "reference"})
    t = cfg.text
    assert (t.vocab_size, t.hidden_size, t.num_layers, t.num_heads, t.num_kv_heads) == (
        256,
        64,
        2,
        4,
        2,
    )
    assert t.qkv_bias and not t.tie_embeddings and t.attention_impl == "reference"
    assert t.rope.mrope_section == (2, 3, 3) and t.rope.theta == 1e4
    v = cfg.vision
    assert (v.depth, v.hidden_size, v.num_heads, v.out_hidden_size) == (3, 32, 2, 64)
    assert v.fullatt_block_indexes == (1,) and v.window_size == 56 and v.tokens_per_second == 2
    assert (v.patch_size, v.temporal_patch_size, v.spatial_merge_size) == (14, 2, 2)
    assert v.patch_dim == 3 * 2 * 14 * 14
    assert (cfg.image_token_id, cfg.video_token_id, cfg.vision_start_token_id) == (250, 251, 252)


def test_original_layout():
    cfg = Qwen25VLConfig.from_hf(ORIGINAL)
    assert cfg.text.rope.mrope_section == (2, 3, 3) and cfg.text.rope.theta == 1e6
    assert cfg.text.tie_embeddings and cfg.vision.depth == 2 and cfg.vision.in_channels == 3
    assert cfg.vision_start_token_id == 151652  # the release's default


def _with(base, path, value):
    out = json.loads(json.dumps(base))
    node = out
    for key in path[:-1]:
        node = node[key]
    if value is None:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return out


@pytest.mark.parametrize(
    "path, value, match",
    [
        (("model_type",), "qwen2", "is not 'qwen2_5_vl'"),
        (("vision_config",), None, "missing required field 'vision_config'"),
        (("image_token_id",), None, "missing required field 'image_token_id'"),
        (("rope_scaling",), {"type": "mrope"}, "missing 'mrope_section'"),
        (("rope_scaling",), {"type": "yarn", "mrope_section": [2, 3, 3]}, "rope type 'yarn'"),
        (("rope_scaling",), {"type": "mrope", "mrope_section": [4, 3, 3]}, "summing to"),
        (("num_attention_heads",), None, "missing required field 'num_attention_heads'"),
        (("vision_config", "hidden_act"), "gelu", "vision_config.hidden_act='gelu'"),
        (("vision_config", "out_hidden_size"), 32, "out_hidden_size 32"),
        (("vision_config", "fullatt_block_indexes"), [5], "fullatt_block_indexes"),
        (("vision_config", "window_size"), 50, "window_size"),
        (("use_sliding_window",), True, "use_sliding_window"),
    ],
)
def test_named_errors(path, value, match):
    cfg = _with(ORIGINAL, path, value)
    if path == ("model_type",):
        cfg["architectures"] = ["Qwen2ForCausalLM"]
    with pytest.raises(ValueError, match=match):
        Qwen25VLConfig.from_hf(cfg)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        Qwen25VLConfig.from_hf(tmp_path)


def test_vision_head_dim_must_split_in_four():
    with pytest.raises(ValueError, match="multiple of 4"):
        Qwen25VisionConfig(hidden_size=12, num_heads=2, window_size=112)
