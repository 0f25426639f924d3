"""Backends without a model: the scripted double, the on-disk call cache, HTTP retries/errors.

The HTTP tests run `OpenAIBackend` against a small scripted HTTP server on 127.0.0.1 (the
client is the thing under test); end-to-end against the real engine is in test_server.py.
"""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from jaxmm.generate.backends import BackendError
from jaxmm.generate.call_cache import CachedBackend
from jaxmm.generate.openai_backend import OpenAIBackend
from jaxmm.generate.params import GenerationParams
from tests.generate.scripted import ScriptedBackend

P = GenerationParams(max_tokens=8)


def test_scripted_backend_answers_from_table():
    b = ScriptedBackend({"2+2?": "4. Done.", "hi": "hello"}, default=None)
    assert b.complete(["hi", "2+2?"], P) == ["hello", "4. Done."]
    assert b.complete(["2+2?"], GenerationParams(stop=(".",))) == ["4"]
    assert b.chat([[{"role": "user", "content": "hi"}]], P) == ["hello"]
    with pytest.raises(BackendError, match="no answer for prompt 'unknown'"):
        b.complete(["unknown"], P)
    assert [c[:2] for c in b.calls[:2]] == [("complete", "hi"), ("complete", "2+2?")]
    with pytest.raises(TypeError, match="list of strings"):
        b.complete("hi", P)
    with pytest.raises(TypeError, match=r"messages\[0\]"):
        b.chat([[{"role": "user"}]], P)


class _Counting(ScriptedBackend):
    """Scripted backend that fails on demand after a number of calls (a crash mid-run)."""

    def __init__(self, fail_after=None):
        super().__init__(lambda p: p.upper())
        self.batches = []
        self.fail_after = fail_after

    def complete(self, prompts, params):
        if self.fail_after is not None and len(self.batches) >= self.fail_after:
            raise KeyboardInterrupt("simulated crash")
        self.batches.append(list(prompts))
        return super().complete(prompts, params)


def test_cached_backend_skips_done_calls_and_survives_restart(tmp_path):
    prompts = [f"p{i}" for i in range(10)]
    crashing = _Counting(fail_after=2)
    cached = CachedBackend(crashing, tmp_path, batch_size=3)
    with pytest.raises(KeyboardInterrupt):
        cached.complete(prompts, P)
    assert crashing.batches == [prompts[0:3], prompts[3:6]]

    # A new process: only the calls that were not committed are made.
    inner = _Counting()
    resumed = CachedBackend(inner, tmp_path, batch_size=3)
    assert resumed.complete(prompts, P) == [p.upper() for p in prompts]
    assert inner.batches == [prompts[6:9], prompts[9:10]]
    assert (resumed.hits, resumed.misses) == (6, 4)

    # Same prompts again: no calls. Different params or model: new calls.
    assert resumed.complete(prompts[:2], P) == ["P0", "P1"]
    assert len(inner.batches) == 2
    resumed.complete(prompts[:1], GenerationParams(max_tokens=9))
    assert inner.batches[-1] == ["p0"]
    inner.model = "other-model"
    resumed.complete(prompts[1:2], P)
    assert inner.batches[-1] == ["p1"]


def test_cached_backend_chat_keys_on_whole_conversation(tmp_path):
    inner = ScriptedBackend(lambda p: p + "!")
    cached = CachedBackend(inner, tmp_path)
    a = [{"role": "system", "content": "A"}, {"role": "user", "content": "q"}]
    b = [{"role": "system", "content": "B"}, {"role": "user", "content": "q"}]
    cached.chat([a, b], P)
    cached.chat([a, b], P)
    assert len(inner.calls) == 2  # two distinct conversations, each called once


class _Flaky(BaseHTTPRequestHandler):
    """Fails the first `fail` requests with `status`, then answers like an OpenAI server."""

    fail = 0
    status = 503
    seen: list

    def log_message(self, *args):
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.seen.append(body)
        if len(self.seen) <= self.fail:
            data = json.dumps({"error": {"message": f"nope {len(self.seen)}"}}).encode()
            self.send_response(self.status)
        else:
            data = json.dumps({"choices": [{"text": body["prompt"][::-1]}]}).encode()
            self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def flaky():
    def start(fail, status):
        handler = type("H", (_Flaky,), {"fail": fail, "status": status, "seen": []})
        httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        servers.append(httpd)
        return f"http://127.0.0.1:{httpd.server_address[1]}/v1", handler.seen

    servers = []
    yield start
    for s in servers:
        s.shutdown()
        s.server_close()


def test_openai_backend_retries_5xx_then_succeeds(flaky):
    url, seen = flaky(fail=2, status=503)
    backend = OpenAIBackend(url, "m", max_retries=3, backoff_s=0.01)
    assert backend.complete(["abc"], GenerationParams(max_tokens=5, stop=("x",), seed=3)) == ["cba"]
    assert len(seen) == 3
    assert seen[-1] == {
        "model": "m",
        "prompt": "abc",
        "max_tokens": 5,
        "temperature": 0.0,
        "top_p": 1.0,
        "stop": ["x"],
        "seed": 3,
    }


def test_openai_backend_gives_up_with_the_server_message(flaky):
    url, seen = flaky(fail=10, status=503)
    with pytest.raises(BackendError, match=r"HTTP 503: nope 2"):
        OpenAIBackend(url, "m", max_retries=1, backoff_s=0.01).complete(["a"], P)
    url, seen = flaky(fail=10, status=400)
    with pytest.raises(BackendError, match=r"HTTP 400: nope 1"):
        OpenAIBackend(url, "m", max_retries=5, backoff_s=0.01).complete(["a"], P)
    assert len(seen) == 1  # 4xx is not retried


def test_openai_backend_connection_refused():
    import socket

    with socket.socket() as s:  # a free port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    backend = OpenAIBackend(f"http://127.0.0.1:{port}/v1", "m", max_retries=1, backoff_s=0.01)
    with pytest.raises(BackendError, match="after 2 attempts"):
        backend.complete(["a"], P)
    with pytest.raises(ValueError, match="base_url"):
        OpenAIBackend("localhost:8000", "m")


def test_generation_params_validation():
    with pytest.raises(ValueError, match="top_p"):
        GenerationParams(top_p=0)
    with pytest.raises(ValueError, match="max_tokens"):
        GenerationParams(max_tokens=-1)
    assert GenerationParams(stop="x").stop == ("x",)
    p = GenerationParams(max_tokens=3, temperature=0.5, stop=("a", "b"), seed=1)
    assert GenerationParams.from_dict(json.loads(json.dumps(p.to_dict()))) == p
