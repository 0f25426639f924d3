"""Video-SKoT with frames: a record with a `video` asked through a backend that takes images
shows the uniformly sampled frames (in time order, each after its time) before the text of
the answer and CoT prompts; a text backend gets the unchanged text prompts; an unreadable
video falls back to text and is counted. One test runs `skot_answer` on the real engine with
a tiny random VLM (orchestration: its vision tower is random)."""

import base64
import io
import os
import random

import numpy as np
import pytest
from PIL import Image

from jaxmm.data import movies_synth
from jaxmm.data.video import read_video
from jaxmm.generate.backends import check_conversation
from jaxmm.generate.params import GenerationParams
from jaxmm.pipelines import skot_answer, skot_cot
from jaxmm.pipelines import skot_prompts as P
from tests.generate.scripted import ScriptedBackend

pytestmark = pytest.mark.filterwarnings("ignore:os.fork:RuntimeWarning")
PARAMS = GenerationParams(max_tokens=16)
SKILLS = ["Identify the giver", "Track objects"]


@pytest.fixture(scope="module")
def record(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("skotv"))
    movie = movies_synth.make_movie("m0", random.Random(3))  # 3 scenes x 4 s = 12 s at 8 fps
    movies_synth.write_movie(root, movie)
    return {
        "id": "q1",
        "context": "Subtitles: Ana, I brought you the key.\nSynopsis: Bo gives Ana the key.",
        "question": "Who gives the key to Ana?",
        "options": ["Bo", "Cy", "Di", "Ed"],
        "answer": "A",
        "video": os.path.join(root, "videos", "m0.mp4"),
        "frame_budget": 3,
    }


class _ImageBackend(ScriptedBackend):
    """Declares image inputs; answers by the text of the last part."""

    accepts_images = True

    def __init__(self, respond):
        super().__init__(respond, chat_key=_last_text)

    def chat(self, conversations, params):
        for c in conversations:
            check_conversation(c, images=True)  # the parts are well formed
        self.calls.extend(("chat", list(c), params) for c in conversations)
        return [self._answer(_last_text(c), params) for c in conversations]


def _last_text(conv):
    content = conv[-1]["content"]
    return content if isinstance(content, str) else content[-1]["text"]


def _respond(prompt: str) -> str:
    if "Write one short sub-question" in prompt:
        return "Who holds the key?"
    if "Answer briefly" in prompt:
        return "Bo does."
    if "Reply yes or no" in prompt:
        return "Yes"
    return "Bo hands it over.\nAnswer: A"


def _decode(part) -> np.ndarray:
    url = part["image_url"]["url"]
    assert url.startswith("data:image/png;base64,")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))))


def _check_frames(content, record, prompt_start: str) -> None:
    """[header, "[2.00 s]", image, "[6.00 s]", image, "[10.00 s]", image, "\\n" + prompt]
    with the images the decoder's uniformly sampled frames, in order (PNG is lossless)."""
    clip = read_video(record["video"], max_frames=3)
    np.testing.assert_allclose(clip.timestamps_s, [2.0, 6.0, 10.0], atol=0.07)  # centres
    assert [p["type"] for p in content] == ["text", *["text", "image_url"] * 3, "text"]
    assert content[0]["text"] == P.PROMPTS["frames"].format(n=3)
    assert [content[i]["text"] for i in (1, 3, 5)] == [f"[{t:.2f} s]" for t in clip.timestamps_s]
    for k, i in enumerate((2, 4, 6)):
        np.testing.assert_array_equal(_decode(content[i]), clip.frames[k])
    assert content[-1]["text"].startswith("\n" + prompt_start)


def test_answer_attaches_frames_before_the_prompt(record):
    backend = _ImageBackend(_respond)
    out = skot_answer.run(record, backend, PARAMS)
    ((_, conv, _),) = backend.calls
    _check_frames(conv[-1]["content"], record, record["context"])
    fields = {k: record[k] for k in ("context", "question", "options")}
    assert conv[-1]["content"][-1]["text"] == "\n" + P.render("answer", **fields)[0]["content"]
    assert out["frames"] == 3 and out["correct"] and "frames_error" not in out


def test_cot_attaches_frames_to_sub_question_sub_answer_and_fuse_not_judge(record):
    backend = _ImageBackend(_respond)
    out = skot_cot.run(record | {"skills": SKILLS}, backend, PARAMS)
    convs = [c[1][-1]["content"] for c in backend.calls]
    assert len(convs) == 2 + 2 + 1 + 1  # sub-questions, sub-answers, fuse, judge
    *framed, judge = convs
    for content, start in zip(framed, ["Subtitles"] * 5, strict=True):
        _check_frames(content, record, start)
    assert "Write one short sub-question" in framed[0][-1]["text"]
    assert "Answer briefly in one sentence: Who holds the key?" in framed[2][-1]["text"]
    assert "Helpful steps" in framed[4][-1]["text"]
    assert isinstance(judge, str) and "Reply yes or no" in judge
    assert out["keep"] and out["frames"] == 3


def test_text_backend_gets_the_text_prompts(record):
    backend = ScriptedBackend(_respond)  # accepts_images is False
    out = skot_cot.run(record | {"skills": SKILLS}, backend, PARAMS)
    assert all(isinstance(c[1][-1]["content"], str) for c in backend.calls)
    assert out["frames"] == 0 and out["keep"]
    plain = {k: v for k, v in record.items() if k != "video"}
    backend2 = _ImageBackend(_respond)  # takes images, but the record has no video
    skot_answer.run(plain, backend2, PARAMS)
    assert isinstance(backend2.calls[0][1][-1]["content"], str)


def test_unreadable_video_asks_from_text_and_is_counted(record, tmp_path):
    bad = tmp_path / "cut.mp4"
    bad.write_bytes(open(record["video"], "rb").read()[:200])
    backend = _ImageBackend(_respond)
    outs = [
        skot_answer.run(record | {"video": str(bad)}, backend, PARAMS),
        skot_answer.run(record | {"video": str(tmp_path / "none.mp4")}, backend, PARAMS),
        skot_answer.run(record, backend, PARAMS),
    ]
    assert all(isinstance(c[1][-1]["content"], str) for c in backend.calls[:2])
    assert "cut.mp4" in outs[0]["frames_error"] and "does not exist" in outs[1]["frames_error"]
    assert [o["frames"] for o in outs] == [0, 0, 3]
    assert skot_answer.metrics([], outs)["frames_error_rate"] == pytest.approx(2 / 3)


def test_answer_through_the_engine_with_a_tiny_vlm(record, tmp_path_factory):
    """`skot_answer` on the real engine backend with a tiny random VLM: the reply is what the
    engine answers for the frames' own pixels at their places in the prompt."""
    from transformers import AutoTokenizer

    from jaxmm.generate.backends import EngineBackend
    from tests.generate.fixtures import IMG, TPI, build_tiny_vlm, build_tokenizer

    tok = AutoTokenizer.from_pretrained(build_tokenizer(tmp_path_factory.mktemp("tok")))
    _, _, engine = build_tiny_vlm(tok, max_seq_len=512)
    backend = EngineBackend(engine)
    assert backend.accepts_images
    params = GenerationParams(max_tokens=4)
    out = skot_answer.run(record, backend, params)
    assert out["frames"] == 3
    fields = {k: record[k] for k in ("context", "question", "options")}
    parts, _ = P.video_parts(record, backend)
    ids, images = engine.chat_inputs(P.with_frames(P.render("answer", **fields), parts))
    assert len(images) == 3 and ids.count(IMG) == 3 * TPI  # each frame's placeholders
    clip = read_video(record["video"], max_frames=3)
    (want,) = engine.generate([ids], params, [clip.frames])
    assert out["reply"] == want.text
    assert not engine.has_work()


def test_lora_experts_keep_the_image_encoder(record, tmp_path_factory):
    """The experts' engine (`skot_experts.lora_engine`) takes the base engine's image encoder:
    with the `base` adapter (B = 0) it answers a framed question as the base VLM engine."""
    from transformers import AutoTokenizer

    from jaxmm.generate.backends import EngineBackend
    from jaxmm.nn import lora as lora_lib
    from jaxmm.pipelines import skot_experts
    from tests.generate.fixtures import build_tiny_vlm, build_tokenizer

    tok = AutoTokenizer.from_pretrained(build_tokenizer(tmp_path_factory.mktemp("tok")))
    model, _, engine = build_tiny_vlm(tok, max_seq_len=512)
    lora = lora_lib.LoRAConfig(rank=2, alpha=4.0, targets=("q_proj", "v_proj"))
    experts = skot_experts.ExpertBackend(
        skot_experts.lora_engine(engine, model.lm_config, lora, seed=1)
    )
    assert experts.accepts_images
    params = GenerationParams(max_tokens=4)
    got = skot_answer.run(record | {"expert": "base"}, experts, params)
    want = skot_answer.run(record, EngineBackend(engine), params)
    assert got["frames"] == 3 and got["reply"] == want["reply"]


def test_generated_questions_with_videos(tmp_path):
    """`movie_qa.generate(video_root=...)`: the same questions, each with a decodable MP4 of
    its own movie (3 scenes x 4 s at 8 fps = 96 frames)."""
    from jaxmm.data import movie_qa

    plain = movie_qa.generate(2, 5)
    with_video = movie_qa.generate(2, 5, video_root=str(tmp_path))
    assert [{k: v for k, v in r.items() if k != "video"} for r in with_video] == plain
    for r in with_video:
        assert r["video"] == str(tmp_path / "videos" / f"{r['movie_id']}.mp4")
        assert len(read_video(r["video"]).frames) == 96
