"""Engine vs a naive no-cache greedy loop, batching invariance, EOS, stop strings, streaming.

The model is `toy_lm.ToyLM`, a one-layer decoder that follows the `jaxmm.models.llm`
contract; parity with `transformers` on the real decoder is in `test_engine_llama.py`.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmm.generate.engine import Engine, PromptTooLongError
from jaxmm.generate.params import GenerationParams
from tests.generate.toy_lm import ToyLM, init_toy_cache

MAX_LEN = 64
PROMPTS = [
    "The quick brown fox",
    "A language model predicts",
    "Jax",
    "Streaming servers send text deltas as soon as they are final. The quick brown",
    "café 東京",
]


@pytest.fixture(scope="module")
def toy(hf_tokenizer):
    model = ToyLM(vocab=len(hf_tokenizer), max_pos=MAX_LEN)
    tokens = jnp.zeros((1, 4), jnp.int32)
    params = model.init(jax.random.key(0), tokens, tokens)["params"]
    return model, params


def make_engine(toy, tok, **kw):
    model, params = toy
    kw.setdefault("max_batch", 4)  # 3 requests admitted together pad to 4 rows
    kw.setdefault("steps_per_call", 3)  # small, so requests cross many call boundaries
    kw.setdefault("prefill_chunk", 16)  # the 40-token prompt is prefilled in 4 chunks
    return Engine(
        model.apply, params, tok, lambda b, n: init_toy_cache(b, n), max_seq_len=MAX_LEN, **kw
    )


@pytest.fixture(scope="module")
def engine(toy, hf_tokenizer):
    return make_engine(toy, hf_tokenizer, eos_token_ids=[hf_tokenizer.eos_token_id])


def naive_greedy(toy, prompt_ids, max_new, eos):
    """Full recompute every step, no cache: pad to MAX_LEN (causal, so padding is inert)."""
    model, params = toy

    @functools.partial(jax.jit)
    def logits_at(ids, n):
        pos = jnp.arange(MAX_LEN)[None]
        logits, _ = model.apply({"params": params}, ids[None], pos)
        return logits[0, n - 1]

    ids = list(prompt_ids)
    out = []
    for _ in range(max_new):
        buf = np.zeros(MAX_LEN, np.int32)
        buf[: len(ids)] = ids
        nxt = int(jnp.argmax(logits_at(buf, len(ids))))
        if nxt in eos:
            break
        out.append(nxt)
        ids.append(nxt)
    return out


def test_greedy_matches_naive_recompute(engine, toy, hf_tokenizer):
    """5 prompts of different lengths through 4 slots: continuous batching with refills."""
    params = GenerationParams(max_tokens=20)
    got = engine.generate(PROMPTS, params)
    for prompt, c in zip(PROMPTS, got, strict=True):
        ids = engine.encode(prompt)
        want = naive_greedy(toy, ids, 20, engine.eos_token_ids)
        assert c.token_ids == want
        assert c.text == hf_tokenizer.decode(want, skip_special_tokens=True)
        assert c.finish_reason == ("length" if len(want) == 20 else "stop")
        assert c.prompt_tokens == len(ids)


def test_sampling_is_independent_of_batch_composition(engine):
    params = GenerationParams(max_tokens=12, temperature=1.0, top_k=50, top_p=0.9, seed=123)
    alone = engine.generate([PROMPTS[1]], params)[0]
    crowd = engine.generate(
        [PROMPTS[0], PROMPTS[1], PROMPTS[2]],
        [
            GenerationParams(max_tokens=5, temperature=0.7, seed=1),
            params,
            GenerationParams(max_tokens=3),
        ],
    )[1]
    assert alone.token_ids == crowd.token_ids
    other = engine.generate([PROMPTS[1]], GenerationParams(max_tokens=12, temperature=1.0, seed=9))
    assert other[0].token_ids != alone.token_ids


def test_eos_ends_request_and_is_not_in_text(toy, hf_tokenizer, engine):
    free = engine.generate([PROMPTS[0]], GenerationParams(max_tokens=15))[0]
    eos = free.token_ids[6]
    first = free.token_ids.index(eos)
    eng = make_engine(toy, hf_tokenizer, eos_token_ids=[eos])
    c = eng.generate([PROMPTS[0]], GenerationParams(max_tokens=15))[0]
    assert c.token_ids == free.token_ids[:first]
    assert c.finish_reason == "stop"


def test_stop_string_truncates_output(engine):
    free = engine.generate([PROMPTS[3]], GenerationParams(max_tokens=20))[0]
    text = free.text
    mid = len(text) // 2
    stop = next(
        text[i : i + 2] for i in range(mid, len(text) - 2) if "\ufffd" not in text[i : i + 2]
    )
    c = engine.generate([PROMPTS[3]], GenerationParams(max_tokens=20, stop=["@@@", stop]))[0]
    assert c.text == text[: text.find(stop)]
    assert c.finish_reason == "stop"


def test_stream_deltas_add_up_to_generate(engine):
    params = GenerationParams(max_tokens=16)
    want = engine.generate(PROMPTS, params)
    texts = [""] * len(PROMPTS)
    finish = [None] * len(PROMPTS)
    for ev in engine.stream(PROMPTS, params):
        assert finish[ev.request_id] is None  # nothing after the final event
        texts[ev.request_id] += ev.delta
        finish[ev.request_id] = ev.finish_reason
    assert texts == [c.text for c in want]
    assert finish == [c.finish_reason for c in want]


def test_chat_uses_the_tokenizer_template(engine, hf_tokenizer):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    ids = engine.chat_prompt_ids(messages)
    # Written by hand from the template in conftest.py.
    rendered = "<s><|system|>Be brief.<|end|><|user|>Hi<|end|><|assistant|>"
    assert ids == hf_tokenizer(rendered, add_special_tokens=False)["input_ids"]
    got = engine.chat([messages], GenerationParams(max_tokens=5))[0]
    assert got.token_ids == engine.generate([ids], GenerationParams(max_tokens=5))[0].token_ids


def test_prompt_too_long_is_rejected_before_device_work(engine):
    with pytest.raises(PromptTooLongError, match="max_seq_len 64"):
        engine.submit(list(range(40)), GenerationParams(max_tokens=30))
    with pytest.raises(PromptTooLongError, match="max_seq_len is 64"):
        engine.submit(list(range(64)), GenerationParams(max_tokens=1))
    assert not engine.has_work()


def test_submit_many_is_all_or_none_and_a_rejected_prompt_uses_no_id(engine):
    one = GenerationParams(max_tokens=1)
    with pytest.raises(PromptTooLongError):
        engine.submit_many([PROMPTS[0], list(range(64))], one)
    assert not engine.has_work()  # the first prompt passed its checks but was not queued
    first = engine.submit(PROMPTS[0], one)
    with pytest.raises(PromptTooLongError):
        engine.submit(list(range(64)), one)
    second = engine.submit(PROMPTS[1], one)
    assert second == first + 1
    while engine.has_work():
        engine.step()
    assert [engine.pop_result(r).finish_reason for r in (first, second)] == ["length"] * 2


def test_cancel_frees_the_slot_and_spares_the_others(engine):
    params = GenerationParams(max_tokens=20)
    want = engine.generate([PROMPTS[0]], params)[0]
    # 5 requests, 4 slots: after one step, `drop` is running and `queued` still waits.
    keep, drop, *others, queued = engine.submit_many([PROMPTS[0]] + PROMPTS[1:], params)
    engine.step()
    assert engine.cancel(drop) and engine.cancel(queued)
    assert engine.cancel(drop) is False
    while engine.has_work():
        engine.step()
    assert engine.pop_result(keep).token_ids == want.token_ids
    for rid in others:
        engine.pop_result(rid)
    with pytest.raises(KeyError):
        engine.pop_result(drop)


def test_edges_full_window_and_single_token(engine, toy):
    """prompt + max_tokens == max_seq_len uses the last cache slot; max_tokens=1 ends in
    prefill. Both must still equal the naive loop."""
    ids = engine.encode(PROMPTS[3])
    full, one = engine.generate(
        [PROMPTS[3], PROMPTS[0]],
        [GenerationParams(max_tokens=MAX_LEN - len(ids)), GenerationParams(max_tokens=1)],
    )
    assert full.token_ids == naive_greedy(toy, ids, MAX_LEN - len(ids), engine.eos_token_ids)
    assert one.token_ids == naive_greedy(toy, engine.encode(PROMPTS[0]), 1, engine.eos_token_ids)
    assert not engine.has_work()


def test_abandoned_stream_cancels_its_requests(engine):
    stream = engine.stream(PROMPTS[:2], GenerationParams(max_tokens=20))
    next(stream)
    stream.close()
    assert not engine.has_work() and not engine._finished
