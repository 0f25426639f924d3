"""Supervised fine-tuning (chat SFT, CINGS, OpenThoughts) on the shared trainer.

    python launch/train.py --config=configs/sft.py:tiny --workdir=runs/sft_tiny
    python launch/train.py --config=configs/sft.py:cings_tiny --workdir=runs/cings_tiny
    python launch/train.py --config=configs/sft.py:openthoughts_tiny --workdir=runs/ot_tiny
    python launch/train.py --config=configs/sft.py:smollm2_lora --workdir=runs/smollm2_lora
    python launch/train.py --config=configs/sft.py:openthinker --workdir=runs/openthinker \\
        --config.model.hf_dir=/ckpt/Qwen2.5-7B-Instruct --config.data.train_files='("ot.jsonl",)'

Variants:
  tiny               tiny random Llama (SmolLM2 tokenizer + chat template) on generated chat
                     records; CPU, ~1 min.
  cings_tiny         the same model on generated CINGS records, `data.cings_mode=context`.
  openthoughts_tiny  the same model on generated sharegpt rows with <think> traces (the
                     curation pipeline's own row format).
  smollm2_lora       the real SmolLM2-135M-Instruct with LoRA (rank 8, attention + MLP).
  openthinker        OpenThinker-7B recipe (arXiv 2506.04178): full fine-tune, lr 1e-5, 3 epochs,
                     global batch 96, cosine, warmup 0.1, 16K packed sequences, remat, chunked
                     cross-entropy (`loss.chunk_tokens`); needs
                     `model.hf_dir` (Qwen2.5-7B-Instruct) and `data.train_files`.
"""

import ml_collections

from jaxmm.config import base_config, parse_variant

VARIANTS = ("tiny", "cings_tiny", "openthoughts_tiny", "smollm2_lora", "openthinker")


def get_config(arg: str | None = None):
    variant = parse_variant(arg, VARIANTS, default="tiny")
    c = base_config()
    c.task = "sft"
    c.num_steps = 60
    c.batch_size = 8
    c.warmup_fraction = 0.0  # > 0: optimizer.warmup_steps = fraction * num_steps
    c.optimizer.learning_rate = 3e-3
    c.optimizer.warmup_steps = 5
    c.optimizer.weight_decay = 0.0
    c.checkpoint.every_steps = 20
    c.log_every_steps = 10

    d = c.data
    d.train_files = ()  # .jsonl / .parquet; empty: generated records of kind `generated`
    d.generated = "chat"  # chat | cings | openthoughts
    d.generated_size = 384
    d.seed = 0
    d.tokenizer = "smollm2"  # HF folder; "" = model.hf_dir's; smollm2 = the GGUF's tokenizer
    d.chat_template = ""  # Jinja override of the tokenizer's template
    d.seq_len = 128
    d.packing = True
    d.cings_mode = "no_context"  # no_context | context | no_mask
    d.on_bad_record = "error"  # error | skip (counted, reported as eval/data/skipped_*)
    d.on_too_long = "truncate"  # error | truncate | skip
    d.num_epochs = 0  # > 0: num_steps = ceil(epochs * packed rows / batch_size)
    d.eval_examples = 32  # held out from the end of the records for eval/loss

    m = c.model
    m.hf_dir = ""  # "" = random Llama of the sizes below; smollm2; or a HF folder
    m.hidden_size = 64
    m.intermediate_size = 128
    m.num_layers = 2
    m.num_heads = 4
    m.num_kv_heads = 2
    m.head_dim = 16
    m.remat = "none"  # none | full | dots
    m.scan_layers = False
    m.attention_impl = "auto"
    m.lora_rank = 0  # 0 = full fine-tune
    m.lora_alpha = 16.0
    m.lora_dropout = 0.0
    m.lora_targets = ("q_proj", "k_proj", "v_proj", "o_proj")

    c.loss = ml_collections.ConfigDict()
    # > 0: cross-entropy over chunks of this many positions (logits [B, chunk, vocab] at a
    # time, recomputed in the backward) instead of the full [B, T, vocab]; 0 = off.
    c.loss.chunk_tokens = 0

    c.export = ml_collections.ConfigDict()
    c.export.hf = True  # <workdir>/export/hf at the end (LoRA merged)
    c.export.peft = False  # LoRA only: also <workdir>/export/peft (jaxmm.models.peft)

    if variant == "cings_tiny":
        d.generated, d.cings_mode = "cings", "context"
    elif variant == "openthoughts_tiny":
        d.generated, d.seq_len = "openthoughts", 256
    elif variant == "smollm2_lora":
        m.hf_dir = "smollm2"
        d.tokenizer = ""
        d.generated, d.cings_mode, d.seq_len = "cings", "context", 256
        m.lora_rank, m.lora_alpha = 8, 16.0
        m.lora_targets = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj")
        c.optimizer.learning_rate = 1e-3
        c.num_steps, c.checkpoint.every_steps = 30, 10
        c.export.peft = True
    elif variant == "openthinker":
        m.hf_dir = "<set --config.model.hf_dir to a local Qwen2.5-7B-Instruct folder>"
        d.tokenizer = ""
        d.generated = "openthoughts"  # replaced by data.train_files in a real run
        d.seq_len = 16384
        d.num_epochs = 3
        d.eval_examples = 0
        d.on_too_long = "skip"
        m.remat = "full"
        c.loss.chunk_tokens = 2048  # 16K x 152K-vocab fp32 logits would be 10 GB per row
        c.batch_size = 96
        c.optimizer.learning_rate = 1e-5
        c.optimizer.schedule = "cosine"
        c.warmup_fraction = 0.1
        c.optimizer.clip_norm = 1.0
        c.precision.compute_dtype = "bfloat16"
        c.mesh.data, c.mesh.fsdp = 1, -1
        c.checkpoint.every_steps = 500
    return c
