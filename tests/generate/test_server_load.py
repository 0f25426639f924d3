"""Bounded load test: 32 concurrent streaming clients (the official `openai` client) send a fixed
number of requests to the server over localhost. None may be lost, and every one must give the
engine's own greedy text and token count. p50/p99 latency are printed (`-s`), never asserted:
timings on a shared CPU say nothing.
"""

import asyncio

import pytest

from jaxmm.generate.engine import Engine
from jaxmm.generate.load_client import run_load, summary
from jaxmm.generate.params import GenerationParams
from jaxmm.generate.server import OpenAIServer

PROMPTS = ["The quick brown fox", "A language model", "café 東京", "Streaming servers send"]
CLIENTS, REQUESTS, MAX_TOKENS = 32, 64, 8


@pytest.fixture(scope="module")
def served(llama_dir):
    engine = Engine.from_pretrained(llama_dir, max_seq_len=64, max_batch=16, model_name="tiny")
    expected = engine.generate(PROMPTS, GenerationParams(max_tokens=MAX_TOKENS))
    server = OpenAIServer(engine, host="127.0.0.1", port=0).start()
    yield server, expected
    server.shutdown()


def test_32_concurrent_streaming_clients_lose_nothing(served):
    server, expected = served
    results, wall = asyncio.run(
        run_load(server.url, "tiny", PROMPTS, REQUESTS, CLIENTS, MAX_TOKENS, timeout_s=120)
    )
    print("\nserve load (tiny model, CPU):", summary(results, wall, CLIENTS))
    assert [r.error for r in results] == [None] * REQUESTS
    for i, r in enumerate(results):
        want = expected[i % len(PROMPTS)]
        assert r.text == want.text
        assert r.finish_reason == want.finish_reason
        assert r.usage == {
            "prompt_tokens": want.prompt_tokens,
            "completion_tokens": len(want.token_ids),
        }
    assert not server.engine.has_work()  # nothing left running or queued
