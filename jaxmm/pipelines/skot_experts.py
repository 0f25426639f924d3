"""Video-SKoT's skill experts: SFT data per skill cluster, and routing between LoRA adapters.

Each kept rationale becomes one chat SFT record (`{"id", "messages"}`, the format
`jaxmm.tasks.sft` reads) whose user turn is the same `answer` prompt used at inference, in the
file of its question's cluster (`expert_<c>.jsonl`) and in `all.jsonl` (the paper's baseline:
one expert on all CoT data). At inference `ExpertBackend` holds one engine whose model carries
LoRA leaves; `select(name)` swaps only those leaves (each adapter is a tree whose base leaves
*are* the loaded base arrays), so the base model is loaded once and never copied. The backend's
`model` names the active adapter and its content hash, so the call cache never serves one
expert's answer to another.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from jaxmm.generate.backends import EngineBackend
from jaxmm.generate.engine import Engine
from jaxmm.io.jsonl import write_jsonl
from jaxmm.models import llm
from jaxmm.nn import lora as lora_lib
from jaxmm.pipelines import skot_prompts as P
from jaxmm.pipelines.runtime import Record

BASE = "base"  # the adapter name of the base model (all LoRA factors B = 0)


def sft_record(question: Record, target: str) -> dict[str, Any]:
    """One chat SFT record: the inference prompt -> the kept rationale."""
    prompt = P.render("answer", context=question["context"], question=question["question"],
                      options=question["options"])  # fmt: skip
    return {
        "id": str(question["id"]),
        "messages": [*prompt, {"role": "assistant", "content": target}],
    }


def write_expert_data(
    out_dir: str,
    questions: Sequence[Record],
    cot: Mapping[str, Record],
    cluster_of: Mapping[str, int],
) -> dict[str, dict[str, Any]]:
    """Writes `expert_<c>.jsonl` per cluster with kept rationales and `all.jsonl`;
    returns {expert name: {"path", "examples"}} (clusters without kept data get no file)."""
    os.makedirs(out_dir, exist_ok=True)
    per: dict[str, list[dict[str, Any]]] = {}
    for q in questions:
        out = cot.get(str(q["id"]))
        if out is None or not out["keep"]:
            continue
        rec = sft_record(q, out["target"])
        per.setdefault(f"expert_{cluster_of[str(q['id'])]}", []).append(rec)
        per.setdefault("all", []).append(rec)
    files = {}
    for name, recs in sorted(per.items()):
        path = os.path.join(out_dir, f"{name}.jsonl")
        write_jsonl(path, recs)
        files[name] = {"path": path, "examples": len(recs)}
    return files


def lora_engine(base: Engine, config: llm.LLMConfig, lora: lora_lib.LoRAConfig, seed: int = 0):
    """An engine over `base`'s weights (the same arrays, not copies) with fresh LoRA leaves
    (B = 0, so it answers like `base` until an adapter is selected) and `base`'s image
    encoder (if any: the experts then take video frames, `skot_prompts.video_parts`)."""
    config = config.replace(lora=lora)
    model = llm.LLM(config)
    tokens = jnp.zeros((1, 8), jnp.int32)
    abstract = jax.eval_shape(lambda: model.init(jax.random.key(0), tokens, tokens)["params"])
    params = lora_lib.add_lora(base.params, abstract, jax.random.key(seed))
    return Engine(
        model.apply,
        params,
        base.tokenizer,
        lambda b, n: llm.init_cache(config, b, n, config.dtype),
        max_seq_len=base.max_seq_len,
        max_batch=base.max_batch,
        eos_token_ids=base.eos_token_ids,
        steps_per_call=base.steps_per_call,
        model_name=base.model_name,
        vocab_size=config.vocab_size,
        image_encoder=base.image_encoder,
    )


def _digest(tree: Any) -> str:
    h = hashlib.sha256()
    for name, value in sorted(lora_lib.lora_state(tree).items()):
        h.update(name.encode())
        h.update(value.tobytes())
    return h.hexdigest()[:12]


class ExpertBackend(EngineBackend):
    """An engine backend whose LoRA adapter is chosen by name (`select`)."""

    name = "jaxmm-engine-experts"

    def __init__(self, engine: Engine):
        super().__init__(engine)
        self.base_params = engine.params  # LoRA leaves here are the `base` adapter
        self.adapters: dict[str, Any] = {BASE: engine.params}
        self.digests: dict[str, str] = {BASE: _digest(engine.params)}
        self.active = BASE
        self.model = f"{engine.model_name}+{BASE}"

    def add(self, name: str, adapter_dir: str) -> None:
        """Loads an adapter saved by `jaxmm.nn.lora.save_adapters` (shapes checked)."""
        params, _ = lora_lib.load_adapters(self.base_params, adapter_dir)
        self.add_params(name, params)

    def add_params(self, name: str, params: Any) -> None:
        """Registers LoRA leaves from `params`; every other leaf is taken from the base."""
        mask = lora_lib.trainable_mask(self.base_params)  # True on LoRA leaves
        tree = jax.tree.map(lambda m, b, x: x if m else b, mask, self.base_params, params)
        self.adapters[name], self.digests[name] = tree, _digest(tree)

    def select(self, name: str) -> None:
        if name not in self.adapters:
            raise KeyError(f"no adapter {name!r}; loaded: {sorted(self.adapters)}")
        with self._lock:
            self.engine.params = self.adapters[name]
            self.active = name
            self.model = f"{self.engine.model_name}+{name}@{self.digests[name]}"
