"""Image content parts through the backends and the server: decoding with errors that name the
part, the engine backend on a tiny random VLM, the OpenAI backend's opt-in, the call cache
keyed on image bytes, and the server's 200 / 400."""

import base64
import json

import numpy as np
import pytest

from jaxmm.generate.backend_spec import backend_from_spec
from jaxmm.generate.backends import EngineBackend
from jaxmm.generate.call_cache import CachedBackend
from jaxmm.generate.image_parts import ImageInputError, split_images
from jaxmm.generate.openai_backend import OpenAIBackend
from jaxmm.generate.params import GenerationParams
from jaxmm.pipelines.mf2 import frame_parts
from tests.generate.fixtures import IMG, TPI
from tests.generate.test_server import post, served  # noqa: F401 (a text-model server)

GREEDY = GenerationParams(max_tokens=6)


def _frames(seed: int, n: int = 2) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 16, 16, 3), dtype=np.uint8)


def _conv(frames: np.ndarray) -> list[dict]:
    parts = frame_parts(frames, np.arange(len(frames), dtype=np.float64))
    return [{"role": "user", "content": [*parts, {"type": "text", "text": "What is shown?"}]}]


def test_split_images_decodes_data_urls_and_names_bad_parts():
    frames = _frames(0)
    messages, images = split_images(_conv(frames), "<IMG>")
    assert [m["content"] for m in messages] == ["[0.00 s]<IMG>[1.00 s]<IMG>What is shown?"]
    np.testing.assert_array_equal(np.stack(images), frames)  # PNG is lossless
    bad = [
        ({"type": "image_url", "image_url": {"url": "https://x/cat.png"}}, "only base64"),
        ({"type": "image_url", "image_url": {"url": "data:image/png;base64,@@@"}}, "bad base64"),
        (
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
            "no readable image",
        ),
        ({"type": "audio"}, "type 'audio'"),
        ({"type": "image_url", "image_url": "x"}, "without image_url.url"),
    ]
    for part, why in bad:
        conv = [{"role": "user", "content": [{"type": "text", "text": "a"}, part]}]
        with pytest.raises(ImageInputError, match=rf"messages\[0\]\.content\[1\].*{why}"):
            split_images(conv, "<IMG>")
    with pytest.raises(ImageInputError, match="contains the image marker"):
        split_images([{"role": "user", "content": "a <IMG> b"}], "<IMG>")


def test_engine_backend_chat_with_images(tiny_vlm):
    _, _, engine = tiny_vlm
    backend = EngineBackend(engine)
    assert backend.accepts_images
    frames = _frames(0)
    ids, images = engine.chat_inputs(_conv(frames))
    # Each image part becomes TPI placeholders right after its time stamp.
    assert ids.count(IMG) == 2 * TPI and len(images) == 2
    first = ids.index(IMG)
    assert engine.tokenizer.decode(ids[:first]).endswith("[0.00 s]")
    assert ids[first : first + TPI] == [IMG] * TPI
    other = frames.copy()
    other[1] = 255 - other[1]
    want = engine.generate([ids, ids], GREEDY, [frames, other])
    got = backend.chat([_conv(frames), _conv(other)], GREEDY)
    assert got == [w.text for w in want]
    want = want[0]
    assert "".join(backend.stream_chat(_conv(frames), GREEDY)) == want.text
    # A data URL that is not an image: named, and nothing is left queued.
    conv = _conv(frames)
    conv[0]["content"][3]["image_url"]["url"] = "data:image/png;base64," + base64.b64encode(
        b"not a png"
    ).decode("ascii")
    with pytest.raises(ImageInputError, match=r"messages\[0\]\.content\[3\]"):
        backend.chat([conv], GREEDY)
    assert not engine.has_work()


def test_text_backends_refuse_images_and_openai_opts_in():
    conv = _conv(_frames(0, 1))
    text_only = OpenAIBackend("http://127.0.0.1:9/v1", "m", max_retries=0)
    assert not text_only.accepts_images
    with pytest.raises(ImageInputError, match=r"messages\[0\]\.content is a list of parts"):
        text_only.chat([conv], GREEDY)  # before any HTTP
    vlm = backend_from_spec("openai:http://127.0.0.1:9/v1,model=m,images=true")
    assert isinstance(vlm, OpenAIBackend) and vlm.accepts_images
    assert vlm._body(conv, GREEDY)["messages"] == conv  # forwarded as they are
    with pytest.raises(ValueError, match="images"):
        backend_from_spec("openai:http://127.0.0.1:9/v1,images=maybe")
    with pytest.raises(ValueError, match="vision must be 'tiny_random'"):
        backend_from_spec("engine:m.gguf,vision=clip")


def test_call_cache_keys_on_image_bytes(tmp_path):
    class Echo(OpenAIBackend):
        calls = 0

        def chat(self, conversations, params):
            Echo.calls += len(conversations)
            return [str(len(json.dumps(c))) for c in conversations]

    cached = CachedBackend(Echo("http://h/v1", "m", images=True), tmp_path)
    assert cached.accepts_images
    a, b = _frames(0, 1), _frames(0, 1)
    b[0, 0, 0, 0] ^= 1  # one bit of one pixel
    cached.chat([_conv(a), _conv(b)], GREEDY)
    cached.chat([_conv(a), _conv(b)], GREEDY)
    assert Echo.calls == 2 and cached.hits == 2
    assert cached.key("chat", _conv(a), GREEDY) != cached.key("chat", _conv(b), GREEDY)


def test_server_takes_images_when_its_engine_does(tiny_vlm, served):  # noqa: F811
    from jaxmm.generate.server import OpenAIServer

    _, _, engine = tiny_vlm
    frames = _frames(0)
    (want,) = EngineBackend(engine).chat([_conv(frames)], GREEDY)
    server = OpenAIServer(engine, host="127.0.0.1", port=0).start()
    try:
        body = {"messages": _conv(frames), "max_tokens": 6, "temperature": 0}
        status, text, _ = post(server.url + "/chat/completions", body)
        assert status == 200, text
        assert json.loads(text)["choices"][0]["message"]["content"] == want
        body["messages"][0]["content"][1]["image_url"]["url"] = "data:image/png;base64,!!"
        status, text, _ = post(server.url + "/chat/completions", body)
        err = json.loads(text)["error"]
        assert status == 400 and err["param"] == "messages"
        assert "messages[0].content[1]" in err["message"] and "base64" in err["message"]
    finally:
        server.shutdown()
    text_server, _ = served  # a text model: image parts are a 400 naming the field
    status, text, _ = post(text_server.url + "/chat/completions", {"messages": _conv(frames)})
    err = json.loads(text)["error"]
    assert status == 400 and err["param"] == "messages" and "takes no images" in err["message"]


def test_tiny_random_tower_shapes_and_placeholder(hf_tokenizer):
    from jaxmm.generate.vision import placeholder_token, tiny_random_encoder
    from jaxmm.models.llm import LLMConfig

    cfg = LLMConfig(320, 24, 48, num_layers=1, num_heads=2, num_kv_heads=1, head_dim=12)
    enc = tiny_random_encoder(cfg, image_token_id=7)
    assert (enc.tokens_per_image, enc.image_size) == (16, 64)  # 64-px images, 16-px patches
    frames = np.random.default_rng(0).integers(0, 256, (3, 120, 160, 3), dtype=np.uint8)
    pixels = enc.preprocess(frames)  # resized to 64 x 64, scaled to [-1, 1]
    assert pixels.shape == (3, 64, 64, 3) and -1 <= pixels.min() < pixels.max() <= 1
    feats = enc.encode_fn(enc.params, pixels)
    assert feats.shape == (3 * 16, 24) and np.isfinite(np.asarray(feats)).all()
    with pytest.raises(ValueError, match="none of the reserved tokens.*image placeholder"):
        placeholder_token(hf_tokenizer)  # the test tokenizer has no reserved code tokens


@pytest.mark.slow  # loads SmolLM2-135M (~30 s on a loaded 2-core CPU)
def test_smollm2_with_a_tiny_random_tower_from_the_spec():
    from jaxmm.models.gguf import default_instruct_model

    backend = backend_from_spec(
        f"engine:{default_instruct_model()},max_seq_len=256,max_batch=2,vision=tiny_random"
    )
    engine = backend.engine
    assert backend.accepts_images and engine.image_encoder.name == "tiny_random"
    assert engine.tokenizer.convert_ids_to_tokens(engine.image_encoder.image_token_id) == (
        "<empty_output>"
    )
    frames = np.random.default_rng(0).integers(0, 256, (2, 90, 120, 3), dtype=np.uint8)
    ids, images = engine.chat_inputs(_conv(frames))
    assert ids.count(engine.image_encoder.image_token_id) == 2 * 16 and len(images) == 2
    (text,) = backend.chat([_conv(frames)], GenerationParams(max_tokens=4))
    assert isinstance(text, str)
