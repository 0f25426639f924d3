"""Test data built on the fly: a real byte-level BPE tokenizer with a chat template, and a tiny
random Llama saved as a Hugging Face folder (config.json + safetensors + tokenizer files)."""

import os
import shutil

CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
SPECIAL = ["<s>", "</s>", "<pad>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]
BOS, EOS, PAD = 0, 1, 2  # ids of the first three special tokens
CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Jax and Flax make research code fast; café, naïve, 東京 and 🦊 are fine too.",
    "A language model predicts the next token given the previous ones.",
    "Streaming servers send text deltas as soon as they are final.",
] * 20


def build_tokenizer(out_dir) -> str:
    """Train a ~320-token byte-level BPE and save it as a PreTrainedTokenizerFast."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320,
        special_tokens=SPECIAL,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(CORPUS, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>"
    )
    assert fast.convert_tokens_to_ids(SPECIAL[:3]) == [BOS, EOS, PAD]
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(out_dir)
    return os.fspath(out_dir)


def build_jax_llama(out_dir, tokenizer_dir, max_positions: int = 128) -> str:
    """A tiny random jaxmm Llama written with `save_hf` (no torch needed) + the tokenizer."""
    import flax.linen as nn
    import jax
    import numpy as np
    from transformers import AutoTokenizer

    from jaxmm.models.hf import abstract_params, save_hf
    from jaxmm.models.llm import LLMConfig

    vocab = len(AutoTokenizer.from_pretrained(tokenizer_dir))
    config = LLMConfig(
        vocab_size=vocab,
        hidden_size=32,
        intermediate_size=64,
        num_layers=2,
        num_heads=4,
        num_kv_heads=2,
        head_dim=8,
        max_position_embeddings=max_positions,
        bos_token_id=BOS,
        eos_token_ids=(EOS,),
        pad_token_id=PAD,
    )
    # Random weights filled on the host from the abstract param tree: no compile needed.
    rng = np.random.default_rng(0)
    shapes = nn.meta.unbox(abstract_params(config))
    params = jax.tree_util.tree_map_with_path(
        lambda path, x: (
            np.ones(x.shape, np.float32)
            if "norm" in jax.tree_util.keystr(path)
            else 0.1 * rng.standard_normal(x.shape).astype(np.float32)  # peaked logits
        ),
        shapes,
    )
    save_hf(params, config, out_dir)
    for name in os.listdir(tokenizer_dir):
        shutil.copy(os.path.join(tokenizer_dir, name), out_dir)
    return os.fspath(out_dir)


IMG = 3  # "<|system|>": the tiny VLM's image placeholder (its tests send no system turns)
TPI = 4  # placeholders per image: 16-px images, 8-px patches


def build_tiny_vlm(tokenizer, max_seq_len: int = 64):
    """A tiny random `VLM` (2-layer LM, 1-layer vision tower) and an engine over the same
    weights with an image encoder: (model, params, engine)."""
    import flax.linen as nn
    import jax
    import jax.numpy as jnp
    import numpy as np

    from jaxmm.generate.engine import Engine
    from jaxmm.generate.vision import ImageEncoder, llm_embed_fn, tower_encode_fn
    from jaxmm.models import llm
    from jaxmm.models.vision import VLM, VisionConfig

    vcfg = VisionConfig(
        image_size=16, patch_size=8, hidden_size=16, intermediate_size=32, num_layers=1, num_heads=2
    )
    assert vcfg.num_patches == TPI
    cfg = llm.LLMConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_layers=2,
        num_heads=4,
        num_kv_heads=2,
        head_dim=8,
        max_position_embeddings=max_seq_len,
    )
    model = VLM(cfg, vcfg, IMG)
    tokens = jnp.zeros((1, 2 * TPI), jnp.int32)
    images = jnp.zeros((1, 2, 16, 16, 3))
    shapes = nn.meta.unbox(
        jax.eval_shape(lambda: model.init(jax.random.key(0), tokens, images=images))
    )
    # Random weights filled on the host (no compile): std 0.1 gives peaked logits, so greedy
    # ties cannot blur comparisons; the projector makes image features larger than token
    # embeddings, so images steer the answer. Norm scales 1, biases 0.
    rng = np.random.default_rng(0)

    def fill(path, x):
        name = jax.tree_util.keystr(path)
        if "norm" in name:
            return (
                np.ones(x.shape, np.float32) if "scale" in name else np.zeros(x.shape, np.float32)
            )
        std = 0.3 if "projector" in name else 0.1
        return std * rng.standard_normal(x.shape).astype(np.float32)

    params = jax.tree.map(jnp.asarray, jax.tree_util.tree_map_with_path(fill, shapes["params"]))
    encoder = ImageEncoder(
        encode_fn=tower_encode_fn(vcfg, cfg.hidden_size),
        params={"vision": params["vision"], "projector": params["projector"]},
        embed_fn=llm_embed_fn(cfg),
        image_token_id=IMG,
        tokens_per_image=TPI,
        image_size=vcfg.image_size,
    )
    engine = Engine(
        llm.LLM(cfg).apply,
        params["lm"],
        tokenizer,
        lambda b, n: llm.init_cache(cfg, b, n),
        max_seq_len=max_seq_len,
        max_batch=4,
        steps_per_call=4,
        prefill_chunk=16,
        image_encoder=encoder,
        model_name="tiny-vlm",
    )
    return model, params, engine
