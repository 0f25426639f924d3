"""The server against the official `openai` client and the fixes it found (issue 14, item 8):
`stream_options.include_usage`, token-id prompts, out-of-vocabulary ids, `response_format`
and unknown options refused by name.

Expected texts and token counts come from the same engine before the server starts (greedy),
so every comparison is exact.
"""

import json
import time

import httpx
import openai
import pytest

from jaxmm.generate.engine import Engine
from jaxmm.generate.params import GenerationParams
from jaxmm.generate.server import OpenAIServer

CHAT = [{"role": "user", "content": "Name a fox"}]
PROMPTS = ["The quick brown fox", "A language model"]
GREEDY = GenerationParams(max_tokens=8)
TIMEOUT = 60


@pytest.fixture(scope="module")
def served(llama_dir):
    engine = Engine.from_pretrained(llama_dir, max_seq_len=64, max_batch=4, model_name="tiny")
    expected = {
        "chat": engine.chat([CHAT], GREEDY)[0],
        "chat_prompt_tokens": len(engine.chat_prompt_ids(CHAT)),
        "greedy": engine.generate(PROMPTS, GREEDY),
        "ids": [engine.encode(p) for p in PROMPTS],
    }
    server = OpenAIServer(engine, host="127.0.0.1", port=0).start()
    yield server, expected
    server.shutdown()


@pytest.fixture(scope="module")
def client(served):
    server, _ = served
    return openai.OpenAI(base_url=server.url, api_key="unused", max_retries=0, timeout=TIMEOUT)


def post(server, route, body):
    return httpx.post(server.url + route, json=body, timeout=TIMEOUT)


def sse(resp):
    lines = [ln for ln in resp.text.split("\n\n") if ln.strip()]
    assert lines[-1] == "data: [DONE]"
    return [json.loads(ln.removeprefix("data: ")) for ln in lines[:-1]]


def test_openai_client_streaming_chat_with_usage(served, client):
    server, expected = served
    stream = client.chat.completions.create(
        model="tiny",
        messages=CHAT,
        max_tokens=8,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    *body, last = chunks
    assert all(c.usage is None for c in body)
    text = "".join(c.choices[0].delta.content or "" for c in body)
    assert text == expected["chat"].text
    assert body[-1].choices[0].finish_reason == expected["chat"].finish_reason
    assert last.choices == []
    want = expected["chat_prompt_tokens"], len(expected["chat"].token_ids)
    assert (last.usage.prompt_tokens, last.usage.completion_tokens) == want
    assert last.usage.total_tokens == sum(want)


def test_openai_client_chat_and_completions(served, client):
    server, expected = served
    reply = client.chat.completions.create(
        model="tiny", messages=CHAT, max_tokens=8, seed=1, temperature=0
    )
    assert reply.choices[0].message.content == expected["chat"].text
    assert reply.usage.completion_tokens == len(expected["chat"].token_ids)
    out = client.completions.create(model="tiny", prompt=PROMPTS, max_tokens=8, temperature=0)
    assert [c.text for c in out.choices] == [c.text for c in expected["greedy"]]
    assert [m.id for m in client.models.list()] == ["tiny"]


def test_include_usage_counts_every_choice_of_a_streamed_completion(served):
    server, expected = served
    resp = post(
        server,
        "/completions",
        {
            "prompt": PROMPTS,
            "max_tokens": 8,
            "temperature": 0,
            "stream": True,
            "stream_options": {"include_usage": True},
        },
    )
    assert resp.status_code == 200
    *body, last = sse(resp)
    assert all(e["usage"] is None and len(e["choices"]) == 1 for e in body)
    assert last["choices"] == [] and last["object"] == "text_completion"
    assert last["usage"] == {
        "prompt_tokens": sum(c.prompt_tokens for c in expected["greedy"]),
        "completion_tokens": sum(len(c.token_ids) for c in expected["greedy"]),
        "total_tokens": sum(c.prompt_tokens + len(c.token_ids) for c in expected["greedy"]),
    }


def test_without_include_usage_no_usage_chunk(served):
    server, _ = served
    body = {"prompt": PROMPTS[0], "max_tokens": 4, "temperature": 0, "stream": True}
    events = sse(post(server, "/completions", body))
    assert all(e["choices"] and "usage" not in e for e in events)


@pytest.mark.parametrize("nested", [False, True])
def test_token_id_prompts_match_the_text_prompt(served, client, nested):
    server, expected = served
    prompt = expected["ids"] if nested else expected["ids"][0]
    want = expected["greedy"] if nested else expected["greedy"][:1]
    out = client.completions.create(model="tiny", prompt=prompt, max_tokens=8, temperature=0)
    assert [c.text for c in out.choices] == [c.text for c in want]
    assert out.usage.prompt_tokens == sum(c.prompt_tokens for c in want)


def test_out_of_vocabulary_token_id_is_400_naming_the_id(served):
    server, expected = served
    vocab = server.engine.vocab_size
    for bad in (vocab, vocab + 1000, -1):
        resp = post(server, "/completions", {"prompt": [[*expected["ids"][0]], [5, bad]]})
        assert resp.status_code == 400, resp.text
        err = resp.json()["error"]
        assert err["param"] == "prompt"
        assert f"token id {bad} " in err["message"] and str(vocab) in err["message"]
    resp = post(server, "/completions", {"prompt": [vocab - 1], "max_tokens": 2})
    assert resp.status_code == 200  # the last id is fine


def test_engine_api_refuses_out_of_vocabulary_ids(served):
    server, _ = served
    vocab = server.engine.vocab_size
    with pytest.raises(ValueError, match=f"token id {vocab} .*{vocab} tokens"):
        server.engine.submit([1, vocab], GREEDY)
    assert not server.engine.has_work()


@pytest.mark.parametrize(
    "route,extra,field",
    [
        ("/chat/completions", {"response_format": {"type": "json_object"}}, "response_format"),
        ("/chat/completions", {"response_format": {"type": "json_schema"}}, "response_format"),
        ("/completions", {"response_format": {"type": "yaml"}}, "response_format"),
        ("/chat/completions", {"frobnicate": 1}, "frobnicate"),
        ("/chat/completions", {"tool_choice": "auto"}, "tool_choice"),
        ("/completions", {"stream_options": {"include_usage": True}}, "stream_options"),
        ("/chat/completions", {"stream": True, "stream_options": {"x": 1}}, "stream_options"),
        ("/completions", {"prompt": [1, "a"]}, "prompt"),
        ("/completions", {"prompt": [[]]}, "prompt"),
        ("/completions", {"prompt": [True, 2]}, "prompt"),
        (
            "/chat/completions",
            {"messages": [{"role": "user", "content": "x", "name": "a"}]},
            "messages",
        ),
        (
            "/chat/completions",
            {"messages": [{"role": "user", "content": [{"type": "image"}]}]},
            "messages",
        ),
    ],
)
def test_unsupported_options_are_400_naming_the_field(served, route, extra, field):
    server, _ = served
    base = {"messages": CHAT} if route == "/chat/completions" else {"prompt": "x"}
    resp = post(server, route, {**base, "max_tokens": 2, **extra})
    assert resp.status_code == 400, resp.text
    err = resp.json()["error"]
    assert err["param"] == field and field in err["message"]
    assert set(err) == {"message", "type", "param", "code"}


def test_response_format_text_is_accepted(served, client):
    server, expected = served
    reply = client.chat.completions.create(
        model="tiny",
        messages=CHAT,
        max_tokens=8,
        temperature=0,
        response_format={"type": "text"},
    )
    assert reply.choices[0].message.content == expected["chat"].text


def test_openai_client_raises_bad_request_with_the_server_message(served, client):
    with pytest.raises(openai.BadRequestError, match="response_format"):
        client.chat.completions.create(
            model="tiny", messages=CHAT, response_format={"type": "json_object"}
        )


def test_client_that_leaves_mid_stream_has_its_request_cancelled(tokenizer_dir, tmp_path):
    """A long generation (2000 tokens, one step per call) is cancelled when the client closes
    the stream after its first chunk: the worker is asked to cancel it and the engine idles."""
    from tests.generate.fixtures import build_jax_llama

    model_dir = build_jax_llama(tmp_path / "long", tokenizer_dir, max_positions=2048)
    engine = Engine.from_pretrained(model_dir, max_seq_len=2048, max_batch=1, steps_per_call=1)
    server = OpenAIServer(engine, port=0).start()
    cancelled = []
    cancel = server.worker.cancel
    server.worker.cancel = lambda rids: (cancelled.extend(rids), cancel(rids))
    try:
        body = {"prompt": PROMPTS[0], "max_tokens": 2000, "temperature": 0, "stream": True}
        with httpx.stream("POST", server.url + "/completions", json=body, timeout=TIMEOUT) as r:
            assert r.status_code == 200
            next(r.iter_lines())  # the first chunk: generation is under way
        for _ in range(500):
            if cancelled and not engine.has_work():
                break
            time.sleep(0.01)
        assert len(cancelled) == 1 and not engine.has_work()
    finally:
        server.shutdown()


def test_continue_final_message_prefills_the_assistant_turn(served, tokenizer_dir):
    """CINGS-style prefill: the reply continues the given assistant text (vLLM's option)."""
    from transformers import AutoTokenizer

    server, _ = served
    prefix = "## Context The quick brown fox"
    messages = CHAT + [{"role": "assistant", "content": prefix}]
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    # Independent rendering: the generation prompt of the earlier turns, then the prefix text.
    text = tok.apply_chat_template(CHAT, add_generation_prompt=True, tokenize=False) + prefix
    ids = tok(text, add_special_tokens=False)["input_ids"]
    body = {"model": "tiny", "max_tokens": 8, "temperature": 0}
    chat = post(server, "/chat/completions", body | {"messages": messages,
                                                      "continue_final_message": True})  # fmt: skip
    raw = post(server, "/completions", body | {"prompt": ids})
    assert chat.status_code == 200 and raw.status_code == 200, chat.text
    assert chat.json()["choices"][0]["message"]["content"] == raw.json()["choices"][0]["text"]
    assert chat.json()["usage"]["prompt_tokens"] == len(ids)
    answered = post(server, "/chat/completions", body | {"messages": messages})
    assert answered.json()["usage"]["prompt_tokens"] > len(ids)  # a new turn, not a prefill
    bad = post(server, "/chat/completions", body | {"messages": CHAT,
                                                     "continue_final_message": True})  # fmt: skip
    assert bad.status_code == 400 and "assistant message last" in bad.text
