"""Supervised fine-tuning of the jaxmm LLM on chat data (CINGS and OpenThoughts recipes).

Data (`jaxmm.data.sft_records`, `jaxmm.data.packing`): chat or sharegpt records from JSONL /
Parquet files, or generated ones (`data.generated`), rendered with the tokenizer's chat
template, masked to the assistant turns, packed first-fit into `data.seq_len` rows with
segment ids and per-example positions. Loss: token cross-entropy summed over trained targets
and divided by their number over the whole global batch; the count is reported as
`loss_weight`, so the trainer keeps that exact normalisation under gradient accumulation.
`loss.chunk_tokens > 0` computes it over sequence chunks without materialising the
[B, T, vocab] logits (long-sequence SFT, `jaxmm.nn.logprobs.chunked_token_logprobs`).

Model: a random Llama of the `model.*` sizes (tiny configs) or a Hugging Face folder
(`model.hf_dir`, `smollm2` = the real SmolLM2-135M-Instruct), full fine-tune or LoRA
(`model.lora_rank > 0`), `model.remat` for long sequences. At the end the model is exported as
HF safetensors (LoRA merged) into `<workdir>/export/hf`.
"""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Iterator
from typing import Any

import grain
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxmm.data import sft_synthetic
from jaxmm.data.packing import PackedSource, build_examples, make_row, pack
from jaxmm.data.pipeline import batched
from jaxmm.data.sft_records import iter_raw_records, load_tokenizer, resolve_model_dir
from jaxmm.models.hf import load_hf, save_hf
from jaxmm.models.llm import LLM, LLMConfig, head_params
from jaxmm.models.peft import save_peft_adapter
from jaxmm.nn import lora as lora_lib
from jaxmm.nn.logprobs import chunked_token_logprobs, token_logprobs
from jaxmm.train.optim import epoch_schedule
from jaxmm.train.task import DataShard, Task
from jaxmm.train.trainer import LOSS_WEIGHT

log = logging.getLogger(__name__)


def masked_nll_sum(logprobs: jax.Array, loss_mask: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(sum of masked token cross-entropies, number of masked tokens), both fp32 scalars.

    Returned apart so the division happens once, over everything that is summed."""
    mask = loss_mask.astype(jnp.float32)
    return -jnp.sum(logprobs * mask), jnp.sum(mask)


def token_loss_sum(
    logits: jax.Array, targets: jax.Array, loss_mask: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """`masked_nll_sum` from full logits [B, T, V]."""
    return masked_nll_sum(token_logprobs(logits, targets), loss_mask)


def llm_loss_sum(
    model: LLM,
    params,
    batch: dict[str, jax.Array],
    *,
    chunk_tokens: int = 0,
    deterministic: bool = True,
    rngs: dict[str, jax.Array] | None = None,
) -> tuple[jax.Array, jax.Array]:
    """`masked_nll_sum` of a packed batch (the `jaxmm.data.packing` keys) under `model`.

    `chunk_tokens > 0` computes it from the hidden states `chunk_tokens` positions at a time
    (`chunked_token_logprobs`), so the [B, T, vocab] logits never exist: what a 16K-token
    sequence over a 128K vocabulary needs. 0 = one lm head over all positions."""
    out, _ = model.apply(
        {"params": params},
        batch["tokens"],
        batch["positions"],
        segment_ids=batch["segment_ids"],
        deterministic=deterministic,
        rngs=rngs,
        return_hidden=chunk_tokens > 0,
    )
    if chunk_tokens <= 0:
        return token_loss_sum(out, batch["targets"], batch["loss_mask"])

    def head(p, x):
        return model.apply({"params": p}, x, method=LLM.logits_from_hidden)

    logp = chunked_token_logprobs(head, head_params(params), out, batch["targets"], chunk_tokens)
    return masked_nll_sum(logp, batch["loss_mask"])


def random_llm_config(
    m: ml_collections.ConfigDict, tokenizer, max_len: int, **run: Any
) -> LLMConfig:
    """A Llama of the `model.*` sizes over `tokenizer`'s vocabulary and special tokens."""
    eos = tokenizer.convert_tokens_to_ids(tokenizer.eos_token) if tokenizer.eos_token else None
    return LLMConfig(
        vocab_size=len(tokenizer),
        hidden_size=m.hidden_size,
        intermediate_size=m.intermediate_size,
        num_layers=m.num_layers,
        num_heads=m.num_heads,
        num_kv_heads=m.num_kv_heads,
        head_dim=m.head_dim,
        tie_embeddings=True,
        max_position_embeddings=max_len,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_ids=(eos,) if eos is not None else (),
        pad_token_id=tokenizer.pad_token_id,
        **run,
    )


def records(config: ml_collections.ConfigDict) -> Iterator[tuple[str, Any]]:
    """(where, record) pairs from `data.train_files`, else `data.generated` records."""
    d = config.data
    if d.train_files:
        return itertools.chain.from_iterable(iter_raw_records(p) for p in d.train_files)
    rows = sft_synthetic.generate(d.generated, d.generated_size, d.seed)
    return ((f"generated:{d.generated}#{i}", r) for i, r in enumerate(rows))


def lora_config(m: ml_collections.ConfigDict) -> lora_lib.LoRAConfig | None:
    if m.lora_rank <= 0:
        return None
    return lora_lib.LoRAConfig(m.lora_rank, m.lora_alpha, m.lora_dropout, tuple(m.lora_targets))


class SFTTask(Task):
    def __init__(self, config: ml_collections.ConfigDict):
        super().__init__(config)
        d, m = config.data, config.model
        if config.export.peft and config.model.lora_rank <= 0:
            raise ValueError("config.export.peft needs LoRA (config.model.lora_rank > 0)")
        self.model_dir = resolve_model_dir(m.hf_dir) if m.hf_dir else ""
        self.tokenizer = load_tokenizer(d.tokenizer or self.model_dir)
        examples, self.report = build_examples(
            records(config),
            self.tokenizer,
            seq_len=d.seq_len,
            cings_mode=d.cings_mode,
            chat_template=d.chat_template or None,
            on_bad_record=d.on_bad_record,
            on_too_long=d.on_too_long,
        )
        n_eval = min(d.eval_examples, len(examples) - 1)
        self.eval_examples = examples[len(examples) - n_eval :] if n_eval > 0 else []
        train = examples[: len(examples) - n_eval]
        self.train_examples = train
        self.rows = pack(train, d.seq_len, packing=d.packing, seed=d.seed)
        log.info(
            "SFT data: %d examples -> %d rows of %d tokens (%.1f%% target tokens); %s",
            len(train),
            len(self.rows),
            d.seq_len,
            100.0 * self.report.target_tokens / max(len(self.rows) * d.seq_len, 1),
            self.report.as_metrics(),
        )
        _resolve_schedule(config, len(self.rows))
        self.lora = lora_config(m)
        self.llm_config = self._llm_config()
        self.model = LLM(self.llm_config)
        self.dropout = self.lora is not None and self.lora.dropout > 0

    def _llm_config(self) -> LLMConfig:
        m, cfg = self.config.model, self.config
        run = {
            "dtype": cfg.precision.compute_dtype,
            "param_dtype": cfg.precision.param_dtype,
            "remat": m.remat,
            "scan_layers": m.scan_layers,
            "attention_impl": m.attention_impl,
            "lora": self.lora,
        }
        if self.model_dir:
            return LLMConfig.from_hf(self.model_dir, **run)
        return random_llm_config(m, self.tokenizer, max(self.config.data.seq_len, 128), **run)

    @property
    def pad_id(self) -> int:
        tok = self.tokenizer
        return int(tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id or 0)

    def init(self, rng):
        tokens = jnp.zeros((1, 8), jnp.int32)
        return self.model.init(rng, tokens, jnp.zeros((1, 8), jnp.int32))["params"]

    def pretrained_params(self, abstract_params):
        if not self.model_dir:
            return None
        mesh = jax.tree.leaves(abstract_params)[0].sharding.mesh
        c = self.llm_config
        _, base = load_hf(
            self.model_dir,
            mesh=mesh,
            rules=tuple(self.config.logical_axis_rules),
            dtype=c.dtype,
            param_dtype=c.param_dtype,
            scan_layers=c.scan_layers,
        )
        if self.lora is None:
            return base
        return lora_lib.add_lora(base, abstract_params, jax.random.key(self.config.seed + 1))

    def trainable_mask(self, params):
        return lora_lib.trainable_mask(params) if self.lora is not None else None

    def forward(self, params, batch, rng=None) -> jax.Array:
        logits, _ = self.model.apply(
            {"params": params},
            batch["tokens"],
            batch["positions"],
            segment_ids=batch["segment_ids"],
            deterministic=not (self.dropout and rng is not None),
            rngs={"dropout": rng} if self.dropout and rng is not None else None,
        )
        return logits

    def loss_sum(self, params, batch, rng=None) -> tuple[jax.Array, jax.Array]:
        """(summed token cross-entropy, trained tokens); chunked when `loss.chunk_tokens`."""
        dropout = self.dropout and rng is not None
        return llm_loss_sum(
            self.model,
            params,
            batch,
            chunk_tokens=self.config.loss.chunk_tokens,
            deterministic=not dropout,
            rngs={"dropout": rng} if dropout else None,
        )

    def loss(self, params, batch, rng):
        total, count = self.loss_sum(params, batch, rng)
        metrics = {
            LOSS_WEIGHT: count,
            "real_tokens": jnp.sum(batch["segment_ids"] > 0).astype(jnp.float32),
        }
        return total / jnp.maximum(count, 1.0), metrics

    def train_dataset(self, shard: DataShard) -> grain.IterDataset:
        source = PackedSource(self.train_examples, self.rows, self.config.data.seq_len, self.pad_id)
        return batched(source, shard)

    def eval_loss(self, params) -> float:
        """Token-normalised loss over the held-out examples (packed like training)."""
        d = self.config.data
        rows = pack(self.eval_examples, d.seq_len, packing=d.packing, seed=d.seed)
        fn = jax.jit(self.loss_sum)
        total = count = 0.0
        for i in range(0, len(rows), 8):
            chunk = [make_row([self.eval_examples[j] for j in r], d.seq_len, self.pad_id)
                     for r in rows[i : i + 8]]  # fmt: skip
            batch = {k: np.stack([c[k] for c in chunk]) for k in chunk[0]}
            s, n = jax.device_get(fn(params, batch))
            total, count = total + float(s), count + float(n)
        return total / max(count, 1.0)

    def evaluate(self, params, step, workdir):
        out = dict(self.report.as_metrics())
        if self.eval_examples:
            out["loss"] = self.eval_loss(params)
        if step >= self.config.num_steps and self.config.export.hf:
            self.export(params, os.path.join(workdir, "export"))
        return out

    def export(self, params, out_dir: str) -> None:
        """HF safetensors + tokenizer in `out_dir/hf` (LoRA merged); LoRA factors alone in
        `out_dir/lora` (jaxmm's adapter format) and, with `export.peft`, `out_dir/peft`."""
        config = self.llm_config.replace(lora=None, remat="none")
        full = params
        if self.lora is not None:
            lora_lib.save_adapters(params, self.lora, os.path.join(out_dir, "lora"))
            if self.config.export.peft:  # jaxmm.models.peft owns the format
                save_peft_adapter(
                    params, config, self.lora, os.path.join(out_dir, "peft"), self.model_dir or None
                )
            full = lora_lib.merge_lora(params, self.lora)
        save_hf(full, config, os.path.join(out_dir, "hf"))
        if jax.process_index() == 0:
            self.tokenizer.save_pretrained(os.path.join(out_dir, "hf"))
        log.info("exported the fine-tuned model to %s", os.path.join(out_dir, "hf"))


def _resolve_schedule(config: ml_collections.ConfigDict, num_rows: int) -> None:
    """`data.num_epochs > 0` sets num_steps from the packed rows (`optim.epoch_schedule`, the
    same rule as every task); `warmup_fraction` sets the warmup steps from num_steps (the
    trainer itself counts steps)."""
    d = config.data
    with config.unlocked():
        if d.num_epochs > 0:
            config.num_steps, _ = epoch_schedule(d.num_epochs, num_rows, config.batch_size)
        if config.warmup_fraction > 0:
            config.optimizer.warmup_steps = round(config.warmup_fraction * config.num_steps)


def build(config: ml_collections.ConfigDict) -> Task:
    return SFTTask(config)
