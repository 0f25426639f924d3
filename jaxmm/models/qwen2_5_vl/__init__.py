"""Qwen2.5-VL in jaxmm: config, M-RoPE positions, vision tower, model, processor, HF loading.

The language model is `jaxmm.models.llm.LLM` with an M-RoPE position path; this package adds
what is specific to Qwen2.5-VL around it.
"""
