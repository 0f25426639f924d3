"""Video-SKoT end to end (arXiv 2506.03525): skills -> taxonomy -> skill CoT -> experts -> eval.

`run_video_skot(out_dir, ...)` runs the stages below; every model stage goes through
`runtime.run_pipeline` with one call cache (`<out_dir>/cache`), so a killed run restarted with
the same arguments repeats no model call, and a trained expert (its adapter folder exists) is
not trained again.

  01_skills_{train,test}.jsonl  `skot_skills`: skill description -> generic phrase
  02_taxonomy.json              MiniLM embeddings of the train phrases, k-means (k, seed),
                                clusters named by the member nearest the centroid
  03_cot.jsonl                  `skot_cot` on each train question with its `top_skills`
                                nearest cluster names; judge + gold-answer filter
  04_sft/expert_<c>.jsonl       kept rationales per cluster of the question; all.jsonl
  experts/<name>/adapter        `train_fn` (the shared trainer, see launch/video_skot.py)
  05_eval/<system>.<expert>.jsonl `skot_answer` per test question; systems:
                                `skot` (routed to its cluster's expert: nearest centroid of
                                its own skill phrase; a cluster without an expert -> `base`,
                                counted), `single` (the paper's baseline: one expert on all
                                CoT data) and `base` (no adapter)
  results.json                  accuracies, routing, counts
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from jaxmm.generate.backends import Backend
from jaxmm.generate.params import GenerationParams
from jaxmm.io.jsonl import read_jsonl, write_jsonl
from jaxmm.pipelines import skot_answer, skot_cot, skot_experts, skot_skills
from jaxmm.pipelines import skot_taxonomy as tax
from jaxmm.pipelines.runtime import Pipeline, Record, run_pipeline

Embed = Callable[[list[str]], np.ndarray]  # phrases -> [n, dim] L2-normalised
# (expert name, SFT jsonl, workdir, adapter_dir): train and save the adapter to adapter_dir
TrainFn = Callable[[str, str, str, str], None]
SYSTEMS = ("skot", "single", "base")
EVAL_DIR = "05_eval"


class Experts(Protocol):
    """What evaluation needs from a backend: adapters by name (`skot_experts.ExpertBackend`)."""

    model: str

    def add(self, name: str, adapter_dir: str) -> None: ...

    def select(self, name: str) -> None: ...


@dataclasses.dataclass(frozen=True)
class SkotConfig:
    k: int = 10  # clusters (the paper's K)
    seed: int = 0  # k-means seed
    top_skills: int = 3
    concurrency: int = 1
    params: GenerationParams = GenerationParams(max_tokens=128)
    systems: tuple[str, ...] = SYSTEMS
    # fewer distinct skill phrases than k: use that many clusters (recorded as `k_used`)
    # instead of raising TaxonomyError; for tiny runs of weak models
    allow_fewer_clusters: bool = False

    def __post_init__(self):
        if self.top_skills < 1 or self.top_skills > self.k:
            raise ValueError(f"top_skills must be in 1..k={self.k}, got {self.top_skills}")
        unknown = [s for s in self.systems if s not in SYSTEMS]
        if unknown:
            raise ValueError(f"unknown systems {unknown}; known: {list(SYSTEMS)}")


def minilm_embed() -> Embed:
    """The real all-MiniLM-L6-v2 sentence embeddings (`jaxmm.models.text_encoder`)."""
    from jaxmm.models.text_encoder import TextEncoder, minilm_model_dir

    encoder = TextEncoder.from_pretrained(minilm_model_dir())
    return lambda texts: encoder.sentence_embeddings(list(texts))


def _stage(
    pipeline: Pipeline, records: Sequence[Record], out: str, backend: Backend, cfg: SkotConfig
) -> dict[str, Record]:
    """Writes `<out>.input.jsonl`, runs `pipeline` resumably, returns {id: output}. The call
    cache is `cache/` beside the run's top folder (one for every stage)."""
    os.makedirs(os.path.dirname(out), exist_ok=True)
    write_jsonl(out + ".input.jsonl", records)
    top = os.path.dirname(out)
    if os.path.basename(top) == EVAL_DIR:
        top = os.path.dirname(top)
    cache = os.path.join(top, "cache")
    run_pipeline(pipeline, out + ".input.jsonl", out, backend, params=cfg.params,
                 cache_dir=cache, concurrency=cfg.concurrency, progress=False)  # fmt: skip
    return {str(r["id"]): r for r in read_jsonl(out)}


def cot_inputs(
    train: Sequence[Record], embeddings: np.ndarray, taxonomy: tax.Taxonomy, top: int
) -> list[Record]:
    """Each train question with the names of the `top` clusters nearest its phrase."""
    return [
        dict(q) | {"skills": [taxonomy.names[c] for c in taxonomy.nearest(e, top)]}
        for q, e in zip(train, embeddings, strict=True)
    ]


def route(
    ids: Sequence[str], embeddings: np.ndarray, taxonomy: tax.Taxonomy, trained: Sequence[str]
) -> dict[str, dict[str, Any]]:
    """{id: {"cluster", "expert"}}: the nearest centroid's expert, or `base` when that
    cluster has no trained expert."""
    out = {}
    for i, e in zip(ids, embeddings, strict=True):
        c = taxonomy.route(e)
        name = f"expert_{c}"
        out[str(i)] = {"cluster": c, "expert": name if name in trained else skot_experts.BASE}
    return out


def evaluate(
    out_dir: str,
    test: Sequence[Record],
    routing: Mapping[str, Mapping[str, Any]],
    experts: Experts,
    cfg: SkotConfig,
    single: str = "all",
) -> dict[str, Any]:
    """Runs `skot_answer` per (system, adapter) group; returns per-system accuracy.
    `single`: the adapter of the one-expert baseline (`base` when no rationale was kept)."""
    plans = {
        "skot": {str(q["id"]): routing[str(q["id"])]["expert"] for q in test},
        "single": {str(q["id"]): single for q in test},
        "base": {str(q["id"]): skot_experts.BASE for q in test},
    }
    results: dict[str, Any] = {}
    for system in cfg.systems:
        plan, outputs = plans[system], {}
        for expert in sorted(set(plan.values())):
            group = [dict(q) | {"expert": expert} for q in test if plan[str(q["id"])] == expert]
            experts.select(expert)
            path = os.path.join(out_dir, f"{system}.{expert}.jsonl")
            outputs |= _stage(skot_answer.PIPELINE, group, path, experts, cfg)  # type: ignore[arg-type]
        correct = [bool(outputs[str(q["id"])]["correct"]) for q in test]
        results[system] = {
            "accuracy": sum(correct) / max(len(correct), 1),
            "correct": sum(correct),
            "n": len(correct),
            "by_expert": {
                e: sum(c for q, c in zip(test, correct, strict=True) if plan[str(q["id"])] == e)
                for e in sorted(set(plan.values()))
            },
        }
    return results


def run_video_skot(
    out_dir: str,
    train: Sequence[Record],
    test: Sequence[Record],
    backend: Backend,
    embed: Embed,
    train_fn: TrainFn,
    experts: Callable[[], Experts],
    cfg: SkotConfig = SkotConfig(),
) -> dict[str, Any]:
    """All stages (module docstring); `experts()` is built only when evaluation starts."""
    os.makedirs(out_dir, exist_ok=True)
    skills = _stage(skot_skills.PIPELINE, train, os.path.join(out_dir, "01_skills_train.jsonl"),
                    backend, cfg)  # fmt: skip
    test_skills = _stage(skot_skills.PIPELINE, test,
                         os.path.join(out_dir, "01_skills_test.jsonl"), backend, cfg)  # fmt: skip
    train_ids = [str(q["id"]) for q in train]
    phrases = [skills[i]["skill_phrase"] for i in train_ids]
    emb = embed(phrases)
    k = cfg.k
    if cfg.allow_fewer_clusters:
        k = min(k, tax.distinct_rows(emb))
    taxonomy = tax.build_taxonomy(train_ids, phrases, emb, k=k, seed=cfg.seed)
    tax.save(taxonomy, os.path.join(out_dir, "02_taxonomy.json"))
    cluster_of = {i: taxonomy.route(e) for i, e in zip(train_ids, emb, strict=True)}
    cot = _stage(skot_cot.PIPELINE, cot_inputs(train, emb, taxonomy, cfg.top_skills),
                 os.path.join(out_dir, "03_cot.jsonl"), backend, cfg)  # fmt: skip
    data = skot_experts.write_expert_data(os.path.join(out_dir, "04_sft"), train, cot, cluster_of)
    for name, info in data.items():
        adapter = os.path.join(out_dir, "experts", name, "adapter")
        if not os.path.exists(os.path.join(adapter, "adapter_config.json")):
            train_fn(name, info["path"], os.path.join(out_dir, "experts", name), adapter)
    test_ids = [str(q["id"]) for q in test]
    test_emb = embed([test_skills[i]["skill_phrase"] for i in test_ids])
    routing = route(test_ids, test_emb, taxonomy, [n for n in data if n != "all"])
    ev = experts()
    for name in data:
        ev.add(name, os.path.join(out_dir, "experts", name, "adapter"))
    results = {
        "k": cfg.k,
        "k_used": taxonomy.k,
        "train_questions": len(train),
        "test_questions": len(test),
        "clusters": [{"name": n, "size": len(m)} for n, m in zip(taxonomy.names,
                                                                   taxonomy.members,
                                                                   strict=True)],
        "kept_rationales": sum(o["keep"] for o in cot.values()),
        "cot_reasons": {r: sum(o["reason"] == r for o in cot.values())
                        for r in sorted({o["reason"] for o in cot.values()})},
        "experts": {n: info["examples"] for n, info in data.items()},
        "routing": routing,
        "routed_to_base": sum(r["expert"] == skot_experts.BASE for r in routing.values()),
        "systems": evaluate(os.path.join(out_dir, EVAL_DIR), test, routing, ev, cfg,
                            single="all" if "all" in data else skot_experts.BASE),
    }  # fmt: skip
    with open(os.path.join(out_dir, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
    return results
