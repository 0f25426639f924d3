"""CLaMR (arXiv 2506.06144): multimodal late-interaction video retrieval.

    python launch/train.py --config=configs/clamr.py:tiny --workdir=runs/clamr

Variants:
- `tiny`: all-MiniLM-L6-v2 backbone (first `num_layers` layers) + a frame patch embedder,
  full fine-tune on CPU (the frame patch embedder at 10x the learning rate,
  `optimizer.lr_scale`); the procedural corpus (jaxmm.data.clamr_synth, noisy:
  `data.synth_noise`) is generated into `<workdir>/data` when `data.data_dir` is empty.
  Joint encoding, modality-max scoring, modality-aware loss (the full method). Ablations
  by override, e.g.
  `--config.loss.objective=contrastive`, `--config.loss.scoring=token_max`,
  `--config.model.contextualized=False`, `--config.model.pooling=mean`.
- `runlocal`: `tiny` for 10 steps (smoke test).
- `paper`: the paper's recipe (Qwen2.5-VL-3B + LoRA r=128 α=128 dropout 0.1 on
  q/k/v/o/gate/up/down + projection head, lr 1e-5 linear decay, warmup 0.1, 1 epoch,
  batch 4 x 8 devices, 64-token queries, 2048-token documents). `model.model_dir` is a local
  Qwen2.5-VL folder (config.json, tokenizer.json, safetensors): the task builds the inputs
  with its tokenizer, loads its weights into `backbone/` and turns the epoch recipe into
  `num_steps` / `warmup_steps` from the train split's size (`num_steps=0` here).
- `qwen_tiny`: the same path on CPU with a tiny Qwen2.5-VL folder (e.g.
  `python -m tests.models.qwen2_5_vl.tiny <folder>`: a random transformers model saved with
  `save_pretrained` + a small byte-level BPE tokenizer.json with Qwen's special tokens),
  LoRA r=8 on the same targets (+ head trainable), 4 frames of 56x56 px.
"""

import ml_collections

from jaxmm.config import base_config, parse_variant


def get_config(arg: str | None = None):
    variant = parse_variant(arg, ("tiny", "runlocal", "paper", "qwen_tiny"), default="tiny")
    c = base_config()
    c.task = "clamr"
    paper = variant == "paper"
    qwen = variant in ("paper", "qwen_tiny")
    c.num_steps = {"tiny": 200, "runlocal": 10, "paper": 0, "qwen_tiny": 10}[variant]
    c.batch_size = 32 if paper else 16
    c.optimizer.learning_rate = 1e-5 if paper else 1e-4
    c.optimizer.schedule = "linear"
    c.optimizer.warmup_steps = {"paper": 0, "qwen_tiny": 2}.get(variant, 10)
    c.optimizer.weight_decay = 0.01
    # The MiniLM path's frame patch embedder is the one module trained from scratch beside
    # pretrained BERT layers: it gets 10x the learning rate (its own optax param group).
    c.optimizer.lr_scale = ml_collections.ConfigDict({} if qwen else {"frames": 10.0})
    c.checkpoint.every_steps = 1000
    c.checkpoint.keep = 1
    c.log_every_steps = 20 if not variant == "runlocal" else 5
    c.progress_bar = False

    c.model.backbone = "qwen2_5_vl" if qwen else "minilm"
    # minilm: "" = all-MiniLM-L6-v2; qwen2_5_vl: a HF folder or config.json (required).
    c.model.model_dir = "Qwen/Qwen2.5-VL-3B-Instruct" if paper else ""
    c.model.num_layers = 2 if variant in ("tiny", "runlocal") else 0  # 0: all layers
    c.model.dim = 128
    c.model.patch = 16  # MiniLM's frame patch embedder (Qwen uses its config's 14 px)
    c.model.pooling = "tokens"  # tokens | mean (single-vector baseline)
    c.model.contextualized = True  # False: one pass per modality, token sets concatenated
    c.model.lora_rank = {"paper": 128, "qwen_tiny": 8}.get(variant, 0)  # 0: full fine-tune
    c.model.lora_alpha = 16.0 if variant == "qwen_tiny" else 128.0
    c.model.lora_dropout = 0.1
    # Qwen language model: activation checkpointing per layer (none | full | dots) and
    # scanned layers; the loaded weights follow (jaxmm.models.clamr.qwen_text_overrides).
    c.model.remat = "full" if paper else "none"
    c.model.scan_layers = False
    c.model.second_per_grid_t = 1.0  # Qwen: seconds per temporal patch (2 / sampled fps)
    c.model.lora_targets = (
        *("q_proj", "k_proj", "v_proj", "o_proj"),
        *("gate_proj", "up_proj", "down_proj"),
    )

    # The paper's schedule is given per epoch: with num_steps = 0 the task sets num_steps and
    # warmup_steps from the train split's size (the CPU variants set them directly).
    c.recipe = ml_collections.ConfigDict()
    c.recipe.epochs = 1 if paper else 0
    c.recipe.warmup_ratio = 0.1 if paper else 0.0

    c.loss = ml_collections.ConfigDict()
    c.loss.objective = "modality_aware"  # contrastive | hard_positive | modality_aware
    c.loss.scoring = "modality_max"  # modality_max | token_max
    c.loss.temperature = 0.02
    c.loss.normalize = True  # scores / valid query tokens in the loss (ColPali); search: sums
    c.loss.impl = "auto"  # maxsim impl: auto | reference | pallas

    c.data.data_dir = ""  # MultiVENT-layout folder; "": generate the procedural corpus
    c.data.seed = 0
    # Procedural corpus with clutter + planted wrong-modality distractors (clamr_synth noise=True:
    # the noisy-modality condition of real news videos). Off for qwen_tiny (its measured
    # plumbing run used the clean corpus).
    noisy = variant in ("tiny", "runlocal")
    c.data.synth_noise = noisy
    c.data.train_groups = 48
    c.data.test_groups = 16
    c.data.synth_frame_size = 64
    c.data.num_frames = 10 if paper else 4
    c.data.frame_size = {"paper": 224, "qwen_tiny": 56}.get(variant, 32)
    c.data.query_len = 64 if paper else 32
    c.data.num_buffer_tokens = 10
    # tiny/runlocal: large enough that no field of the noisy demo corpus is truncated
    # (tests/data/test_multivent.py checks it on the demo's corpus); qwen_tiny's byte-level
    # BPE spends more tokens per word than MiniLM's WordPiece.
    c.data.budget_ocr = 512 if paper else (24 if noisy else 8)
    c.data.budget_asr = {"paper": 512, "qwen_tiny": 24}.get(variant, 48 if noisy else 20)
    c.data.budget_description = {"paper": 512, "qwen_tiny": 20}.get(variant, 48 if noisy else 16)
    c.data.max_doc_len = 2048 if paper else 160
    c.data.eval_split = "test"
    c.data.eval_batch = 32
    c.data.eval_per_modality = False  # also score each modality's tokens alone
    return c
