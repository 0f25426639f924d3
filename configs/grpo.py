"""GRPO (group relative policy optimisation) on the shared trainer.

    python launch/train.py --config=configs/grpo.py:even --workdir=runs/grpo_even

Variants: `even` (a tiny random Llama learns to answer "give a number" with an even digit,
reward `regex:^\\s*[02468]`; the CPU test of the task), `prompts` (your own JSONL of prompt
records with `--config.data.prompts_file=... --config.data.tokenizer=...`).
"""

from jaxmm.config import base_config, parse_variant


def get_config(arg: str | None = None):
    variant = parse_variant(arg, ("even", "prompts"), default="even")
    c = base_config()
    c.task = "grpo"
    c.num_steps = 30
    c.batch_size = 4  # prompts per step; the model sees batch_size * rl.group_size samples
    c.optimizer.learning_rate = 3e-3
    c.optimizer.schedule = "constant"
    c.optimizer.clip_norm = 1.0
    c.checkpoint.every_steps = 10
    c.checkpoint.async_save = False
    c.log_every_steps = 5

    c.model.hidden_size = 32
    c.model.intermediate_size = 64
    c.model.num_layers = 1
    c.model.num_heads = 2
    c.model.num_kv_heads = 1
    c.model.head_dim = 16
    c.model.hf_dir = ""

    c.data.generated = "even" if variant == "even" else ""
    c.data.generated_size = 64
    c.data.prompts_file = ""
    c.data.tokenizer = ""
    c.data.max_prompt_tokens = 8 if variant == "even" else 256
    c.data.seed = 0

    c.rl = base_config().model  # an empty ConfigDict
    c.rl.group_size = 8  # G samples per prompt
    c.rl.max_completion_tokens = 2 if variant == "even" else 256
    c.rl.temperature = 1.0
    c.rl.top_p = 1.0
    c.rl.rewards = (r"regex:^\s*[02468]",) if variant == "even" else ("exact",)
    c.rl.reward_weights = ()  # default 1 each
    c.rl.scale = "group"  # group | batch | none (trl's scale_rewards)
    c.rl.beta = 0.04  # KL to the reference (k3 estimator)
    c.rl.epsilon_low = 0.2
    c.rl.epsilon_high = 0.2
    c.rl.norm = "grpo"  # grpo | bnpo | dr_grpo
    c.rl.engine_steps_per_call = 8
    return c
