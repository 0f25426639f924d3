"""Model-folder checks run before the weights load: a missing tokenizer, and a tokenizer larger
than the model's embedding, are errors that name the folder (issue 14, item 8).

Ordering is proven by folders whose weights would fail too (a corrupt safetensors file, or a
config whose vocab_size disagrees with the checkpoint): the error seen must be the tokenizer's.
"""

import json
import os
import shutil

import pytest

from jaxmm.generate.engine import Engine
from jaxmm.generate.model_folder import require_tokenizer_files


def _copy_without_tokenizer(src, dst):
    os.makedirs(dst)
    shutil.copy(os.path.join(src, "config.json"), dst)
    return os.fspath(dst)


def test_folder_without_tokenizer_fails_before_the_weights(llama_dir, tmp_path):
    folder = _copy_without_tokenizer(llama_dir, tmp_path / "no_tok")
    with open(os.path.join(folder, "model.safetensors"), "wb") as f:
        f.write(b"\x00corrupt, would fail to load")
    with pytest.raises(FileNotFoundError) as info:
        Engine.from_pretrained(folder, max_seq_len=32, max_batch=1)
    msg = str(info.value)
    assert folder in msg and "no tokenizer files" in msg and "tokenizer.json" in msg
    assert ".gguf" in msg  # says the other way to get one


def test_folder_with_only_a_vocab_file_passes_the_check(tmp_path):
    (tmp_path / "vocab.json").write_text("{}")
    require_tokenizer_files(tmp_path)  # no error
    with pytest.raises(FileNotFoundError, match="no tokenizer files"):
        require_tokenizer_files(tmp_path / "missing")


def test_tokenizer_larger_than_the_embedding_fails_before_the_weights(llama_dir, tmp_path):
    folder = tmp_path / "small_vocab"
    shutil.copytree(llama_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    config["vocab_size"] = 100  # the checkpoint's embedding has more rows: loading would fail
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"tokenizer has \d+ tokens but .* has 100 rows"):
        Engine.from_pretrained(folder, max_seq_len=32, max_batch=1)
