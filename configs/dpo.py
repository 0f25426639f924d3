"""DPO (direct preference optimisation) on the shared trainer.

    python launch/train.py --config=configs/dpo.py:tiny --workdir=runs/dpo_tiny
    python launch/train.py --config=configs/dpo.py:tiny --workdir=runs/dpo \\
        --config.data.train_files='("pairs.jsonl",)' --config.model.hf_dir=smollm2

Variants: `tiny` (a tiny random Llama with the SmolLM2 tokenizer and chat template learns to
prefer correct sums over off-by-k ones; generated pairs, CPU). Model, LoRA and export keys are
the SFT task's (configs/sft.py); `dpo.*` holds the objective.
"""

import os

from jaxmm.config import base_config, load_config_file, parse_variant


def get_config(arg: str | None = None):
    parse_variant(arg, ("tiny",), default="tiny")
    c = load_config_file(os.path.join(os.path.dirname(__file__), "sft.py") + ":tiny")
    c.unlock()
    c.task = "dpo"
    c.num_steps = 40
    c.optimizer.learning_rate = 1e-3
    c.optimizer.warmup_steps = 0
    c.data.generated = "arith"
    c.data.generated_size = 256
    c.data.seq_len = 64
    c.data.train_files = ()
    c.dpo = base_config().model  # an empty ConfigDict
    c.dpo.beta = 0.1
    c.dpo.loss_type = "sigmoid"  # sigmoid | ipo | hinge
    c.dpo.label_smoothing = 0.0  # cDPO
    return c
