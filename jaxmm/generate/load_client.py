"""A load client for OpenAI-compatible servers: many concurrent streaming clients (the official
`openai` client, `stream_options={"include_usage": true}`) send a fixed number of requests;
`summary` reports p50/p99 latency, time to first token, requests/s and tokens/s.

Used by `benchmarks/serve_load.py` (a real model) and tests/generate/test_server_load.py (the
tiny test model). A request counts as done only if its stream ends with the usage chunk, so a
lost or truncated stream is a failure, never a fast request.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time

import numpy as np


@dataclasses.dataclass
class Result:
    """One request: its wall time, time to first text, text and usage (None if it failed)."""

    latency_s: float
    ttft_s: float | None
    text: str
    finish_reason: str | None
    usage: dict[str, int] | None
    error: str | None = None


async def _one(client, model: str, prompt: str, chat: bool, max_tokens: int) -> Result:
    t0 = time.perf_counter()
    ttft = None
    text, finish, usage = [], None, None
    common = dict(
        model=model,
        max_tokens=max_tokens,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    try:
        if chat:
            messages = [{"role": "user", "content": prompt}]
            stream = await client.chat.completions.create(messages=messages, **common)
        else:
            stream = await client.completions.create(prompt=prompt, **common)
        async for chunk in stream:
            if chunk.usage is not None:
                usage = chunk.usage.model_dump(include={"prompt_tokens", "completion_tokens"})
            for choice in chunk.choices:
                delta = choice.delta.content if chat else choice.text
                if delta:
                    ttft = ttft if ttft is not None else time.perf_counter() - t0
                    text.append(delta)
                finish = choice.finish_reason or finish
    except Exception as e:  # noqa: BLE001 - a lost request is a result, not a crash
        return Result(time.perf_counter() - t0, ttft, "".join(text), finish, None, repr(e))
    error = None if usage is not None else "stream ended without the usage chunk"
    return Result(time.perf_counter() - t0, ttft, "".join(text), finish, usage, error)


async def run_load(
    base_url: str,
    model: str,
    prompts: list[str],
    n_requests: int,
    concurrency: int,
    max_tokens: int,
    chat: bool = False,
    timeout_s: float = 600.0,
) -> tuple[list[Result], float]:
    """Send `n_requests` (prompt i % len(prompts)) from `concurrency` streaming clients at once;
    returns the results in request order and the wall time."""
    try:
        import openai  # the official client: the `test` extra, not a core dependency
    except ImportError as e:
        raise ImportError("the load client needs `pip install openai` (jaxmm[test])") from e

    client = openai.AsyncOpenAI(
        base_url=base_url, api_key="unused", max_retries=0, timeout=timeout_s
    )
    results: list[Result | None] = [None] * n_requests
    next_index = iter(range(n_requests))

    async def worker() -> None:
        for i in next_index:  # shared iterator: each request is sent once
            results[i] = await _one(client, model, prompts[i % len(prompts)], chat, max_tokens)

    t0 = time.perf_counter()
    async with client:
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return results, time.perf_counter() - t0


def summary(results: list[Result], wall_s: float, concurrency: int) -> str:
    """p50/p99 latency, p50 time to first token, requests/s and completion tokens/s."""
    ok = [r for r in results if r.error is None]
    lat = np.array([r.latency_s for r in ok]) if ok else np.zeros(1)
    ttft = np.array([r.ttft_s for r in ok if r.ttft_s is not None] or [0.0])
    tokens = sum(r.usage["completion_tokens"] for r in ok)
    return (
        f"{len(results)} requests, {concurrency} concurrent streaming clients, "
        f"{len(results) - len(ok)} failed: latency p50 {np.percentile(lat, 50):.3f} s, "
        f"p99 {np.percentile(lat, 99):.3f} s; first token p50 {np.percentile(ttft, 50):.3f} s; "
        f"{len(ok) / wall_s:.2f} requests/s, {tokens / wall_s:.1f} completion tokens/s "
        f"(wall {wall_s:.1f} s)"
    )
