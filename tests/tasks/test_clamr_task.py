"""CLaMR objectives against independent numpy implementations, the cross-device gather of
negatives (8 fake CPU devices, set by the repo conftest), config errors, and a short run of
the task through the shared trainer."""

import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from jaxmm import config as config_lib
from jaxmm import sharding, tasks
from jaxmm.tasks.clamr_loss import clamr_loss, in_batch_scores
from jaxmm.train import trainer

TAU = 0.5  # a large τ keeps hand values readable; the default 0.02 is tested below


def _np_nce(logits, target):
    logits = np.asarray(logits, np.float64)
    m = logits.max(axis=1, keepdims=True)
    lse = (m + np.log(np.exp(logits - m).sum(axis=1, keepdims=True)))[:, 0]
    return float(np.mean(lse - logits[np.arange(len(logits)), target]))


def _np_loss(per_mod, gold, objective, tau):
    """Written from the spec, loop by loop (gold: 1-based modality ids)."""
    per_mod = np.asarray(per_mod, np.float64)
    b, _, m = per_mod.shape
    losses = []
    for i in range(b):
        g = gold[i] - 1
        pos = per_mod[i, i].max()
        if objective in ("hard_positive", "modality_aware"):
            pos = per_mod[i, i, g]
        negs = [per_mod[i, c].max() for c in range(b) if c != i]
        if objective == "modality_aware":
            negs += [per_mod[i, c, k] for c in range(b) for k in range(m) if (c, k) != (i, g)]
        logits = np.array([pos, *negs]) / tau
        losses.append(np.log(np.exp(logits).sum()) - logits[0])
    return float(np.mean(losses))


# Query 0 (gold modality 1) matches video 0 best through the WRONG modality (2); query 1
# (gold modality 2) is right. Hand value of the contrastive loss, row 0:
# logits [0.9, 0.3] / 0.5 -> -log softmax = log(1 + e^-1.2) = 0.2633.
PER_MOD = np.array(
    [
        [[0.6, 0.9], [0.3, 0.1]],
        [[0.2, 0.4], [0.1, 0.8]],
    ],
    np.float32,
)
GOLD = np.array([1, 2], np.int32)


def test_contrastive_matches_hand_value():
    loss, metrics = clamr_loss(jnp.asarray(PER_MOD), GOLD, objective="contrastive", temperature=TAU)
    row0 = np.log1p(np.exp(-1.2))
    row1 = np.log1p(np.exp(-0.8))  # logits [0.4, 0.8] / 0.5, positive 0.8
    np.testing.assert_allclose(float(loss), (row0 + row1) / 2, rtol=1e-6)
    assert float(metrics["in_batch_acc"]) == 1.0
    assert float(metrics["in_batch_modality_acc"]) == 0.5  # query 0 picks modality 2


@pytest.mark.parametrize("objective", ["contrastive", "hard_positive", "modality_aware"])
@pytest.mark.parametrize("tau", [TAU, 0.02])
def test_objectives_match_numpy(objective, tau):
    rng = np.random.default_rng(0)
    per_mod = rng.uniform(-1, 1, (5, 5, 4)).astype(np.float32)
    gold = rng.integers(1, 5, 5).astype(np.int32)
    loss, _ = clamr_loss(jnp.asarray(per_mod), gold, objective=objective, temperature=tau)
    np.testing.assert_allclose(float(loss), _np_loss(per_mod, gold, objective, tau), rtol=1e-5)


def test_modality_aware_penalises_the_wrong_modality_of_the_right_video():
    """Hand example: raising s_2(q_0, d_0) (a wrong view of the right video, already its max)
    must raise the modality-aware loss; contrastive and hard-positive scores of row 0 see
    it only through s(q_0, d_0), the positive, so their loss does not rise."""
    base = PER_MOD.copy()
    worse = PER_MOD.copy()
    worse[0, 0, 1] = 0.95
    cases = (("modality_aware", True), ("hard_positive", False), ("contrastive", False))
    for objective, should_rise in cases:
        lo, _ = clamr_loss(jnp.asarray(base), GOLD, objective=objective, temperature=TAU)
        hi, _ = clamr_loss(jnp.asarray(worse), GOLD, objective=objective, temperature=TAU)
        assert (float(hi) > float(lo) + 1e-3) == should_rise, objective
    # hard positive, row 0: positive s_1(q0,d0) = 0.6, negative max s(q0,d1) = 0.3
    hp, _ = clamr_loss(jnp.asarray(base), GOLD, objective="hard_positive", temperature=TAU)
    row0 = np.log1p(np.exp((0.3 - 0.6) / TAU))
    row1 = np.log1p(np.exp((0.4 - 0.8) / TAU))
    np.testing.assert_allclose(float(hp), (row0 + row1) / 2, rtol=1e-6)


def test_loss_input_errors():
    with pytest.raises(ValueError, match="objective"):
        clamr_loss(jnp.asarray(PER_MOD), GOLD, objective="triplet")
    with pytest.raises(ValueError, match="temperature"):
        clamr_loss(jnp.asarray(PER_MOD), GOLD, temperature=0.0)
    with pytest.raises(ValueError, match="M > 1"):
        clamr_loss(jnp.asarray(PER_MOD[..., :1]), GOLD, objective="modality_aware")


def _embeddings(b=8, lq=4, ld=6, dim=16):
    k1, k2, k3 = jax.random.split(jax.random.key(1), 3)
    norm = lambda x: x / jnp.linalg.norm(x, axis=-1, keepdims=True)
    q = norm(jax.random.normal(k1, (b, lq, dim)))
    d = norm(jax.random.normal(k2, (b, ld, dim)))
    q_mask = jnp.arange(lq)[None] < jnp.array([4, 3, 2, 4, 1, 4, 3, 2])[:, None]
    d_mod = jax.random.randint(k3, (b, ld), 0, 5)
    gold = jnp.array([1, 2, 3, 4, 1, 2, 3, 4])
    return q, q_mask, d, d_mod, gold


def _loss(q, q_mask, d, d_mod, gold):
    per_mod = in_batch_scores(q, q_mask, d, d_mod, 4, impl="reference")
    return clamr_loss(per_mod, gold, objective="modality_aware")[0]


def test_negatives_gathered_across_devices_equal_one_device():
    """Global batch 8 on a (data=4, fsdp=2) mesh: every query still sees all 8 documents,
    and loss + gradients equal the single-device computation."""
    assert len(jax.devices()) >= 8, "the repo conftest sets 8 fake CPU devices"
    args = _embeddings()
    grad = jax.jit(jax.value_and_grad(_loss, argnums=(0, 2)))
    want_loss, want_grads = grad(*args)

    mesh = sharding.make_mesh({"data": 4, "fsdp": 2, "tensor": 1}, jax.devices()[:8])
    batch = NamedSharding(mesh, PartitionSpec(("data", "fsdp")))
    with jax.set_mesh(mesh), nn.logical_axis_rules(sharding.DEFAULT_RULES):
        sharded = [jax.device_put(a, batch) for a in args]
        jaxpr = str(jax.make_jaxpr(_loss)(*sharded))
        got_loss, got_grads = grad(*sharded)
    assert "all_gather" in jaxpr and "shard_map" in jaxpr  # the gather path really ran
    np.testing.assert_allclose(float(got_loss), float(want_loss), rtol=1e-5)
    for got, want in zip(got_grads, want_grads, strict=True):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-4)  # fp32 grads
    # a local-only score matrix would miss the other shards' documents
    per_mod = jax.jit(lambda *a: in_batch_scores(*a, 4, impl="reference"))(*args[:4])
    assert per_mod.shape == (8, 8, 4)


# ------------------------------------------------------------------------ task + config


def _config(variant="runlocal", **overrides):
    c = config_lib.load_config_file(f"configs/clamr.py:{variant}")
    with c.unlocked():
        c.checkpoint.async_save = False
        for k, v in overrides.items():
            config_lib.set_key(c, k, v)
    return c


def test_paper_variant_names_the_missing_checkpoint_folder():
    c = _config("paper")
    assert c.model.lora_rank == 128 and c.model.lora_alpha == 128 and c.loss.temperature == 0.02
    assert c.optimizer.learning_rate == 1e-5 and c.recipe.warmup_ratio == 0.1
    with pytest.raises(FileNotFoundError, match="Qwen2.5-VL-3B-Instruct"):
        tasks.build(c)  # the default model_dir is the hub name: a local folder is needed


def test_bad_scoring_is_named():
    with pytest.raises(ValueError, match="scoring"):
        tasks.build(_config(**{"loss.scoring": "sum"}))


@pytest.mark.slow  # ~1-2 min on a loaded 2-core CPU (corpus, MiniLM init, 12 steps, eval)
def test_trainer_runs_clamr_end_to_end(tmp_path):
    c = _config(
        **{
            "num_steps": 12,
            "batch_size": 8,
            "log_every_steps": 4,
            "optimizer.learning_rate": 2e-4,
            "optimizer.warmup_steps": 0,
            "model.num_layers": 1,
            "data.train_groups": 4,
            "data.test_groups": 2,
        }
    )
    result = trainer.train(c, str(tmp_path), tasks.build(c))
    rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    losses = [r["train/loss"] for r in rows if "train/loss" in r]
    assert len(losses) == 3 and losses[-1] < losses[0], losses
    ev = result.eval_metrics
    for key in ("ndcg@10", "recall@1", "recall@5", "recall@10", "modality_acc", "ndcg@10/ocr"):
        assert 0.0 <= ev[f"eval/{key}"] <= 1.0, key
    run = open(tmp_path / "eval" / "run.trec").read().split("\n")
    assert len(run[0].split()) == 6 and os.path.isdir(tmp_path / "data" / "frames")
