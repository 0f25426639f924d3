"""Session fixtures: a real tokenizer and a tiny random Llama folder (see fixtures.py)."""

import pytest

from tests.generate.fixtures import build_jax_llama, build_tokenizer


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory):
    return build_tokenizer(tmp_path_factory.mktemp("tok"))


@pytest.fixture(scope="session")
def hf_tokenizer(tokenizer_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tokenizer_dir)


@pytest.fixture(scope="session")
def llama_dir(tmp_path_factory, tokenizer_dir):
    return build_jax_llama(tmp_path_factory.mktemp("llama"), tokenizer_dir)


@pytest.fixture(scope="session")
def tiny_vlm(hf_tokenizer):
    from tests.generate.fixtures import build_tiny_vlm

    return build_tiny_vlm(hf_tokenizer)
