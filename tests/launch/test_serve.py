"""launch/serve.py as a real process: prints its URL, answers OpenAI requests, exits cleanly."""

import os
import subprocess
import sys

import pytest

from jaxmm.generate.openai_backend import OpenAIBackend
from jaxmm.generate.params import GenerationParams
from tests.generate.fixtures import build_jax_llama, build_tokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _launch(*args):
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": ""}
    return subprocess.Popen(
        [sys.executable, os.path.join(ROOT, "launch", "serve.py"), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
    )


def test_serve_answers_chat_and_completion(tmp_path):
    model_dir = build_jax_llama(tmp_path / "m", build_tokenizer(tmp_path / "tok"))
    proc = _launch(
        f"--model_dir={model_dir}",
        "--port=0",
        "--max_seq_len=64",
        "--max_batch=2",
        "--model_name=tiny",
    )
    try:
        line = proc.stdout.readline()  # blocks until the model is loaded
        assert line.startswith("serving 'tiny' at http://127.0.0.1:"), proc.stderr.read()
        url = line.split(" at ")[1].strip()
        backend = OpenAIBackend(url, "tiny", max_retries=0, timeout_s=120)
        assert backend.models() == ["tiny"]
        params = GenerationParams(max_tokens=6)
        (text,) = backend.complete(["The quick brown fox"], params)
        streamed = "".join(backend.stream_complete("The quick brown fox", params))
        assert streamed == text and text
        (reply,) = backend.chat([[{"role": "user", "content": "Hi"}]], params)
        assert isinstance(reply, str)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert proc.returncode == 0


@pytest.mark.parametrize(
    "args,message",
    [
        (["--port=0"], "--model_dir"),
        (["--model_dir=/nonexistent/folder"], "has no config.json"),
    ],
)
def test_serve_rejects_bad_flags(args, message):
    proc = _launch(*args)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode != 0 and message in err
