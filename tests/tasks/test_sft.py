"""SFT task: packed == unpacked loss and gradients (full and chunked cross-entropy), token-level
normalisation over the global batch and gradient accumulation, and the tiny config end to end
(train, checkpoint, resume, HF export)."""

import glob
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxmm import config as config_lib
from jaxmm import tasks
from jaxmm.data import sft_synthetic
from jaxmm.data.packing import build_examples, make_row, pack
from jaxmm.io.jsonl import read_jsonl
from jaxmm.models.llm import LLM, LLMConfig
from jaxmm.tasks.sft import llm_loss_sum
from jaxmm.train import trainer as trainer_lib
from tests.data import chat_templates


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("qwen2_tok")
    chat_templates.build("qwen2").save_pretrained(out)
    return str(out)


def sft_config(tokenizer_dir, variant="tiny", **overrides):
    """The tiny config on a small real tokenizer (Qwen2 template, vocab 1000): fast on CPU."""
    c = config_lib.load_config_file(f"configs/sft.py:{variant}")
    with c.unlocked():
        c.progress_bar = False
        c.checkpoint.async_save = False
        c.data.tokenizer = tokenizer_dir
        c.data.generated_size = 96
        c.data.eval_examples = 8
        c.data.seq_len = 128
        c.model.hidden_size = 32
        c.model.intermediate_size = 64
        for k, v in overrides.items():
            config_lib.set_key(c, k, v)
    return c


def _stack(rows):
    return {k: np.stack([r[k] for r in rows]) for k in rows[0]}


def _examples(tok, n=16, seq_len=160, seed=3):
    recs = sft_synthetic.generate("chat", n, seed=seed)
    examples, _ = build_examples(
        ((f"g:{i}", r) for i, r in enumerate(recs)), tok, seq_len=seq_len, on_too_long="truncate"
    )
    return examples


# Chunked cross-entropy on the packed rows vs the full logits on one example per row: 48 does
# not divide seq_len 160, 32 does; the untied case checks the separate lm_head's gradient.
@pytest.mark.parametrize("chunk,tied", [(0, True), (48, True), (32, False)])
def test_packed_loss_and_grads_equal_unpacked(tokenizer_dir, chunk, tied):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    seq_len = 160
    examples = _examples(tok, seq_len=seq_len)
    # initializer_range 0.3: peaked attention, so attending across examples shows in the loss
    # (at 0.02 the random model is near-uniform and the leak changes the loss by only ~3e-5).
    cfg = LLMConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_layers=2,
                    num_heads=4, num_kv_heads=2, head_dim=8, attention_impl="xla",
                    initializer_range=0.3, tie_embeddings=tied)  # fmt: skip
    model = LLM(cfg)
    params = model.init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32))["params"]

    def loss_fn(p, b, chunk_tokens):
        total, count = llm_loss_sum(model, p, b, chunk_tokens=chunk_tokens)
        return total / count

    grad = jax.jit(jax.value_and_grad(loss_fn), static_argnums=2)
    rows = pack(examples, seq_len)
    assert max(len(r) for r in rows) >= 3 and len(rows) < len(examples)  # real packing
    packed = _stack([make_row([examples[j] for j in r], seq_len, 0) for r in rows])
    single = _stack([make_row([ex], seq_len, 0) for ex in examples])
    loss_p, g_p = grad(params, packed, chunk)
    loss_u, g_u = grad(params, single, 0)
    assert ("lm_head" in g_p) is not tied
    # fp32, same formula, different attention/reduction layout: 1e-5 (docs/testing.md).
    np.testing.assert_allclose(float(loss_p), float(loss_u), rtol=1e-5, atol=1e-5)
    scale = max(float(jnp.max(jnp.abs(g))) for g in jax.tree.leaves(g_u))
    for a, b in zip(jax.tree.leaves(g_p), jax.tree.leaves(g_u), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5 * scale, rtol=1e-4)
    # The check has teeth: the same rows without segment ids (attention across examples).
    leaky = dict(packed, segment_ids=(packed["segment_ids"] > 0).astype(np.int32))
    assert abs(float(grad(params, leaky, chunk)[0]) - float(loss_u)) > 1e-3


def _rows_of_different_lengths(task):
    """Eight unpacked rows whose target counts differ a lot (a mean of row means is wrong)."""
    by_count = sorted(task.train_examples, key=lambda ex: int(ex.weights[1:].sum()))
    short, long = by_count[:4], by_count[-4:]
    # Rows i::4 form accumulation micro-batch i: micro-batches 0, 1 short, 2, 3 long.
    picks = short[:2] + long[:2] + short[2:] + long[2:]
    return _stack([make_row([ex], task.config.data.seq_len, task.pad_id) for ex in picks])


def test_loss_is_summed_tokens_over_target_tokens_of_the_whole_sharded_batch(tokenizer_dir):
    task = tasks.build(sft_config(tokenizer_dir))
    params = jax.jit(task.init)(jax.random.key(0))
    batch = _rows_of_different_lengths(task)
    counts = batch["loss_mask"].sum(1)
    assert counts.max() > 4 * counts.min()
    mesh = Mesh(np.array(jax.devices()[:8]), ("data",))
    sharded = jax.device_put(batch, NamedSharding(mesh, PartitionSpec("data")))
    loss, metrics = jax.jit(task.loss)(params, sharded, jax.random.key(1))
    # Reference: per-token losses of the whole batch on one device, summed / counted here.
    logits = task.forward(params, batch)
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), -1)
    tok_loss = -np.take_along_axis(np.asarray(logp), batch["targets"][..., None], -1)[..., 0]
    want = (tok_loss * batch["loss_mask"]).sum() / batch["loss_mask"].sum()
    np.testing.assert_allclose(float(loss), want, rtol=1e-5)
    assert float(metrics["loss_weight"]) == batch["loss_mask"].sum()
    mean_of_means = np.mean((tok_loss * batch["loss_mask"]).sum(1) / counts)
    assert abs(mean_of_means - want) > 1e-3 * want  # the batch tells the two apart
    # `loss.chunk_tokens` switches the task to the chunked cross-entropy: same loss, sharded.
    with task.config.unlocked():
        task.config.loss.chunk_tokens = 48  # does not divide seq_len 128
    chunked, metrics = jax.jit(task.loss)(params, sharded, jax.random.key(1))
    assert "scan" in str(jax.make_jaxpr(task.loss)(params, batch, jax.random.key(1)))
    np.testing.assert_allclose(float(chunked), want, rtol=1e-5)
    assert float(metrics["loss_weight"]) == batch["loss_mask"].sum()


@pytest.mark.slow  # two trainers compiled: ~40 s on a loaded 2-core CPU (~12 s CPU time)
def test_grad_accumulation_gives_the_whole_batch_loss_and_gradients(tokenizer_dir, tmp_path):
    """accum=4 over micro-batches with very different target counts == accum=1."""
    results = []
    for accum in (1, 4):
        c = sft_config(tokenizer_dir, grad_accum_steps=accum, **{"mesh.data": 2})
        task = tasks.build(c)
        trainer = trainer_lib.Trainer(c, str(tmp_path / f"a{accum}"), task, jax.devices()[:2])
        params = jax.jit(task.init)(jax.random.key(0))
        batch = _rows_of_different_lengths(task)
        with trainer._context():
            loss, metrics, grads = jax.jit(trainer._loss_and_grads)(
                params, batch, jax.random.key(1)
            )
        results.append((float(loss), float(metrics["loss_weight"]), grads, batch))
    (l1, w1, g1, batch), (l4, w4, g4, _) = results
    assert w1 == w4 == batch["loss_mask"].sum()
    np.testing.assert_allclose(l4, l1, rtol=1e-5)  # fp32 summation order only
    scale = max(float(jnp.max(jnp.abs(g))) for g in jax.tree.leaves(g1))
    for a, b in zip(jax.tree.leaves(g4), jax.tree.leaves(g1), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5 * scale, rtol=1e-4)
    # The micro-batches (rows i::4) differ enough that a mean of their means would not match.
    counts = batch["loss_mask"].sum(1)
    micro = [counts[i::4].sum() for i in range(4)]
    assert max(micro) > 1.5 * min(micro)


@pytest.mark.slow  # 18 train steps + 2 evals + export: ~30 s on a loaded 2-core CPU
def test_tiny_trains_checkpoints_resumes_and_exports(tokenizer_dir, tmp_path):
    c = sft_config(tokenizer_dir, num_steps=16, log_every_steps=4,
                   **{"checkpoint.every_steps": 8, "optimizer.warmup_steps": 2})  # fmt: skip
    result = trainer_lib.train(c, str(tmp_path), tasks.build(c))
    losses = [r["train/loss"] for r in read_jsonl(tmp_path / "metrics.jsonl") if "train/loss" in r]
    # Measured: 6.82, 6.34, 5.98, 5.80 (lr 3e-3 cosine over 16 steps, from ln(1000) = 6.9).
    assert len(losses) == 4 and (np.diff(losses) < 0).all(), losses
    assert losses[-1] < 0.9 * losses[0], losses
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["16", "8"]
    assert result.eval_metrics["eval/loss"] < losses[0]
    assert result.eval_metrics["eval/data/records"] == 96
    # Export: a HF folder the jaxmm loader reads back to the trained weights.
    from jaxmm.models.hf import load_hf

    _, exported = load_hf(tmp_path / "export" / "hf")
    for a, b in zip(jax.tree.leaves(exported), jax.tree.leaves(result.state.params), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert glob.glob(str(tmp_path / "export" / "hf" / "tokenizer*.json"))
    c2 = sft_config(tokenizer_dir, num_steps=18, log_every_steps=2)
    again = trainer_lib.train(c2, str(tmp_path), tasks.build(c2))
    assert again.resumed_from == 16 and int(again.state.step) == 18


@pytest.mark.slow  # the real 135M model: load, 2 LoRA steps, merge + 0.5 GB export (minutes)
def test_smollm2_lora_starts_from_the_real_model_and_trains_only_lora(tmp_path):
    from jaxmm.models.hf import load_hf

    c = config_lib.load_config_file("configs/sft.py:smollm2_lora")
    with c.unlocked():
        c.progress_bar = False
        c.checkpoint.async_save = False
        c.num_steps, c.log_every_steps, c.optimizer.warmup_steps = 2, 1, 0
        c.data.generated_size, c.data.eval_examples, c.data.seq_len = 24, 0, 128
    task = tasks.build(c)
    # One device: replicated over the 8 fake CPU devices the 135M model needs ~20 GB of RAM.
    result = trainer_lib.train(c, str(tmp_path), task, devices=jax.devices()[:1])
    losses = [r["train/loss"] for r in read_jsonl(tmp_path / "metrics.jsonl") if "train/loss" in r]
    # A random model starts at ln(49152) = 10.8; the pretrained instruct model far below.
    assert losses[0] < 5.0, losses
    _, base = load_hf(task.model_dir)
    trained = result.state.params
    changed = []
    for path, leaf in jax.tree_util.tree_leaves_with_path(trained):
        keys = [k.key for k in path]
        if keys[-1] in ("lora_a", "lora_b"):
            changed.append(keys[-1] == "lora_b" and bool(np.any(np.asarray(leaf) != 0)))
            continue
        ref = base
        for k in keys:
            ref = ref[k]
        np.testing.assert_array_equal(np.asarray(leaf), np.asarray(ref))  # frozen base
    assert changed and any(changed)
    assert os.path.isfile(tmp_path / "export" / "hf" / "model.safetensors")
    assert os.path.isfile(tmp_path / "export" / "lora" / "adapter.safetensors")
