"""Load test of the OpenAI-compatible server: N concurrent streaming clients (the official
`openai` client), a fixed number of requests; prints p50/p99 latency, time to first token,
requests/s and completion tokens/s.

    python benchmarks/serve_load.py              # SmolLM2-135M-Instruct (GGUF), in-process
    python benchmarks/serve_load.py --model_dir /models/Llama-3.2-1B-Instruct --dtype bfloat16
    python benchmarks/serve_load.py --url http://127.0.0.1:8000/v1 --model llama-1b  # a server

Every request streams with `stream_options={"include_usage": true}`; a request counts as done
only if its stream ends with the usage chunk. A warm-up pass (untimed, `--warmup` requests)
compiles the prefill/decode shapes first. The client is `jaxmm.generate.load_client`, which
tests/generate/test_server_load.py also runs against the tiny test model.
"""

from __future__ import annotations

import argparse
import asyncio

from jaxmm.generate.load_client import run_load, summary

QUESTIONS = [
    "What is the capital of France?",
    "Name three primary colours.",
    "Write one sentence about the sea.",
    "What is 12 times 12?",
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", help="an already running server (else one is started here)")
    ap.add_argument("--model", help="model name at --url (default: the first in /v1/models)")
    ap.add_argument("--model_dir", help="HF folder or .gguf (default: SmolLM2-135M-Instruct)")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    ap.add_argument("--max_batch", type=int, default=32)
    ap.add_argument("--max_seq_len", type=int, default=512)
    ap.add_argument("--steps_per_call", type=int, default=8)
    ap.add_argument("--requests", type=int, default=128)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--max_tokens", type=int, default=64)
    ap.add_argument("--warmup", type=int, default=None, help="untimed requests (default: N)")
    ap.add_argument("--completions", action="store_true", help="/v1/completions, not chat")
    args = ap.parse_args()

    server = None
    url, model = args.url, args.model
    if url is None:
        from jaxmm.generate.engine import Engine
        from jaxmm.generate.server import OpenAIServer
        from jaxmm.models.gguf import default_instruct_model

        engine = Engine.from_pretrained(
            args.model_dir or default_instruct_model(),
            max_seq_len=args.max_seq_len,
            max_batch=args.max_batch,
            dtype=args.dtype,
            steps_per_call=args.steps_per_call,
        )
        server = OpenAIServer(engine, port=0).start()
        url, model = server.url, server.model_name
    elif model is None:
        import openai

        model = openai.OpenAI(base_url=url, api_key="unused").models.list().data[0].id
    try:
        chat = not args.completions
        warmup = args.concurrency if args.warmup is None else args.warmup
        if warmup:
            asyncio.run(
                run_load(url, model, QUESTIONS, warmup, args.concurrency, args.max_tokens, chat)
            )
        results, wall = asyncio.run(
            run_load(url, model, QUESTIONS, args.requests, args.concurrency, args.max_tokens, chat)
        )
        print(f"server {url} model {model!r} max_tokens {args.max_tokens}")
        print(summary(results, wall, args.concurrency))
        errors = {r.error for r in results if r.error}
        if errors:
            print("errors:", *sorted(errors)[:5], sep="\n  ")
    finally:
        if server is not None:
            server.shutdown()


if __name__ == "__main__":
    main()
