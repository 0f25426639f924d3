"""CLaMR on the Qwen2.5-VL backbone (tiny random model, CPU): unit-norm 128-d tokens zeroed
at padding; the backbone's hidden states equal Qwen25VL's own final hidden states computed on
the independent host path (torch-free processor pixels, `rope_index` positions, `embed`'s
batch-wide placeholder scatter); frames reach the scores; the `paper` config builds with the
paper's LoRA targets (shapes only, no weights)."""

import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from configs.clamr import get_config
from jaxmm.models.clamr import (
    Clamr,
    encode_documents,
    encode_queries,
    qwen_backbone,
    qwen_mrope_positions,
)
from jaxmm.models.clamr_inputs import VIDEO
from jaxmm.models.qwen2_5_vl.model import Qwen25VL
from jaxmm.models.qwen2_5_vl.mrope import rope_index
from jaxmm.models.qwen2_5_vl.processor import Qwen25VLProcessor
from jaxmm.models.qwen2_5_vl.vision import vision_layout
from tests.models.qwen2_5_vl.tiny import write_folder

VIDEO_ID, VS, VE = 251, 252, 253
N_VIS = 8  # 4 frames of 56x56 px: grid (2, 4, 4) -> 2 * 4 * 4 / 4 merged tokens
GRID = (2, 4, 4)
TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def write_tiny_qwen(folder) -> str:
    """A tiny Qwen2.5-VL folder (the parity tests' config.json + the tiny BPE tokenizer.json,
    no weights) -> its path."""
    return str(write_folder(folder, weights=False))


def _model_config(tmp_path, **overrides):
    c = get_config("qwen_tiny")
    c.model.model_dir = write_tiny_qwen(tmp_path)
    for k, v in overrides.items():
        c.model[k] = v
    return c


def _documents():
    """Two rows: text, [vision_start] video x N_VIS [vision_end], text fields; row 1 padded."""
    rows, mods = [], []
    for head, tail in (([5, 6], [7, 8, 9, 10, 11, 12, 13, 14]), ([5], [7, 8, 9])):
        ids = [*head, VS, *[0] * N_VIS, VE, *tail]
        mod = [0] * len(head) + [0] + [VIDEO] * N_VIS + [0] + [2, 2, 3, 3, 4, 4, 4, 4][: len(tail)]
        rows.append(ids)
        mods.append(mod)
    length = max(map(len, rows))
    ids = np.zeros((2, length), np.int32)
    mask = np.zeros((2, length), np.int32)
    mod = np.zeros((2, length), np.int32)
    for i, (r, m) in enumerate(zip(rows, mods, strict=True)):
        ids[i, : len(r)], mask[i, : len(r)], mod[i, : len(m)] = r, 1, m
    frames_u8 = np.random.default_rng(0).integers(0, 256, (2, 4, 56, 56, 3), dtype=np.uint8)
    return ids, mask, mod, frames_u8


def test_qwen_backbone_hidden_states_equal_qwen25vl_and_clamr_outputs(tmp_path):
    c = _model_config(tmp_path, lora_rank=0, second_per_grid_t=0.75)
    backbone = qwen_backbone(c.model)
    config = backbone.config
    model = Clamr(backbone, dim=128)
    ids, mask, mod, frames_u8 = _documents()
    frames = jnp.asarray(frames_u8, jnp.float32) / 255.0
    params = jax.jit(model.init)(jax.random.key(0), ids, mask, mod, frames)["params"]

    emb, keep = jax.jit(model.apply)({"params": params}, ids, mask, mod, frames)
    emb, keep = np.asarray(emb), np.asarray(keep)
    assert emb.shape == (2, ids.shape[1], 128)
    np.testing.assert_array_equal(keep, (mod > 0) & (mask > 0))
    norms = np.linalg.norm(emb, axis=-1)
    np.testing.assert_allclose(norms[keep], 1.0, atol=1e-5)
    assert np.all(emb[~keep] == 0.0)

    visual = mod == VIDEO
    hidden = jax.jit(
        lambda p: model.apply(
            {"params": p}, ids, mask, visual, frames, method=lambda m, *a: m.backbone(*a)
        )
    )(params)

    # Independent path: the host processor, rope_index, Qwen25VL.embed's scatter.
    tokens = np.where(visual, VIDEO_ID, ids)
    proc = Qwen25VLProcessor(video_min_pixels=56 * 56)
    outs = [proc.video(f) for f in frames_u8]
    assert all(g == GRID for _, g in outs)
    pixels = np.concatenate([p for p, _ in outs])
    positions, _ = rope_index(
        tokens,
        image_token_id=250,
        video_token_id=VIDEO_ID,
        spatial_merge_size=2,
        tokens_per_second=config.vision.tokens_per_second,
        video_grid_thw=[GRID, GRID],
        second_per_grid_ts=[0.75, 0.75],
        attention_mask=mask,
    )
    ours = qwen_mrope_positions(
        jnp.asarray(visual), jnp.asarray(mask), GRID, 2, config.vision.tokens_per_second * 0.75
    )
    np.testing.assert_array_equal(np.asarray(ours), positions)
    # the time axis is exercised: the run's two temporal patches at trunc(0 * 1.5), trunc(1.5)
    np.testing.assert_array_equal(positions[0, 0, 3:11], [3, 3, 3, 3, 4, 4, 4, 4])

    def reference(m):
        x = m.embed(
            tokens,
            pixel_values_videos=pixels,
            video_layout=vision_layout([GRID] * 2, config.vision),
        )
        return m.lm(None, positions, attention_mask=mask, inputs_embeds=x, return_hidden=True)[0]

    ref = jax.jit(lambda p: Qwen25VL(config).apply({"params": p}, method=reference))(
        params["backbone"]
    )
    real = mask > 0
    np.testing.assert_allclose(np.asarray(hidden)[real], np.asarray(ref)[real], atol=1e-4)
    assert np.abs(np.asarray(ref)[real]).max() > 0.1


def test_a_changed_frame_changes_the_maxsim_score(tmp_path):
    c = _model_config(tmp_path)  # qwen_tiny as configured: LoRA r=8
    model = Clamr(qwen_backbone(c.model), dim=128)
    ids, mask, mod, frames_u8 = _documents()
    frames = jnp.asarray(frames_u8, jnp.float32) / 255.0
    params = jax.jit(model.init)(jax.random.key(0), ids, mask, mod, frames)["params"]
    q_ids = np.asarray([[5, 9, 17, 33, 41, 0]], np.int32)
    q_mask = np.asarray([[1, 1, 1, 1, 1, 0]], np.int32)
    q, q_keep = encode_queries(model, params, q_ids, q_mask)

    encode = jax.jit(lambda f: encode_documents(model, params, ids, mask, mod, f))

    def score(f):
        d, d_mod = encode(f)
        sim = jnp.einsum("qe,de->qd", q[0], d[0])
        sim = jnp.where(d_mod[0][None] > 0, sim, -jnp.inf)
        return float(jnp.sum(jnp.where(q_keep[0], sim.max(-1), 0.0)))

    changed = frames.at[0, 3].set(1.0 - frames[0, 3])  # the last frame of document 0
    assert abs(score(frames) - score(changed)) > 1e-5
    assert score(frames) == score(frames)


def test_paper_config_builds_with_the_paper_lora(tmp_path):
    c = get_config("paper")
    assert c.optimizer.learning_rate == 1e-5 and c.recipe.warmup_ratio == 0.1
    assert c.recipe.epochs == 1 and c.model.backbone == "qwen2_5_vl"
    path = tmp_path / "config.json"
    path.write_text(json.dumps(QWEN25_VL_3B))
    c.model.model_dir = str(path)
    backbone = qwen_backbone(c.model)
    lora = backbone.config.text.lora
    assert (lora.rank, lora.alpha, lora.dropout) == (128, 128.0, 0.1)
    assert set(lora.targets) == set(TARGETS)
    assert backbone.hidden_size == 2048 and backbone.config.text.num_layers == 36
    assert backbone.config.vision.depth == 32

    model = Clamr(backbone, dim=c.model.dim)
    ids = jnp.zeros((1, 4), jnp.int32)
    mod = jnp.asarray([[0, VIDEO, 2, 0]])
    frames = jnp.zeros((1, 2, 28, 28, 3))  # grid (1, 2, 2): one merged token
    shapes = jax.eval_shape(model.init, jax.random.key(0), ids, jnp.ones_like(ids), mod, frames)
    shapes = nn.meta.unbox(shapes["params"])
    assert shapes["head"]["kernel"].shape == (2048, 128)
    paths = [
        "/".join(str(k.key) for k in p) for p, _ in jax.tree_util.tree_leaves_with_path(shapes)
    ]
    lora_paths = [p for p in paths if "lora_" in p]
    assert lora_paths and all(p.startswith("backbone/lm/") for p in lora_paths)
    assert len(lora_paths) == 2 * len(TARGETS) * 36
    assert {p.split("/")[-2] for p in lora_paths} == set(TARGETS)


# Qwen/Qwen2.5-VL-3B-Instruct's config.json (the original release's flat layout).
QWEN25_VL_3B = {
    "architectures": ["Qwen2_5_VLForConditionalGeneration"],
    "model_type": "qwen2_5_vl",
    "bos_token_id": 151643,
    "eos_token_id": 151645,
    "vision_start_token_id": 151652,
    "vision_end_token_id": 151653,
    "vision_token_id": 151654,
    "image_token_id": 151655,
    "video_token_id": 151656,
    "hidden_act": "silu",
    "hidden_size": 2048,
    "intermediate_size": 11008,
    "max_position_embeddings": 128000,
    "max_window_layers": 70,
    "num_attention_heads": 16,
    "num_hidden_layers": 36,
    "num_key_value_heads": 2,
    "rms_norm_eps": 1e-06,
    "rope_theta": 1000000.0,
    "sliding_window": 32768,
    "tie_word_embeddings": True,
    "torch_dtype": "bfloat16",
    "use_sliding_window": False,
    "vocab_size": 151936,
    "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]},
    "vision_config": {
        "depth": 32,
        "hidden_act": "silu",
        "hidden_size": 1280,
        "intermediate_size": 3420,
        "num_heads": 16,
        "in_chans": 3,
        "out_hidden_size": 2048,
        "patch_size": 14,
        "spatial_merge_size": 2,
        "spatial_patch_size": 14,
        "window_size": 112,
        "fullatt_block_indexes": [7, 15, 23, 31],
        "tokens_per_second": 2,
        "temporal_patch_size": 2,
    },
}


def test_qwen_tiny_task_trains_only_lora_and_head(tmp_path):
    from jaxmm import tasks

    c = _model_config(tmp_path)
    task = tasks.build(c)
    assert task.inputs.config.num_visual_tokens == N_VIS
    shapes = jax.eval_shape(task.init, jax.random.key(0))
    mask = task.trainable_mask(shapes)
    flags = jax.tree_util.tree_leaves_with_path(mask)
    on = ["/".join(str(getattr(k, "key", k)) for k in p) for p, m in flags if m]
    assert len(on) == 2 * len(TARGETS) * 2 + 2  # lora_a/b x targets x 2 layers + head k/b
    assert all(("lora_" in p and p.startswith("backbone/lm/")) or p.startswith("head") for p in on)
    assert len(flags) > len(on)
