"""The CINGS experiment (arXiv 2506.15480) end to end: pretrain, fine-tune two ways, measure.

Per seed: a fact world (`jaxmm.data.fact_world`) is drawn; a tiny Llama is pretrained on its
corpus with the SFT task on raw-text records; from those weights each setting fine-tunes on
the same question records for the same number of steps; each fine-tuned model answers
held-out questions whose context agrees with, adds to or contradicts what pretraining wrote,
and closed-book questions, with greedy decoding on the generation engine; answers are scored
by exact match (`jaxmm.eval.grounding`). Everything runs through the shared trainer
(`jaxmm.train.trainer.train`, one workdir per run, so a rerun resumes or skips) and the
engine; this module only wires them and keeps the bookkeeping.

Settings (name: SFT `cings_mode`, where the context sits at inference, training records):

    standard      no_context  user     question -> answer (passages unused: plain instruction
                                       tuning; the spec's `no_context` mode)
    standard_rag  no_context  user     context + question in the user turn -> answer
    cings         context     prefill  question -> `## Context <passages> ## Answer <answer>`,
                                       passages masked out of the loss

Workdir layout: `tokenizer/` (one BPE tokenizer for all seeds), `seed<k>/{data, pretrain,
<setting>}` with `<setting>/scores.json` (metrics + predictions); `results.json` and
`table.md` at the top. Finished scores are reused, so a rerun only does what is missing; the
sizes are fixed per workdir (`sizes.json`).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Sequence
from typing import Any

import ml_collections

from jaxmm.data import fact_world
from jaxmm.data.sft_records import load_tokenizer
from jaxmm.data.small_tokenizer import train_chat_tokenizer
from jaxmm.eval import grounding
from jaxmm.generate.engine import Engine
from jaxmm.generate.params import GenerationParams
from jaxmm.io.jsonl import write_jsonl
from jaxmm.models import llm
from jaxmm.tasks.sft import SFTTask
from jaxmm.train import trainer

# name -> (cings_mode, prompt format at inference, context in the user turn when training)
SETTINGS: dict[str, tuple[str, str, bool]] = {
    "standard": ("no_context", "user", False),
    "standard_rag": ("no_context", "user", True),
    "cings": ("context", "prefill", False),
}
COLUMNS = ("em/agree", "em/new", "em/contradict", "em/closed_book", "memory/contradict")
_TOKENIZER_WORLD_SEED = 12345  # the tokenizer's training text is the same for every seed


@dataclasses.dataclass(frozen=True)
class Sizes:
    """The experiment's scale (the model's is the base config's `model.*`)."""

    n_entities: int = 100
    known_fraction: float = 0.7
    repeats: int = 3  # statements of each known fact in the pretraining corpus
    n_train: int = 600  # fine-tuning records (agree + new)
    n_test_per_kind: int = 40
    n_distractors: int = 0  # true sentences about other entities in each context
    pretrain_steps: int = 400
    sft_steps: int = 300
    vocab_size: int = 1024  # > 0: a BPE tokenizer of this size; 0: the base config's tokenizer
    max_tokens: int = 48  # generated tokens per question


def build_tokenizer(out_dir: str, vocab_size: int, like: str = "smollm2") -> str:
    """A BPE tokenizer of the fact-world language with `like`'s chat format, saved once."""
    if os.path.isfile(os.path.join(out_dir, "tokenizer.json")):
        return out_dir
    like_tok = load_tokenizer(like)
    texts = []
    for k in range(10):  # names from several worlds, so their syllables become pieces
        world = fact_world.make_world(100, 0.5, seed=_TOKENIZER_WORLD_SEED + k)
        facts = world.facts.items()
        texts += [world.statement(e, r, v, i) for (e, r), v in facts for i in (0, 1, 2)]
        texts += [world.question(e, r) for (e, r) in world.facts]
    convo = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
    # The template's fixed text (system prompt, role headers, CINGS markers) is in every
    # prompt: weighted like the world's text so BPE merges it into few pieces.
    texts += [like_tok.apply_chat_template(convo, tokenize=False) + "## Context\n## Answer\n"]
    texts += texts[-1:] * 2000
    train_chat_tokenizer(texts, like_tok, vocab_size).save_pretrained(out_dir)
    return out_dir


def rag_record(record: dict[str, Any]) -> dict[str, Any]:
    """`record` with its context moved into the user turn (the `user` prompt format)."""
    messages, _ = grounding.prompt(record, "user")
    out = {k: v for k, v in record.items() if k != "context"}
    out["messages"] = messages + [m for m in record["messages"] if m["role"] == "assistant"]
    return out


def write_seed_data(data_dir: str, seed: int, sizes: Sizes) -> dict[str, Any]:
    """Corpus, fine-tuning records (plain and RAG-shaped) and test sets of one seed's world."""
    world = fact_world.make_world(sizes.n_entities, sizes.known_fraction, seed=seed)
    splits = fact_world.make_splits(
        world,
        n_train=sizes.n_train,
        n_test_per_kind=sizes.n_test_per_kind,
        n_distractors=sizes.n_distractors,
        seed=seed,
    )
    os.makedirs(data_dir, exist_ok=True)
    paths = {
        "corpus": os.path.join(data_dir, "corpus.jsonl"),
        "train": os.path.join(data_dir, "train.jsonl"),
        "train_rag": os.path.join(data_dir, "train_rag.jsonl"),
    }
    corpus = fact_world.pretraining_documents(world, sizes.repeats, seed=seed)
    write_jsonl(paths["corpus"], [{"text": t} for t in corpus])
    write_jsonl(paths["train"], splits["train"])
    write_jsonl(paths["train_rag"], [rag_record(r) for r in splits["train"]])
    tests = {k: splits[k] for k in grounding.KINDS}
    with open(os.path.join(data_dir, "tests.json"), "w") as f:
        json.dump(tests, f)
    return {"paths": paths, "tests": tests}


def run_config(
    base: ml_collections.ConfigDict,
    *,
    seed: int,
    tokenizer: str,
    train_file: str,
    steps: int,
    cings_mode: str = "no_context",
    init_from: str = "",
) -> ml_collections.ConfigDict:
    """`base` (an SFT config) set up for one run of the experiment."""
    c = ml_collections.ConfigDict(base.to_dict())  # a copy, unlocked like `base`
    c.seed = seed
    c.num_steps = steps
    c.init_from = init_from
    c.checkpoint.every_steps = steps
    c.log_every_steps = max(steps // 6, 1)
    c.optimizer.warmup_steps = min(c.optimizer.warmup_steps, steps)
    c.data.train_files = (train_file,)
    c.data.tokenizer = tokenizer
    c.data.cings_mode = cings_mode
    c.data.eval_examples = 0
    c.data.seed = seed
    c.export.hf = False
    return c


def engine_generate(engine: Engine, max_tokens: int) -> grounding.GenerateFn:
    """Greedy chat generation on `engine` (assistant prefill where asked)."""
    params = GenerationParams(max_tokens=max_tokens, temperature=0.0)

    def generate(conversations, continue_final):
        ids = [engine.chat_prompt_ids(m, c) for m, c in zip(conversations, continue_final,
                                                            strict=True)]  # fmt: skip
        return [c.text for c in engine.generate(ids, params)]

    return generate


def make_engine(task: SFTTask, params, max_seq_len: int, max_batch: int = 32) -> Engine:
    """The engine over the task's model (LoRA factors applied as in training)."""
    c = task.llm_config
    return Engine(
        task.model.apply,
        params,
        task.tokenizer,
        lambda b, n: llm.init_cache(c, b, n),
        max_seq_len=max_seq_len,
        max_batch=max_batch,
        eos_token_ids=c.eos_token_ids,
    )


def run_seed(
    base: ml_collections.ConfigDict,
    workdir: str,
    seed: int,
    sizes: Sizes,
    settings: Sequence[str],
    tokenizer: str,
    say: Callable[[str], None] = print,
) -> dict[str, dict[str, float]]:
    """Pretrain once, then fine-tune and score each setting; scores are cached per setting."""
    seed_dir = os.path.join(workdir, f"seed{seed}")
    data = write_seed_data(os.path.join(seed_dir, "data"), seed, sizes)
    out: dict[str, dict[str, float]] = {}
    todo = [s for s in settings if not os.path.isfile(_scores_path(seed_dir, s))]
    pretrain_dir = os.path.join(seed_dir, "pretrain")
    if todo:
        cfg = run_config(base, seed=seed, tokenizer=tokenizer, train_file=data["paths"]["corpus"],
                         steps=sizes.pretrain_steps)  # fmt: skip
        say(f"seed {seed}: pretraining ({sizes.pretrain_steps} steps)")
        result = trainer.train(cfg, pretrain_dir, SFTTask(cfg))
        if "loss" in result.train_metrics:
            say(f"seed {seed}: pretraining loss {result.train_metrics['loss']:.3f}")
        else:
            say(f"seed {seed}: pretraining reused from {pretrain_dir}")
    for name in settings:
        path = _scores_path(seed_dir, name)
        if os.path.isfile(path):
            with open(path) as f:
                out[name] = json.load(f)["metrics"]
            say(f"seed {seed}: {name}: cached {path}")
            continue
        mode, fmt, rag = SETTINGS[name]
        train_file = data["paths"]["train_rag" if rag else "train"]
        cfg = run_config(
            base,
            seed=seed,
            tokenizer=tokenizer,
            train_file=train_file,
            steps=sizes.sft_steps,
            cings_mode=mode,
            init_from=pretrain_dir,
        )
        say(f"seed {seed}: {name}: fine-tuning ({sizes.sft_steps} steps, cings_mode={mode})")
        task = SFTTask(cfg)
        result = trainer.train(cfg, os.path.join(seed_dir, name), task)
        engine = make_engine(task, result.state.params, cfg.data.seq_len + sizes.max_tokens)
        generate = engine_generate(engine, sizes.max_tokens)
        metrics, rows = grounding.score(generate, data["tests"], fmt)
        metrics["train_loss"] = float(result.train_metrics.get("loss", float("nan")))
        with open(path, "w") as f:
            json.dump({"metrics": metrics, "predictions": rows}, f, indent=1)
        say(f"seed {seed}: {name}: " + json.dumps({k: round(v, 3) for k, v in metrics.items()}))
        out[name] = metrics
    return out


def _check_sizes(workdir: str, sizes: Sizes) -> None:
    """Finished runs are reused by name, so a workdir holds one experiment size: a rerun with
    other sizes is an error (before any work), not a silent mix of old and new scores."""
    path = os.path.join(workdir, "sizes.json")
    wanted = dataclasses.asdict(sizes)
    if os.path.isfile(path):
        with open(path) as f:
            have = json.load(f)
        diff = {k: (have.get(k), v) for k, v in wanted.items() if have.get(k) != v}
        if diff:
            raise ValueError(
                f"workdir {workdir!r} holds an experiment with other sizes "
                f"(field: (there, asked)) {diff}; use another workdir"
            )
        return
    with open(path, "w") as f:
        json.dump(wanted, f, indent=2)


def _scores_path(seed_dir: str, setting: str) -> str:
    return os.path.join(seed_dir, setting, "scores.json")


def table(results: dict[int, dict[str, dict[str, float]]], settings: Sequence[str]) -> str:
    """Markdown: one row per setting, mean ± std over seeds of each column, in percent."""
    header = (
        "| setting | agree EM | new EM | contradict EM | closed-book EM | contradict → memory |"
    )
    lines = [header, "|---|---|---|---|---|---|"]
    for name in settings:
        cells = []
        for col in COLUMNS:
            values = [100 * r[name][col] for r in results.values() if col in r.get(name, {})]
            if values:
                mean, std = grounding.mean_std(values)
                cells.append(f"{mean:.1f} ± {std:.1f}")
            else:
                cells.append("–")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run(
    base: ml_collections.ConfigDict,
    workdir: str,
    seeds: Sequence[int],
    sizes: Sizes,
    settings: Sequence[str] = tuple(SETTINGS),
    say: Callable[[str], None] = print,
) -> tuple[dict[int, dict[str, dict[str, float]]], str]:
    """All seeds and settings; writes `results.json` and `table.md` into `workdir`."""
    unknown = [s for s in settings if s not in SETTINGS]
    if unknown:
        raise ValueError(f"unknown settings {unknown}; known: {sorted(SETTINGS)}")
    if not seeds:
        raise ValueError("need at least one seed")
    os.makedirs(workdir, exist_ok=True)
    _check_sizes(workdir, sizes)
    tokenizer = base.data.tokenizer
    if sizes.vocab_size > 0:
        tokenizer = build_tokenizer(os.path.join(workdir, "tokenizer"), sizes.vocab_size)
    results = {}
    for seed in seeds:
        results[seed] = run_seed(base, workdir, seed, sizes, settings, tokenizer, say)
    text = table(results, settings)
    with open(os.path.join(workdir, "results.json"), "w") as f:
        json.dump({"sizes": dataclasses.asdict(sizes), "seeds": list(seeds),
                   "results": {str(k): v for k, v in results.items()}}, f, indent=2)  # fmt: skip
    with open(os.path.join(workdir, "table.md"), "w") as f:
        f.write(text + "\n")
    return results, text
