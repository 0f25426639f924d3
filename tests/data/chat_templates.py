"""Published chat templates (Jinja source as in each model's tokenizer_config.json) and small
real byte-level BPE tokenizers carrying each family's special tokens, for the SFT mask tests.

No checkpoint can be downloaded here, so the Llama-3 and Qwen2 tokenizers are trained on a tiny
corpus with `tokenizers`; what the mask depends on (the template, the special tokens and the
character offsets) is the real thing.
"""

from __future__ import annotations

# meta-llama/Meta-Llama-3-8B-Instruct
LLAMA3 = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
    "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | "
    "trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}"
    "{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
)
# Qwen/Qwen2-7B-Instruct (ChatML with a default system prompt)
QWEN2 = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
# ChatML with {% generation %} markers (as in templates written for assistant masks).
CHATML_GENERATION = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{% if message['role'] == 'assistant' %}{% generation %}"
    "{{ message['content'] + '<|im_end|>' }}{% endgeneration %}{{ '\\n' }}"
    "{% else %}{{ message['content'] + '<|im_end|>\\n' }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

FAMILIES = {
    "llama3": {
        "template": LLAMA3,
        "special": ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>",
                    "<|end_header_id|>", "<|eot_id|>"],
        "kw": {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>",
               "pad_token": "<|end_of_text|>"},
        "eot": "<|eot_id|>",
    },
    "qwen2": {
        "template": QWEN2,
        "special": ["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        "kw": {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"},
        "eot": "<|im_end|>",
    },
    "chatml_generation": {
        "template": CHATML_GENERATION,
        "special": ["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        "kw": {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"},
        "eot": "<|im_end|>",
    },
}  # fmt: skip

CORPUS = [
    "You are a helpful assistant. What is the capital of France? The capital is Paris.",
    "Solve for x: 3*x + 4 = 10. <think> 3*x = 6, x = 2 </think> x = 2",
    "## Context\nPassages about rivers and cities.\n## Answer\nThe answer is here.",
    "Jax and Flax: café, naïve, 東京 — unicode is fine.",
] * 10


def _corpus() -> list[str]:
    """The sentences above plus the generated SFT records' text (so those tokenise compactly)."""
    from jaxmm.data import sft_synthetic

    texts = list(CORPUS)
    for kind in ("chat", "cings"):
        for r in sft_synthetic.generate(kind, 200, seed=99):
            texts += [m["content"] for m in r["messages"]] + list(r.get("context", []))
    return texts


def build(family: str):
    """A PreTrainedTokenizerFast with the family's special tokens and chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    spec = FAMILIES[family]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=1000,
        special_tokens=spec["special"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(_corpus(), trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, **spec["kw"])
    fast.chat_template = spec["template"]
    return fast
