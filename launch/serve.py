"""Serve a Hugging Face-format model folder as an OpenAI-compatible HTTP API.

    python launch/serve.py --model_dir /path/to/Llama-3.2-1B-Instruct --port 8000 \
        --max_batch 8 --max_seq_len 4096 --dtype bfloat16

Endpoints: /v1/chat/completions, /v1/completions (both with "stream": true), /v1/models,
/health (FastAPI + uvicorn). Point a pipeline at it with
`OpenAIBackend("http://127.0.0.1:8000/v1", model="<--model_name>")`. See docs/generation.md.
"""

from __future__ import annotations

import os
import signal
import sys

import jax
from absl import app, flags, logging

from jaxmm import cli
from jaxmm.generate import model_folder
from jaxmm.generate.engine import Engine
from jaxmm.generate.server import OpenAIServer
from jaxmm.sharding import make_mesh

_MODEL_DIR = flags.DEFINE_string(
    "model_dir", None, "HF folder (config.json, safetensors, tokenizer) or a .gguf file."
)
_HOST = flags.DEFINE_string("host", "127.0.0.1", "Interface to bind (0.0.0.0 exposes it).")
_PORT = flags.DEFINE_integer("port", 8000, "Port (0 picks a free one; the URL is printed).")
_MAX_BATCH = flags.DEFINE_integer("max_batch", 8, "Requests decoded together (cache slots).")
_MAX_SEQ_LEN = flags.DEFINE_integer(
    "max_seq_len",
    0,
    "Prompt + completion tokens per request; 0 = min(max_position_embeddings, 8192).",
)
_DTYPE = flags.DEFINE_enum(
    "dtype", "float32", ["float32", "bfloat16", "float16"], "Weights, compute and KV cache."
)
_STEPS = flags.DEFINE_integer("steps_per_call", 8, "Decode steps per jitted call.")
_TP = flags.DEFINE_integer(
    "tensor_parallel", 1, "Shard weights and KV cache over this many devices (heads axis)."
)
_MODEL_NAME = flags.DEFINE_string("model_name", None, "Name in /v1/models (default: folder).")
flags.mark_flag_as_required("model_dir")


def main(argv: list[str]) -> None:
    del argv
    gguf_file = _MODEL_DIR.value.endswith(".gguf")
    if gguf_file and not os.path.isfile(_MODEL_DIR.value):
        raise app.UsageError(f"--model_dir {_MODEL_DIR.value!r}: no such .gguf file")
    if not gguf_file and not os.path.isfile(os.path.join(_MODEL_DIR.value, "config.json")):
        raise app.UsageError(f"--model_dir {_MODEL_DIR.value!r} has no config.json")
    if not gguf_file:
        try:  # before JAX starts and the weights load
            model_folder.require_tokenizer_files(_MODEL_DIR.value)
        except FileNotFoundError as e:
            raise app.UsageError(f"--model_dir: {e}") from None
    if _MAX_BATCH.value < 1:
        raise app.UsageError(f"--max_batch must be >= 1, got {_MAX_BATCH.value}")
    mesh = None
    if _TP.value > 1:
        if _TP.value > jax.device_count():
            raise app.UsageError(
                f"--tensor_parallel {_TP.value} exceeds the {jax.device_count()} devices"
            )
        mesh = make_mesh({"data": 1, "fsdp": 1, "tensor": _TP.value}, jax.devices()[: _TP.value])
    logging.info("loading %s", _MODEL_DIR.value)
    engine = Engine.from_pretrained(
        _MODEL_DIR.value,
        max_seq_len=_MAX_SEQ_LEN.value or None,
        max_batch=_MAX_BATCH.value,
        dtype=_DTYPE.value,
        steps_per_call=_STEPS.value,
        model_name=_MODEL_NAME.value,
        mesh=mesh,
    )
    server = OpenAIServer(engine, host=_HOST.value, port=_PORT.value)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"serving {server.model_name!r} at {server.url}", flush=True)
    try:
        server.serve_forever()
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        server.shutdown()


if __name__ == "__main__":
    cli.run(main, config=False)
