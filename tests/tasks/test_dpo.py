"""DPO task: pair rendering, the frozen reference, and learning a preference end to end."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest

from jaxmm import config as config_lib
from jaxmm import tasks
from jaxmm.data.sft_records import BadRecord, load_tokenizer
from jaxmm.tasks import dpo
from jaxmm.train import trainer as trainer_lib


def _config(**overrides):
    c = config_lib.load_config_file("configs/dpo.py:tiny")
    values = {"progress_bar": False, "log_every_steps": 5, "data.generated_size": 64}
    with c.unlocked():
        for k, v in (values | overrides).items():
            config_lib.set_key(c, k, v)
    return c


def test_last_turn_only():
    w = np.array([0, 1, 1, 0, 0, 1, 1, 1, 0])
    np.testing.assert_array_equal(dpo.last_turn_only(w), [0, 0, 0, 0, 0, 1, 1, 1, 0])
    np.testing.assert_array_equal(dpo.last_turn_only(np.zeros(3, int)), [0, 0, 0])


def test_pairs_score_only_the_final_reply():
    tok = load_tokenizer("smollm2")
    record = {
        "prompt": [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello there"},
            {"role": "user", "content": "What is 2 + 2?"},
        ],
        "chosen": "2 + 2 = 4.",
        "rejected": [{"role": "assistant", "content": "No idea."}],
    }
    chosen, rejected = dpo.pair_examples(tok, record, "pairs.jsonl:1")
    for ex, reply in ((chosen, "2 + 2 = 4."), (rejected, "No idea.")):
        scored = tok.decode(ex.ids[ex.weights.astype(bool)])
        assert scored.startswith(reply) and "Hello there" not in scored
        assert scored[len(reply) :].strip() == "<|im_end|>"  # the end-of-turn token counts
    shared = min(len(chosen.ids), len(rejected.ids))
    first_diff = np.flatnonzero(chosen.ids[:shared] != rejected.ids[:shared])[0]
    assert chosen.weights[:first_diff].sum() == 0  # the prompt is never scored
    with pytest.raises(BadRecord, match=r"pairs.jsonl:1: pair record lacks field 'rejected'"):
        dpo.pair_examples(tok, {"prompt": "x", "chosen": "y"}, "pairs.jsonl:1")
    with pytest.raises(BadRecord, match="'chosen' must end with an assistant turn"):
        dpo.pair_examples(
            tok, {"prompt": "x", "chosen": [{"role": "user", "content": "y"}], "rejected": "z"},
            "pairs.jsonl:1",
        )  # fmt: skip


def test_loss_starts_at_log2_and_trains_only_the_policy():
    c = _config()
    task = tasks.build(c)
    params = jax.jit(task.init)(jax.random.key(0))
    source = dpo.PairSource(task.pairs[:4], c.data.seq_len, task.pad_id)
    batch = {k: np.stack([source[i][k] for i in range(4)]) for k in source[0]}
    (loss, metrics), grads = jax.value_and_grad(task.loss, has_aux=True)(params, batch, None)
    np.testing.assert_allclose(loss, np.log(2.0), rtol=1e-6)  # policy == reference
    assert metrics["rewards/margin"] == 0.0
    ref_norm = sum(float(np.abs(g).sum()) for g in jax.tree.leaves(grads["reference"]))
    pol_norm = sum(float(np.abs(g).sum()) for g in jax.tree.leaves(grads["policy"]))
    assert ref_norm == 0.0 and pol_norm > 0.0
    mask = task.trainable_mask(params)
    assert not any(jax.tree.leaves(mask["reference"])) and all(jax.tree.leaves(mask["policy"]))


@pytest.mark.slow
def test_dpo_learns_the_preference(tmp_path):
    c = _config(num_steps=30)
    trainer_lib.train(c, str(tmp_path), tasks.build(c))
    rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    acc = [r["train/rewards/accuracy"] for r in rows if "train/rewards/accuracy" in r]
    loss = [r["train/loss"] for r in rows if "train/loss" in r]
    assert acc[-1] > 0.9 and loss[-1] < 0.3 < loss[0], (acc, loss)
