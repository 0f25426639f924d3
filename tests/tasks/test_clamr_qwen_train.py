"""CLaMR on the Qwen2.5-VL backbone in training: LoRA dropout only with a training rng (tiny
random model, CPU), and the paper's epoch recipe turned into steps."""

import zlib

import flax.linen as nn
import jax
import numpy as np
import pytest

from configs.clamr import get_config
from jaxmm import tasks
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
