"""GRPO on the shared trainer: on-policy samples from the engine, rewards, clipped objective.

Each step: the data pipeline yields P prompt records; `rollout` (host side, current params)
samples G completions per prompt with the jaxmm generation engine (params handed over in
memory, no disk round trip; seeds from (seed, step, prompt, sample), so a resumed run samples
exactly what the killed one would have), scores them with the configured rewards and turns
the group-normalised rewards into advantages (`grpo_loss.group_advantages`). The jitted loss
then computes token log-probs of the completions under the policy and under the frozen
reference, and the clipped-ratio objective with the k3 KL (`grpo_loss.grpo_loss`).

The reference policy lives in the params tree (`params["reference"]`, frozen by
`trainable_mask`): it is checkpointed with the run, so resume is exact, and costs one extra
copy of the weights, like trl's reference model.
"""

from __future__ import annotations

import logging
from typing import Any

import grain
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxmm.data import rl_prompts
from jaxmm.data.pipeline import batched
from jaxmm.generate.engine import Engine
from jaxmm.generate.params import GenerationParams
from jaxmm.models import llm
from jaxmm.models.llm import LLM
from jaxmm.nn.logprobs import token_logprobs
from jaxmm.tasks import grpo_loss, rewards
from jaxmm.tasks.sft import random_llm_config
from jaxmm.train.task import DataShard, Task

log = logging.getLogger(__name__)


class PromptSource:
    """Random access over prompt records (the grain source)."""

    def __init__(self, records: list[dict[str, Any]]):
        self.records = records

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        return {"index": np.int32(i)}


class GRPOTask(Task):
    def __init__(self, config: ml_collections.ConfigDict):
        super().__init__(config)
        d, m = config.data, config.model
        if d.prompts_file:
            self.records = rl_prompts.load_prompts(d.prompts_file)
            self.tokenizer = _load_tokenizer(d.tokenizer or m.hf_dir)
        elif d.generated == "even":
            self.records = rl_prompts.even_prompts(d.generated_size, d.seed)
            self.tokenizer = rl_prompts.even_task_tokenizer()
        else:
            raise ValueError(
                f"config.data: set prompts_file or generated='even' (got {d.generated!r})"
            )
        self.prompt_ids = [self._encode(r) for r in self.records]
        longest = max(len(p) for p in self.prompt_ids)
        if longest > d.max_prompt_tokens:
            raise ValueError(
                f"a prompt has {longest} tokens > data.max_prompt_tokens={d.max_prompt_tokens}"
            )
        self.reward = rewards.combined(tuple(config.rl.rewards), tuple(config.rl.reward_weights))
        self.group = int(config.rl.group_size)
        self.completion_len = int(config.rl.max_completion_tokens)
        self.seq_len = int(d.max_prompt_tokens) + self.completion_len
        self.llm_config = random_llm_config(m, self.tokenizer, max(self.seq_len, 64))
        self.model = LLM(self.llm_config)
        self._engine: Engine | None = None

    def _encode(self, record: dict[str, Any]) -> list[int]:
        if "messages" in record:
            # Rendered, then tokenised as the engine's chat_inputs does: transformers 5's
            # apply_chat_template(tokenize=True) returns a BatchEncoding, not a list of ids.
            text = self.tokenizer.apply_chat_template(
                record["messages"], add_generation_prompt=True, tokenize=False
            )
            return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        return self.tokenizer.encode(record["prompt"], add_special_tokens=False)

    # ------------------------------------------------------------------ params
    def init(self, rng):
        tokens = jnp.zeros((1, 8), jnp.int32)
        policy = self.model.init(rng, tokens, jnp.zeros((1, 8), jnp.int32))["params"]
        return {"policy": policy, "reference": policy}

    def trainable_mask(self, params):
        return {
            "policy": jax.tree.map(lambda _: True, params["policy"]),
            "reference": jax.tree.map(lambda _: False, params["reference"]),
        }

    # ------------------------------------------------------------------ sampling
    def engine(self, policy_params) -> Engine:
        """The generation engine bound to `policy_params` (built once, params swapped)."""
        if self._engine is None:
            c = self.llm_config
            self._engine = Engine(
                self.model.apply,
                policy_params,
                self.tokenizer,
                lambda b, n: llm.init_cache(c, b, n),
                max_seq_len=self.seq_len,
                max_batch=self.config.batch_size * self.group,
                eos_token_ids=c.eos_token_ids,
                steps_per_call=self.config.rl.engine_steps_per_call,
            )
        self._engine.params = policy_params
        return self._engine

    def rollout(self, params, batch, step: int):
        """P prompts -> P·G sampled completions, rewards, advantages and token arrays."""
        rl = self.config.rl
        indices = [int(i) for i in np.asarray(batch["index"]).reshape(-1)]
        prompts = [self.prompt_ids[i] for i in indices for _ in range(self.group)]
        gen = [
            GenerationParams(
                max_tokens=self.completion_len,
                temperature=float(rl.temperature),
                top_p=float(rl.top_p),
                seed=int(np.random.SeedSequence([self.config.seed, step, k]).generate_state(1)[0]),
            )
            for k in range(len(prompts))
        ]
        outs = self.engine(params["policy"]).generate(prompts, gen)
        scores = np.array(
            [
                self.reward(o.text, self.records[indices[k // self.group]])
                for k, o in enumerate(outs)
            ],
            np.float32,
        )
        n, pad = len(prompts), int(self.tokenizer.pad_token_id or 0)
        tokens = np.full((n, self.seq_len), pad, np.int32)
        mask = np.zeros((n, self.seq_len), np.float32)  # 1 on completion tokens
        for k, (p, o) in enumerate(zip(prompts, outs, strict=True)):
            ids = list(o.token_ids)
            if o.finish_reason == "stop" and len(ids) < self.completion_len:
                ids = ids + [self.llm_config.eos_token_ids[0]]  # the EOS the model chose
            row = (list(p) + ids)[: self.seq_len]
            tokens[k, : len(row)] = row
            mask[k, len(p) : len(row)] = 1.0
        adv = np.asarray(grpo_loss.group_advantages(jnp.asarray(scores), self.group, rl.scale))
        return {"tokens": tokens, "completion_mask": mask, "advantages": adv, "rewards": scores}

    # ------------------------------------------------------------------ loss
    def _logprobs(self, params, tokens):
        logits, _ = self.model.apply({"params": params}, tokens[:, :-1])
        return token_logprobs(logits, tokens[:, 1:])

    def loss(self, params, batch, rng):
        del rng
        rl = self.config.rl
        tokens = batch["tokens"]
        logps = self._logprobs(params["policy"], tokens)
        ref = self._logprobs(jax.lax.stop_gradient(params["reference"]), tokens)
        loss, metrics = grpo_loss.grpo_loss(
            logps,
            logps,  # one optimisation step per sample batch: the sampler is the policy
            batch["advantages"],
            batch["completion_mask"][:, 1:],
            ref,
            beta=float(rl.beta),
            epsilon_low=float(rl.epsilon_low),
            epsilon_high=float(rl.epsilon_high),
            norm=rl.norm,
        )
        metrics["reward"] = jnp.mean(batch["rewards"])
        metrics["completion_tokens"] = jnp.sum(batch["completion_mask"]) / tokens.shape[0]
        return loss, metrics

    def train_dataset(self, shard: DataShard) -> grain.IterDataset:
        return batched(PromptSource(self.records), shard)

    def evaluate(self, params, step, workdir):
        """Mean reward of greedy completions over (up to) 64 prompts."""
        del step, workdir
        engine = self.engine(params["policy"])
        records = self.records[:64]
        outs = engine.generate(
            [self.prompt_ids[i] for i in range(len(records))],
            GenerationParams(max_tokens=self.completion_len),
        )
        return {
            "greedy_reward": float(
                np.mean([self.reward(o.text, r) for o, r in zip(outs, records, strict=True)])
            )
        }


def _load_tokenizer(name_or_path: str):
    if not name_or_path:
        raise ValueError("config.data.tokenizer (or model.hf_dir) must name a tokenizer folder")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(name_or_path)


def build(config: ml_collections.ConfigDict) -> Task:
    return GRPOTask(config)
