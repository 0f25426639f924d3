"""ReAgent-V's reward-based data selection: the `reagent_v` pipeline's outputs -> training
files in the formats the post-training tasks read.

    SFT  (jaxmm.tasks.sft, chat JSONL):   {"id", "messages": [user prompt, assistant answer]}
         for records whose best critic reward >= `sft_min_reward`; the answer is the one the
         critic scored higher (the final one on a tie).
    DPO  (jaxmm.tasks.dpo, trl layout):   {"id", "prompt", "chosen", "rejected"}
         for records whose initial and final answers differ and whose rewards differ by
         >= `dpo_min_margin`; chosen = the higher-rewarded answer.
    GRPO (jaxmm.tasks.grpo prompt file):  {"id", "prompt", "messages", ["answer"]}
         for records whose *initial* reward (the paper's importance score: how well the
         model already does) is <= `grpo_max_reward`: the hard questions, for RL. `messages`
         is what the task encodes (chat template); `prompt` is kept for judge rewards;
         `answer` is the gold letter when the record has one (the reward's reference).

A record whose needed reward did not parse is counted under `skipped_no_reward`, not guessed.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Mapping
from typing import Any

from jaxmm.io.jsonl import write_jsonl


@dataclasses.dataclass(frozen=True)
class SelectionConfig:
    sft_min_reward: float = 0.8
    dpo_min_margin: float = 0.2
    grpo_max_reward: float = 0.5


def select_training_data(
    outputs: Iterable[Mapping[str, Any]], config: SelectionConfig = SelectionConfig()
) -> tuple[dict[str, list[dict[str, Any]]], dict[str, int]]:
    """({"sft": rows, "dpo": rows, "grpo": rows}, counts) from `reagent` mode outputs
    (baseline rows carry no reward and are skipped)."""
    sets: dict[str, list[dict[str, Any]]] = {"sft": [], "dpo": [], "grpo": []}
    counts = {"records": 0, "skipped_baseline": 0, "skipped_no_reward": 0}
    for o in outputs:
        if o.get("mode") != "reagent":
            counts["skipped_baseline"] += 1
            continue
        counts["records"] += 1
        r0, r1 = o.get("reward_initial"), o.get("reward_final")
        if r0 is None and r1 is None:
            counts["skipped_no_reward"] += 1
            continue
        user = {"role": "user", "content": o["prompt"]}
        rid = str(o["id"])
        candidates = ((r1, o["final_answer"]), (r0, o["initial_answer"]))
        scored = [(r, a) for r, a in candidates if r is not None]
        best_reward, best_answer = max(scored, key=lambda x: x[0])  # final first on a tie
        if best_reward >= config.sft_min_reward:
            sets["sft"].append(
                {"id": rid, "messages": [user, {"role": "assistant", "content": best_answer}]}
            )
        if (
            r0 is not None
            and r1 is not None
            and o["final_answer"].strip() != o["initial_answer"].strip()
            and abs(r1 - r0) >= config.dpo_min_margin
        ):
            chosen, rejected = (
                (o["final_answer"], o["initial_answer"])
                if r1 > r0
                else (o["initial_answer"], o["final_answer"])
            )
            sets["dpo"].append(
                {"id": rid, "prompt": o["prompt"], "chosen": chosen, "rejected": rejected}
            )
        if r0 is not None and r0 <= config.grpo_max_reward:
            row = {"id": rid, "prompt": o["prompt"], "messages": [user]}
            if o.get("gold") is not None:
                row["answer"] = o["gold"]
            sets["grpo"].append(row)
    counts |= {k: len(v) for k, v in sets.items()}
    return sets, counts


def write_training_data(
    outputs: Iterable[Mapping[str, Any]],
    out_dir: str | os.PathLike,
    config: SelectionConfig = SelectionConfig(),
) -> dict[str, int]:
    """Writes `<out_dir>/{sft,dpo,grpo}.jsonl` (atomically; an empty set gives an empty file)
    and returns the counts."""
    sets, counts = select_training_data(outputs, config)
    os.makedirs(out_dir, exist_ok=True)
    for name, rows in sets.items():
        write_jsonl(os.path.join(os.fspath(out_dir), f"{name}.jsonl"), rows)
    return counts
