"""The OpenAI-compatible server over real HTTP on 127.0.0.1 (ephemeral port, server thread).

Expected texts come from the same engine, computed before the server starts (greedy, or
seeded sampling, whose draws do not depend on batching), so every comparison is exact.
"""

import json
import threading
import urllib.error
import urllib.request

import pytest

from jaxmm.generate.backends import EngineBackend
from jaxmm.generate.engine import Engine
from jaxmm.generate.openai_backend import OpenAIBackend
from jaxmm.generate.params import GenerationParams
from jaxmm.generate.server import OpenAIServer

PROMPTS = ["The quick brown fox", "A language model", "café 東京", "Streaming servers send"]
CHAT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there"}]
GREEDY = GenerationParams(max_tokens=10)
SAMPLED = GenerationParams(max_tokens=10, temperature=0.8, top_p=0.9, top_k=40, seed=7)
TIMEOUT = 60


@pytest.fixture(scope="module")
def served(llama_dir):
    engine = Engine.from_pretrained(llama_dir, max_seq_len=64, max_batch=4, model_name="tiny")
    local = EngineBackend(engine)
    expected = {
        "greedy": local.complete(PROMPTS, GREEDY),
        "sampled": local.complete(PROMPTS[:1], SAMPLED)[0],
        "chat": local.chat([CHAT], GREEDY)[0],
        "chat_stop": local.chat([CHAT], GenerationParams(max_tokens=10, stop=("zz",)))[0],
    }
    server = OpenAIServer(engine, host="127.0.0.1", port=0).start()
    yield server, expected
    server.shutdown()


def post(url, body, raw=None):
    data = raw if raw is not None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT) as resp:
            return resp.status, resp.read().decode(), resp.headers.get("Content-Type")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(), e.headers.get("Content-Type")


def sse_events(text):
    lines = [ln for ln in text.split("\n\n") if ln.strip()]
    assert all(ln.startswith("data: ") for ln in lines)
    assert lines[-1] == "data: [DONE]"
    return [json.loads(ln[len("data: ") :]) for ln in lines[:-1]]


def test_models(served):
    server, _ = served
    with urllib.request.urlopen(server.url + "/models", timeout=TIMEOUT) as resp:
        body = json.load(resp)
    assert [m["id"] for m in body["data"]] == ["tiny"]


def test_completion_and_usage(served):
    server, expected = served
    status, body, ctype = post(
        server.url + "/completions",
        {"model": "tiny", "prompt": PROMPTS, "max_tokens": 10, "temperature": 0},
    )
    assert status == 200 and ctype == "application/json"
    out = json.loads(body)
    assert out["object"] == "text_completion"
    assert [c["text"] for c in out["choices"]] == expected["greedy"]
    assert out["usage"]["total_tokens"] == (
        out["usage"]["prompt_tokens"] + out["usage"]["completion_tokens"]
    )
    assert out["usage"]["completion_tokens"] > 0


def test_seeded_sampling_matches_engine(served):
    server, expected = served
    body = {
        "prompt": PROMPTS[0],
        "max_tokens": 10,
        "temperature": 0.8,
        "top_p": 0.9,
        "top_k": 40,
        "seed": 7,
    }
    status, text, _ = post(server.url + "/completions", body)
    assert status == 200
    assert json.loads(text)["choices"][0]["text"] == expected["sampled"]


def test_chat_completion(served):
    server, expected = served
    status, body, _ = post(
        server.url + "/chat/completions",
        {"model": "tiny", "messages": CHAT, "max_tokens": 10, "temperature": 0},
    )
    assert status == 200
    choice = json.loads(body)["choices"][0]
    assert choice["message"] == {"role": "assistant", "content": expected["chat"]}
    assert choice["finish_reason"] in ("stop", "length")


def test_chat_streaming(served):
    server, expected = served
    status, body, ctype = post(
        server.url + "/chat/completions",
        {"messages": CHAT, "max_tokens": 10, "temperature": 0, "stream": True, "stop": "zz"},
    )
    assert status == 200 and ctype == "text/event-stream"
    events = sse_events(body)
    assert events[0]["choices"][0]["delta"]["role"] == "assistant"
    assert all(e["object"] == "chat.completion.chunk" for e in events)
    text = "".join(e["choices"][0]["delta"].get("content", "") for e in events)
    assert text == expected["chat_stop"]
    finishes = [e["choices"][0]["finish_reason"] for e in events]
    assert finishes[-1] in ("stop", "length") and not any(finishes[:-1])


def test_completion_streaming_several_prompts(served):
    server, expected = served
    status, body, _ = post(
        server.url + "/completions",
        {"prompt": PROMPTS, "max_tokens": 10, "temperature": 0, "stream": True},
    )
    assert status == 200
    texts = [""] * len(PROMPTS)
    for e in sse_events(body):
        c = e["choices"][0]
        texts[c["index"]] += c["text"]
    assert texts == expected["greedy"]


@pytest.mark.parametrize(
    "route,body,field",
    [
        ("/chat/completions", {"model": "tiny"}, "messages"),
        ("/chat/completions", {"messages": "hello"}, "messages"),
        ("/chat/completions", {"messages": [{"role": "user", "content": 3}]}, "messages"),
        ("/chat/completions", {"messages": CHAT, "model": "gpt-9"}, "model"),
        ("/chat/completions", {"messages": CHAT, "temperature": "hot"}, "temperature"),
        ("/chat/completions", {"messages": CHAT, "max_tokens": 0}, "max_tokens"),
        ("/completions", {"prompt": 5}, "prompt"),
        ("/completions", {"prompt": "x", "stop": [1]}, "stop"),
        ("/completions", {"prompt": "x", "stream": "yes"}, "stream"),
        ("/completions", {"prompt": "x", "logprobs": 5}, "logprobs"),
        ("/chat/completions", {"messages": CHAT, "presence_penalty": 0.5}, "presence_penalty"),
        ("/chat/completions", {"messages": CHAT, "n": 2}, "n"),
    ],
)
def test_bad_requests_name_the_field(served, route, body, field):
    server, _ = served
    status, text, ctype = post(server.url + route, body)
    assert status == 400 and ctype == "application/json"
    err = json.loads(text)["error"]
    assert err["param"] == field and field in err["message"]


def test_invalid_json_and_unknown_route(served):
    server, _ = served
    status, text, _ = post(server.url + "/completions", None, raw=b"{not json")
    assert status == 400 and "JSON" in json.loads(text)["error"]["message"]
    status, _, _ = post(server.url + "/embeddings", {"input": "x"})
    assert status == 404


def test_oversize_prompt_is_400_naming_the_limit(served):
    server, _ = served
    status, text, _ = post(
        server.url + "/completions", {"prompt": "The quick brown fox " * 40, "max_tokens": 4}
    )
    assert status == 400
    err = json.loads(text)["error"]
    assert err["param"] == "prompt" and "max_seq_len" in err["message"] and "64" in err["message"]


def test_four_concurrent_clients(served):
    """Two completion clients, a chat client and a streaming chat client at the same time."""
    server, expected = served
    results = [None] * 4
    barrier = threading.Barrier(4)
    greedy = {"max_tokens": 10, "temperature": 0}

    def client(i):
        barrier.wait()
        if i < 2:
            status, body, _ = post(server.url + "/completions", {"prompt": PROMPTS[i], **greedy})
            results[i] = (status, json.loads(body)["choices"][0]["text"])
        elif i == 2:
            status, body, _ = post(server.url + "/chat/completions", {"messages": CHAT, **greedy})
            results[i] = (status, json.loads(body)["choices"][0]["message"]["content"])
        else:
            status, body, _ = post(
                server.url + "/chat/completions", {"messages": CHAT, "stream": True, **greedy}
            )
            chunks = sse_events(body)
            results[i] = (
                status,
                "".join(e["choices"][0]["delta"].get("content", "") for e in chunks),
            )

    threads = [threading.Thread(target=client, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT)
    want = [*expected["greedy"][:2], expected["chat"], expected["chat"]]
    assert results == [(200, text) for text in want]


def test_openai_backend_end_to_end(served):
    server, expected = served
    backend = OpenAIBackend(server.url, "tiny", max_retries=0)
    assert backend.models() == ["tiny"]
    assert backend.complete(PROMPTS, GREEDY) == expected["greedy"]
    assert backend.complete(PROMPTS[:1], SAMPLED) == [expected["sampled"]]
    assert backend.chat([CHAT], GREEDY) == [expected["chat"]]
    assert "".join(backend.stream_complete(PROMPTS[2], GREEDY)) == expected["greedy"][2]
    assert "".join(backend.stream_chat(CHAT, GREEDY)) == expected["chat"]
