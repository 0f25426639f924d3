"""DPO on the shared trainer: preference pairs, frozen reference, sigmoid / IPO / hinge losses.

Data: JSONL / Parquet pair records `{"prompt", "chosen", "rejected"}` (trl's layout): `prompt`
a string (one user turn) or a message list, `chosen` / `rejected` a string (the assistant
reply) or a message list ending in the assistant turn. Each side is rendered with the
tokenizer's chat template by the SFT data code (`jaxmm.data.sft_records`) and scored on the
final assistant turn only (its content and end-of-turn token). Generated `arith` pairs (the
sum answered vs a refusal: a preference a tiny random model can learn in a few dozen CPU
steps) drive the tiny config and the tests.

Model and export are the SFT task's (random tiny Llama or a HF folder, LoRA or full). The
reference policy is a frozen copy in the params tree (`params["reference"]`, excluded by
`trainable_mask`): checkpointed with the run, so a resumed run is exact. Objectives and their
metrics (reward accuracy and margin) are `jaxmm.tasks.dpo_loss`.
"""

from __future__ import annotations

import random
from typing import Any

import grain
import jax
import ml_collections
import numpy as np

from jaxmm.data.pipeline import batched
from jaxmm.data.sft_records import (
    BadRecord,
    Conversation,
    Example,
    iter_raw_records,
    load_tokenizer,
    resolve_model_dir,
    tokenize_conversation,
)
from jaxmm.models.llm import LLM
from jaxmm.nn.logprobs import sequence_logprobs
from jaxmm.tasks import sft
from jaxmm.tasks.dpo_loss import dpo_loss
from jaxmm.train.task import DataShard, Task


def _messages(value: Any, role: str, where: str, field: str) -> list[dict[str, str]]:
    if isinstance(value, str) and value.strip():
        return [{"role": role, "content": value}]
    if isinstance(value, list) and value and all(isinstance(m, dict) for m in value):
        return [dict(m) for m in value]
    raise BadRecord("bad_pair", f"{where}: field {field!r} must be a non-empty string or list")


def last_turn_only(weights: np.ndarray) -> np.ndarray:
    """Keeps the last contiguous run of target tokens (the final assistant turn)."""
    hits = np.flatnonzero(weights)
    if not len(hits):
        return weights
    start = hits[-1]
    while start > 0 and weights[start - 1]:
        start -= 1
    out = np.zeros_like(weights)
    out[start : hits[-1] + 1] = 1
    return out


def pair_examples(tokenizer, record: dict[str, Any], where: str) -> tuple[Example, Example]:
    """(chosen, rejected) token ids with target weights on the final assistant turn."""
    for field in ("prompt", "chosen", "rejected"):
        if field not in record:
            raise BadRecord("bad_pair", f"{where}: pair record lacks field {field!r}")
    prompt = _messages(record["prompt"], "user", where, "prompt")
    out = []
    for side in ("chosen", "rejected"):
        reply = _messages(record[side], "assistant", where, side)
        if reply[-1].get("role") != "assistant":
            raise BadRecord("bad_pair", f"{where}: {side!r} must end with an assistant turn")
        ex = tokenize_conversation(tokenizer, Conversation(tuple(prompt + reply), (), where))
        out.append(Example(ex.ids, last_turn_only(ex.weights), where))
    return out[0], out[1]


def arith_pairs(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """`n` pairs: the sum answered is chosen, one of a few refusals rejected."""
    rng = random.Random(seed)
    refusals = ("I cannot help with that.", "Sorry, I do not know.", "Ask someone else.")
    pairs = []
    for i in range(n):
        a, b = rng.randint(1, 60), rng.randint(1, 60)
        pairs.append(
            {
                "id": f"arith-{i}",
                "prompt": f"What is {a} + {b}?",
                "chosen": f"{a} + {b} = {a + b}.",
                "rejected": rng.choice(refusals),
            }
        )
    return pairs


class PairSource:
    """Record i: both sides padded to `seq_len` (targets aligned with the next token)."""

    def __init__(self, pairs: list[tuple[Example, Example]], seq_len: int, pad_id: int):
        self.pairs, self.seq_len, self.pad_id = pairs, seq_len, pad_id

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        out = {}
        for side, ex in zip(("chosen", "rejected"), self.pairs[i], strict=True):
            tokens = np.full(self.seq_len, self.pad_id, np.int32)
            weights = np.zeros(self.seq_len, np.float32)
            tokens[: len(ex.ids)] = ex.ids
            weights[: len(ex.ids)] = ex.weights
            out[f"{side}_tokens"], out[f"{side}_weights"] = tokens, weights
        return out


class DPOTask(sft.SFTTask):
    def __init__(self, config: ml_collections.ConfigDict):
        Task.__init__(self, config)  # the SFT model setup below, with pair data instead
        d, m = config.data, config.model
        self.model_dir = resolve_model_dir(m.hf_dir) if m.hf_dir else ""
        self.tokenizer = load_tokenizer(d.tokenizer or self.model_dir)
        if d.train_files:
            raw = [r for p in d.train_files for r in iter_raw_records(p)]
        else:
            raw = [(f"generated:arith#{i}", r) for i, r in enumerate(arith_pairs(d.generated_size))]
        self.pairs, self.skipped = [], 0
        for where, record in raw:
            try:
                if isinstance(record, Exception):
                    raise record
                chosen, rejected = pair_examples(self.tokenizer, record, where)
                longest = max(len(chosen.ids), len(rejected.ids))
                if longest > d.seq_len:
                    raise BadRecord("too_long", f"{where}: {longest} tokens > seq_len {d.seq_len}")
            except BadRecord:
                if d.on_bad_record == "error":
                    raise
                self.skipped += 1
                continue
            self.pairs.append((chosen, rejected))
        if not self.pairs:
            raise ValueError("DPO: no usable preference pairs")
        self.lora = sft.lora_config(m)
        self.llm_config = self._llm_config()
        self.model = LLM(self.llm_config)
        self.dropout = False

    def init(self, rng):
        policy = super().init(rng)
        return {"policy": policy, "reference": policy}

    def pretrained_params(self, abstract_params):
        base = super().pretrained_params(abstract_params["policy"])
        return None if base is None else {"policy": base, "reference": base}

    def trainable_mask(self, params):
        policy = super().trainable_mask(params["policy"])
        if policy is None:
            policy = jax.tree.map(lambda _: True, params["policy"])
        return {"policy": policy, "reference": jax.tree.map(lambda _: False, params["reference"])}

    def _side_logps(self, params, tokens, weights):
        logits, _ = self.model.apply({"params": params}, tokens[:, :-1])
        return sequence_logprobs(logits, tokens[:, 1:], weights[:, 1:])

    def loss(self, params, batch, rng):
        del rng
        ref = jax.lax.stop_gradient(params["reference"])
        logps = {}
        for side in ("chosen", "rejected"):
            tokens, weights = batch[f"{side}_tokens"], batch[f"{side}_weights"]
            logps[side], logps[f"{side}_n"] = self._side_logps(params["policy"], tokens, weights)
            logps[f"ref_{side}"], _ = self._side_logps(ref, tokens, weights)
        p = self.config.dpo
        return dpo_loss(
            logps["chosen"],
            logps["rejected"],
            logps["ref_chosen"],
            logps["ref_rejected"],
            beta=float(p.beta),
            loss_type=p.loss_type,
            label_smoothing=float(p.label_smoothing),
            chosen_tokens=logps["chosen_n"],
            rejected_tokens=logps["rejected_n"],
        )

    def train_dataset(self, shard: DataShard) -> grain.IterDataset:
        return batched(PairSource(self.pairs, self.config.data.seq_len, self.pad_id), shard)

    def evaluate(self, params, step, workdir):
        out = {"data/pairs": float(len(self.pairs)), "data/skipped": float(self.skipped)}
        if step >= self.config.num_steps and self.config.export.hf:
            self.export(params["policy"], f"{workdir}/export")
        return out


def build(config: ml_collections.ConfigDict) -> Task:
    return DPOTask(config)
