"""GRPO task: rewards, rollouts (shapes, masks, determinism) and learning a verifiable reward."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest

from jaxmm import config as config_lib
from jaxmm import tasks
from jaxmm.tasks import rewards
from jaxmm.train import trainer as trainer_lib


def _config(**overrides):
    c = config_lib.load_config_file("configs/grpo.py:even")
    # batch_size 8: one prompt per fake device of the test session (tests/conftest.py)
    values = {"progress_bar": False, "log_every_steps": 1, "batch_size": 8} | overrides
    with c.unlocked():
        for k, v in values.items():
            config_lib.set_key(c, k, v)
    return c


def word_count(completion: str, record: dict) -> float:
    """A `python:` reward for the test below."""
    del record
    return float(len(completion.split()))


def test_reward_specs():
    rec = {"prompt": "capital of France?", "answer": "Paris"}
    assert rewards.make_reward("exact")("The paris.", rec) == 1.0
    assert rewards.make_reward("exact")("Paris, France", rec) == 0.0
    assert rewards.make_reward("contains")("It is Paris, France", rec) == 1.0
    even = rewards.make_reward(r"regex:^\s*[02468]")
    assert even(" 4 1", rec) == 1.0 and even("7 2", rec) == 0.0
    total = rewards.combined(["exact", r"regex:^P"], [2.0, 0.5])
    assert total("Paris", rec) == 2.5
    words = rewards.make_reward("python:tests.tasks.test_grpo:word_count")
    assert words("a b c", rec) == 3.0
    with pytest.raises(ValueError, match="unknown reward 'bleu'"):
        rewards.make_reward("bleu")
    with pytest.raises(ValueError, match="needs an 'answer' field"):
        rewards.make_reward("exact")("x", {"prompt": "p"})
    with pytest.raises(ValueError, match="has no callable 'nope'"):
        rewards.make_reward("python:jaxmm.eval.answers:nope")


def test_rollout_shapes_masks_and_determinism():
    c = _config()
    task = tasks.build(c)
    params = jax.jit(task.init)(jax.random.key(0))
    batch = {"index": np.arange(c.batch_size, dtype=np.int32)}
    out = task.rollout(params, batch, step=3)
    n = c.batch_size * c.rl.group_size
    assert out["tokens"].shape == (n, task.seq_len) and out["advantages"].shape == (n,)
    for k in range(n):
        prompt = task.prompt_ids[k // c.rl.group_size]
        np.testing.assert_array_equal(out["tokens"][k, : len(prompt)], prompt)
        assert out["completion_mask"][k, : len(prompt)].sum() == 0
        assert 1 <= out["completion_mask"][k].sum() <= c.rl.max_completion_tokens
    groups = out["advantages"].reshape(c.batch_size, -1)
    np.testing.assert_allclose(groups.mean(1), 0.0, atol=1e-5)  # centred per group
    again = task.rollout(params, batch, step=3)
    np.testing.assert_array_equal(out["tokens"], again["tokens"])  # same (params, step)
    other = task.rollout(params, batch, step=4)
    assert not np.array_equal(out["tokens"], other["tokens"])  # new seeds each step


@pytest.mark.slow
def test_grpo_raises_the_mean_reward(tmp_path):
    c = _config(num_steps=40)
    result = trainer_lib.train(c, str(tmp_path), tasks.build(c))
    rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    reward = [r["train/reward"] for r in rows if "train/reward" in r]
    first, last = np.mean(reward[:5]), np.mean(reward[-5:])
    assert last > first + 0.2, reward
    assert result.eval_metrics["eval/greedy_reward"] > 0.5


@pytest.mark.slow
def test_resumed_run_samples_and_trains_exactly_like_an_uninterrupted_one(tmp_path):
    def run(workdir, steps):
        c = _config(num_steps=steps, **{"checkpoint.every_steps": 3})
        return trainer_lib.train(c, str(workdir), tasks.build(c)).state.params

    straight = run(tmp_path / "a", 6)
    run(tmp_path / "b", 3)  # "killed" after its step-3 checkpoint ...
    resumed = run(tmp_path / "b", 6)  # ... and restarted with the full budget
    jax.tree.map(np.testing.assert_array_equal, straight, resumed)
