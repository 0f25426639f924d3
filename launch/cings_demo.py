"""CINGS demo (arXiv 2506.15480): does training with the context in the answer turn make a model
follow its context over what it memorised? One run, several seeds, one table.

    python launch/cings_demo.py --workdir=runs/cings_demo --seeds=0,1,2
    python launch/cings_demo.py --workdir=runs/cings_demo --config.model.hidden_size=128

Per seed: pretrain a tiny Llama on a procedural fact world's corpus, fine-tune it with standard
instruction tuning (`standard`, `standard_rag`) and with CINGS (`cings`) on the same records for
the same steps, and score held-out questions whose context agrees with / adds to / contradicts
pretraining, plus closed-book ones (greedy decoding, exact match). The logic is
`jaxmm.tasks.cings_experiment`; `--config` (default `configs/sft.py:cings_tiny`) gives the model
and optimiser. Rerunning in the same workdir reuses every finished run and score.
"""

from __future__ import annotations

import os
import sys
import time

import jax
from absl import flags

from jaxmm import cli
from jaxmm.tasks import cings_experiment as cx

_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_CONFIG = os.path.join(_REPO_ROOT, "configs", "sft.py:cings_tiny")
_D = cx.Sizes()

_WORKDIR = flags.DEFINE_string("workdir", "runs/cings_demo", "Output folder (reruns resume).")
_SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2"], "World / training seeds.")
_SETTINGS = flags.DEFINE_list("settings", list(cx.SETTINGS), "Fine-tuning settings to compare.")
_PRETRAIN = flags.DEFINE_integer("pretrain_steps", _D.pretrain_steps, "Pretraining steps.")
_SFT = flags.DEFINE_integer("sft_steps", _D.sft_steps, "Fine-tuning steps per setting.")
_ENTITIES = flags.DEFINE_integer("entities", _D.n_entities, "Entities in each fact world.")
_TRAIN = flags.DEFINE_integer("train_records", _D.n_train, "Fine-tuning records.")
_TEST = flags.DEFINE_integer("test_per_kind", _D.n_test_per_kind, "Test questions per kind.")
_DISTRACTORS = flags.DEFINE_integer(
    "distractors", _D.n_distractors, "Sentences about other entities in each context."
)
_VOCAB = flags.DEFINE_integer(
    "vocab", _D.vocab_size, "BPE pieces of the fact-world tokenizer; 0 = the config's tokenizer."
)


def main(config, argv) -> None:
    del argv
    t0 = time.time()
    # Every run of every seed compiles the same shapes: compile them once.
    jax.config.update("jax_compilation_cache_dir", os.path.join(_WORKDIR.value, "xla_cache"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    sizes = cx.Sizes(
        n_entities=_ENTITIES.value,
        n_train=_TRAIN.value,
        n_test_per_kind=_TEST.value,
        n_distractors=_DISTRACTORS.value,
        pretrain_steps=_PRETRAIN.value,
        sft_steps=_SFT.value,
        vocab_size=_VOCAB.value,
    )
    seeds = [int(s) for s in _SEEDS.value]
    _, table = cx.run(config, _WORKDIR.value, seeds, sizes, _SETTINGS.value)
    print(table)
    print(f"seeds {seeds}; {sizes}; wall time {time.time() - t0:.0f}s; "
          f"written to {os.path.join(_WORKDIR.value, 'table.md')}")  # fmt: skip


if __name__ == "__main__":
    argv = list(sys.argv)
    if not any(a == "--config" or a.startswith("--config=") for a in argv[1:]):
        argv.insert(1, f"--config={DEFAULT_CONFIG}")
    cli.run(main, argv, errors=(ValueError, FileNotFoundError))
