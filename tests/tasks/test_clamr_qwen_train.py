"""CLaMR on the Qwen2.5-VL backbone in training: LoRA dropout only with a training rng (tiny
random model, CPU), and the paper's epoch recipe turned into steps."""

import zlib

import flax.linen as nn
import jax
import numpy as np
import pytest

from configs.clamr import get_config
from jaxmm import tasks
from jaxmm.data import clamr_synth
from jaxmm.tasks.clamr import load_trained
from jaxmm.train import checkpoint
from jaxmm.train.optim import epoch_schedule
from tests.models.qwen2_5_vl.tiny import write_folder

DOCS = [
    {"ocr": "KALOMI", "asr": "the reporter talks about the tenvos festival", "description": "rome"},
    {"ocr": "ZARPEL", "asr": "hello and welcome", "description": "a storm in rome"},
]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_folder(tmp_path_factory.mktemp("qwen_tiny"), weights=False)


def _task(folder, **model):
    c = get_config("qwen_tiny")
    c.model.model_dir = str(folder)
    for k, v in model.items():
        c.model[k] = v
    return tasks.build(c)


def _batch(task):
    q_ids, q_mask = task.inputs.queries(["the on-screen text says KALOMI", "a storm in rome"])
    # text-only documents: LoRA (and its dropout) sits on the language model only, and the
    # vision tower would triple the compile time
    docs = task.inputs.documents(DOCS, has_frames=[False, False])
    return {
        "q_ids": q_ids,
        "q_mask": q_mask,
        "d_ids": docs.ids,
        "d_mask": docs.mask,
        "d_mod": docs.modality,
        "frames": None,
        "gold_modality": np.array([2, 4], np.int32),
    }


def test_lora_dropout_runs_in_training_only(folder):
    task = _task(folder)  # qwen_tiny: LoRA r=8, dropout 0.1
    assert task.config.model.lora_dropout == 0.1
    # Random values for every param (init's compile is slow; values do not matter here), and
    # lora_b non-zero, else the LoRA branch (hence its dropout) would not show.
    shapes = nn.meta.unbox(jax.eval_shape(task.init, jax.random.key(0)))
    params = jax.tree_util.tree_map_with_path(
        lambda p, x: (
            0.1
            * np.random.default_rng(zlib.crc32(str(p).encode())).standard_normal(
                x.shape, np.float32
            )
        ),
        shapes,
    )
    batch = _batch(task)
    loss = jax.jit(lambda p, b, r: task.loss(p, b, r)[0])
    train_1, train_2 = (
        loss(params, batch, jax.random.key(1)),
        loss(params, batch, jax.random.key(2)),
    )
    assert float(train_1) == float(loss(params, batch, jax.random.key(1)))  # same key, same loss
    assert abs(float(train_1) - float(train_2)) > 1e-4  # dropout masks differ

    evaluation = float(jax.jit(lambda p, b: task.loss(p, b, None)[0])(params, batch))
    no_dropout = _task(folder, lora_dropout=0.0)
    off = jax.jit(lambda p, b, r: no_dropout.loss(p, b, r)[0])
    assert float(off(params, batch, jax.random.key(1))) == float(
        off(params, batch, jax.random.key(2))
    )
    np.testing.assert_allclose(float(off(params, batch, jax.random.key(1))), evaluation, rtol=1e-6)
    assert abs(float(train_1) - evaluation) > 1e-4

    # index / search (task.encoders) use the deterministic model
    assert task.model.backbone.deterministic and not task.train_model.backbone.deterministic


def test_epoch_schedule_rounds_up_partial_batches():
    assert epoch_schedule(1, 192, 32, 0.1) == (6, 1)
    assert epoch_schedule(1, 193, 32, 0.1) == (7, 1)  # the partial last batch is a step
    assert epoch_schedule(2, 12, 5, 0.25) == (5, 1)
    with pytest.raises(ValueError, match=r"num_examples \(0\)"):
        epoch_schedule(1, 0, 32)
    with pytest.raises(ValueError, match="warmup_ratio"):
        epoch_schedule(1, 10, 2, 1.5)


def test_paper_recipe_turns_one_epoch_into_steps(folder, tmp_path):
    """`paper` (1 epoch, warmup 0.1, batch 32) on the procedural corpus' 48 train groups
    (192 queries), then on a MultiVENT folder of 3 groups (12 queries)."""
    c = get_config("paper")
    assert (c.num_steps, c.recipe.epochs, c.batch_size) == (0, 1, 32)
    c.model.model_dir = str(folder)
    task = tasks.build(c)
    assert task.num_train_queries() == 48 * 4
    assert (c.num_steps, c.optimizer.warmup_steps) == (6, 1)  # ceil(192 / 32), 0.1 * 6

    clamr_synth.generate(tmp_path / "mv", splits={"train": 3, "test": 1}, n_frames=2, frame_size=32)
    c = get_config("paper")
    c.model.model_dir, c.data.data_dir, c.batch_size = str(folder), str(tmp_path / "mv"), 5
    tasks.build(c)
    assert (c.num_steps, c.optimizer.warmup_steps) == (3, 0)  # ceil(12 / 5), round(0.3)

    c = get_config("paper")
    c.model.model_dir, c.num_steps = str(folder), 40  # an explicit num_steps wins
    tasks.build(c)
    assert (c.num_steps, c.optimizer.warmup_steps) == (40, 4)


def test_load_trained_restores_a_qwen_workdir(folder, tmp_path):
    """config.json + a checkpoint of random params -> the Qwen task, the same params, and
    its deterministic query encoder; a moved model folder is named."""
    c = get_config("qwen_tiny")
    c.model.model_dir = str(folder)
    task = tasks.build(c)
    shapes = nn.meta.unbox(jax.eval_shape(task.init, jax.random.key(0)))
    rng = np.random.default_rng(0)
    params = jax.tree.map(lambda x: rng.standard_normal(x.shape).astype(np.float32), shapes)
    workdir = tmp_path / "run"
    workdir.mkdir()
    c.data.data_dir = str(tmp_path / "trained_on")  # the folder it was trained on
    (workdir / "config.json").write_text(c.to_json_best_effort())
    ckpt = checkpoint.Checkpointer(
        str(workdir / "checkpoints"), keep=1, async_save=False, every_steps=1
    )
    ckpt.save(3, {"params": params}, {})
    ckpt.close()

    loaded, restored = load_trained(str(workdir), str(tmp_path / "elsewhere"))
    assert loaded.qwen and loaded.config.data.data_dir == str(tmp_path / "elsewhere")
    jax.tree.map(np.testing.assert_array_equal, restored, params)
    ids, mask = loaded.inputs.queries(["the on-screen text says KALOMI"])
    emb, keep = loaded.encoders[0](restored, ids, mask)
    assert emb.shape == (1, c.data.query_len, 128) and int(keep.sum()) == int(mask.sum())

    c.model.model_dir = str(tmp_path / "moved")
    (workdir / "config.json").write_text(c.to_json_best_effort())
    with pytest.raises(FileNotFoundError, match="moved"):
        load_trained(str(workdir))
