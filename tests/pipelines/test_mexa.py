"""MEXA with ScriptedBackend: the skill menu, router parsing (unknown ids counted, fallback),
experts (subtitles, precomputed files, VLM captions with image parts, OCR with and without
pytesseract), the aggregator prompt and metrics through the runtime against hand-computed
values, the direct baseline, resume after a crash with no repeated call, bad records, and the
launcher end to end."""

import json
import os
import subprocess
import sys
import types

import pytest

from jaxmm import pipelines
from jaxmm.data import expert_files, movies_mcq
from jaxmm.generate.backends import BackendError
from jaxmm.generate.params import GenerationParams
from jaxmm.io.jsonl import read_jsonl, write_jsonl
from jaxmm.pipelines import mexa, mexa_experts, mexa_skills
from jaxmm.pipelines.mexa_experts import ExpertInput, ExpertUnavailable
from jaxmm.pipelines.runtime import run_pipeline
from tests.generate.scripted import ScriptedBackend, scripted_openai_server

pytestmark = pytest.mark.filterwarnings("ignore:os.fork:RuntimeWarning")
P = GenerationParams()


@pytest.fixture(scope="module")
def text_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("mexa")
    return movies_mcq.write_dataset(str(root), n=2, seed=0, video=False)


@pytest.fixture(scope="module")
def video_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("mexav")
    return movies_mcq.write_dataset(str(root), n=1, seed=3, video=True)


# ------------------------------------------------------------------------------ menu, router
def test_menu_has_17_skills_in_7_groups():
    skills = mexa_skills.SKILLS
    assert len(skills) == 17 and len(mexa_skills.GROUPS) == 7
    per_group = {g: [s for s in skills if s[0] == g] for g in mexa_skills.GROUPS}
    assert {g: len(v) for g, v in per_group.items()} == {
        "A": 3, "B": 3, "C": 2, "D": 2, "E": 3, "F": 2, "G": 2
    }  # fmt: skip
    assert skills["B1"].name == "subtitles" and skills["G2"].name == "geometry description"
    assert set(mexa_skills.TASK_TYPES) >= {"video_mmmu", "mmau", "sqa3d", "m3d"}


@pytest.mark.parametrize(
    "text, selected, unknown",
    [
        ("A1, B1", ["A1", "B1"], []),
        ("[B1][A2]", ["B1", "A2"], []),
        ("skills: a1 and b-1.", ["A1", "B1"], []),
        ("E1\nE1\nF2", ["E1", "F2"], []),
        ("A1, H3, A9", ["A1"], ["H3", "A9"]),
        ("H3", [], ["H3"]),
        ("I would use the subtitles and a video caption.", ["B1", "A1"], []),
        ("Use OCR on the slides", ["E1", "E2"], []),
        ("A1 (video caption) and subtitles", ["A1"], []),  # ids win over names
        ("No idea.", [], []),
    ],
)
def test_parse_skills(text, selected, unknown):
    assert mexa_skills.parse_skills(text) == (selected, unknown)


def test_router_prompt_shows_task_question_options_and_menu():
    text = mexa_skills.router_prompt("mmau", "What plays?", ["a violin", "a drum"], 0)
    assert "Task type: MMAU: multiple-choice audio" in text
    assert "Question: What plays?\nOptions:\nA: a violin\nB: a drum\n" in text
    assert all(f"{s}: " in text for s in mexa_skills.SKILLS)
    assert "- audio: B1: subtitles; B2: audio description; B3: music description" in text
    assert "frames of the input follow" not in text
    assert "4 frames of the input follow" in mexa_skills.router_prompt("sqa3d", "q", ["x", "y"], 4)


# ------------------------------------------------------------------------------ expert files
def test_expert_files_round_trip_and_named_errors(tmp_path):
    root = str(tmp_path)
    expert_files.write_clip_captions(root, "v", ["one  clip", "two"])
    assert expert_files.load_clip_captions(root, "v") == ["one clip", "two"]
    expert_files.write_frame_captions(root, "v", [(0.5, {"general_ocr": "EXIT"}), (2.0, {})])
    with pytest.raises(expert_files.ExpertFileError, match="frame_0001.json.*'general_ocr'"):
        expert_files.load_frame_captions(root, "v", "general_ocr")
    (first,) = expert_files.load_frame_captions(root, "v", "general_ocr", stride=2)
    assert first == expert_files.FrameCaption("frame_0000", 0.5, "EXIT")
    with pytest.raises(expert_files.ExpertFileError, match="does not exist"):
        expert_files.load_clip_captions(root, "nope")
    with pytest.raises(expert_files.ExpertFileError, match="folder .*nope"):
        expert_files.load_frame_captions(root, "nope", "general_ocr")
    bad = tmp_path / "skill_captions" / "w"
    bad.mkdir(parents=True)
    (bad / "f.json").write_text("{not json")
    with pytest.raises(expert_files.ExpertFileError, match="f.json.*not valid JSON"):
        expert_files.load_frame_captions(root, "w", "general_ocr")
    (bad / "f.json").write_text('{"other/f": {}}')
    with pytest.raises(expert_files.ExpertFileError, match="no object under 'w/f'"):
        expert_files.load_frame_captions(root, "w", "general_ocr")
    q = tmp_path / "question_captions"
    q.mkdir()
    (q / "Audio.json").write_text(json.dumps([{"id": 7, "prediction": "a dog barks"}]))
    (q / "3D Scene.json").write_text(json.dumps({"7": {"response": "a sofa"}, "8": 3}))
    assert expert_files.load_question_caption(root, "Audio", "7") == "a dog barks"
    assert expert_files.load_question_caption(root, "3D Scene", "7") == "a sofa"
    with pytest.raises(expert_files.ExpertFileError, match="no entry for question '9'"):
        expert_files.load_question_caption(root, "Audio", "9")
    with pytest.raises(expert_files.ExpertFileError, match="question '8' has no text"):
        expert_files.load_question_caption(root, "3D Scene", "8")


# ------------------------------------------------------------------------------ the pipeline
def _gold(records):
    return {r["question"]: r for r in records}


def _script(records):
    """Router: subtitle questions -> "B1"; colour questions -> "A1, H9" (an unknown id);
    background questions -> no skill (fallback to A1, B1). Aggregator: the gold letter when
    the expert block holding the answer is in the prompt, else "not sure"."""
    gold = _gold(records)
    header = {"subtitles": "## The video's subtitles", "video": "## The video's captions"}

    def respond(prompt):
        if prompt.startswith("You select"):
            q = gold[prompt.split("Question: ", 1)[1].split("\n", 1)[0]]
            return {"giver_colour": "A1, H9", "background": "whatever helps"}.get(
                q["category"], "B1"
            )
        q = gold[prompt.rsplit("Question: ", 1)[1].split("\n", 1)[0]]
        return f"({q['answer']})" if header[q["evidence"]] in prompt else "not sure"

    return respond


def _records(questions, modes=("mexa", "direct")):
    return [
        {**q, "id": f"{q['id']}/{m}", "mode": m, "experts": {"A1": "precomputed"}}
        for q in questions
        for m in modes
    ]


def test_mexa_and_direct_through_the_runtime(text_data, tmp_path):
    records = _records(text_data)
    write_jsonl(tmp_path / "in.jsonl", records)
    backend = ScriptedBackend(_script(text_data))
    report = run_pipeline(
        pipelines.get("mexa"), tmp_path / "in.jsonl", tmp_path / "out.jsonl", backend,
        progress=False,
    )  # fmt: skip
    n = len(text_data)  # 10 questions: 6 subtitle, 2 colour, 2 background
    assert report.calls == 2 * n + n  # router + aggregator per mexa record, 1 per direct
    m = report.metrics
    assert m["mexa/accuracy"] == 1.0 and m["mexa/questions"] == n
    assert m["direct/accuracy"] == 0.0 and m["direct/unparsed_rate"] == 1.0
    assert m["mexa/chance"] == pytest.approx(0.25)
    assert m["mexa/router/unknown_ids"] == 2 and m["mexa/router/records_with_unknown_ids"] == 0.2
    assert m["mexa/router/fallback_rate"] == pytest.approx(2 / 10)
    assert m["mexa/router/mean_skills"] == pytest.approx((6 * 1 + 2 * 1 + 2 * 2) / 10)
    assert m["mexa/router/skill=B1/rate"] == pytest.approx(8 / 10)
    assert m["mexa/router/evidence=subtitles/recall"] == 1.0
    assert m["mexa/router/evidence=video/recall"] == 1.0
    assert m["mexa/experts/errors"] == 0 and "direct/router/mean_skills" not in m
    assert m["mexa/category=giver_colour/accuracy"] == 1.0
    outs = {o["id"]: o for o in read_jsonl(tmp_path / "out.jsonl")}
    colour = outs["movie000-giver_colour/mexa"]
    assert colour["router"]["unknown"] == ["H9"] and colour["router"]["skills"] == ["A1"]
    assert colour["router"]["precomputed"] is False
    assert colour["expert_kinds"] == {"A1": "precomputed"}
    assert colour["experts"]["A1"].startswith("[0.0-4.0 s] On a ")
    assert outs["movie000-background/mexa"]["router"]["fallback"] is True
    assert outs["movie000-giver/direct"]["prediction"] is None
    # the aggregator prompt: headers per skill, in menu order, then the question
    agg = [c[1][0]["content"] for c in backend.calls if c[1][0]["content"].startswith("Task")]
    both = next(p for p in agg if "## The video's captions" in p and "subtitles (skill" in p)
    assert both.index("(skill A1: video description)") < both.index("(skill B1: subtitles)")
    assert "Thank you, " in both and both.endswith("The answer is:")
    direct = [p for p in agg if "## " not in p]
    assert len(direct) == n  # the baseline sees no expert text


def test_missing_expert_files_are_counted_not_fatal(text_data, tmp_path):
    q = text_data[0]
    rec = {**q, "id": "x", "expert_dir": str(tmp_path / "none"), "experts": {"A1": "precomputed"}}
    backend = ScriptedBackend(lambda p: "A1, B1, C1" if p.startswith("You select") else "A")
    out = mexa.run(rec, backend, P)
    assert set(out["experts"]) == {"B1"}  # subtitles ran
    errs = out["expert_errors"]
    assert set(errs) == {"A1", "C1"}
    assert errs["A1"].startswith("precomputed: video caption file") and "none" in errs["A1"]
    assert "precomputed: expert file" in errs["C1"] and "3D Scene.json" in errs["C1"]
    m = mexa.metrics([], [out])
    assert m["mexa/experts/errors"] == 2 and m["mexa/experts/records_with_errors"] == 1.0


def test_missing_or_malformed_subtitles_are_counted_not_fatal(text_data, tmp_path):
    """The subtitles expert (B1) on a missing and on a malformed SRT file: an expert error
    naming the file, the aggregator still asked, the errors counted in the metrics."""
    bad = tmp_path / "bad.srt"
    bad.write_text("1\nthis is not a time line\nhello\n")
    backend = ScriptedBackend(lambda p: "B1" if p.startswith("You select") else "A")
    outs = []
    for i, path in enumerate((tmp_path / "none.srt", bad)):
        rec = {**text_data[0], "id": f"s{i}", "subtitles": str(path)}
        outs.append(mexa.run(rec, backend, P))
    assert [set(o["experts"]) for o in outs] == [set(), set()]
    assert "none.srt" in outs[0]["expert_errors"]["B1"]
    assert "does not exist" in outs[0]["expert_errors"]["B1"]
    assert "bad.srt" in outs[1]["expert_errors"]["B1"]
    assert "not valid SRT" in outs[1]["expert_errors"]["B1"]
    assert [o["prediction"] for o in outs] == ["A", "A"]  # answered without the expert
    m = mexa.metrics([], outs)
    assert m["mexa/experts/errors"] == 2 and m["mexa/experts/records_with_errors"] == 1.0


class _ImageBackend(ScriptedBackend):
    """Declares image inputs; answers by the text of the last part; records everything."""

    accepts_images = True

    def __init__(self, respond):
        super().__init__(respond)

    def chat(self, conversations, params):
        self.calls.extend(("chat", c, params) for c in conversations)
        out = []
        for c in conversations:
            content = c[-1]["content"]
            texts = [content] if isinstance(content, str) else [
                p["text"] for p in content if p["type"] == "text"
            ]  # fmt: skip
            out.append(self.responses(texts[0] if texts[0].startswith("You") else texts[-1]))
        return out


def _vlm_script(prompt):
    if prompt.startswith("You select"):
        return "A1, A2, E1"
    if prompt.startswith("Describe what happens"):
        return "two figures meet"
    if prompt.startswith("Describe this image in detail"):
        return "a figure"
    if prompt.startswith("Read out"):
        return "NO TEXT"
    return "B"


def test_vlm_experts_and_router_see_frames(video_data, monkeypatch):
    monkeypatch.setitem(sys.modules, "pytesseract", None)  # not installed: OCR by the VLM
    rec = {**video_data[0], "id": "v", "frame_budget": 3}
    backend = _ImageBackend(_vlm_script)
    out = mexa.run(rec, backend, P)
    assert out["expert_errors"] == {}
    assert out["expert_kinds"] == {"A1": "vlm", "A2": "vlm", "E1": "ocr"}
    assert out["experts"]["A1"] == "two figures meet"
    assert out["experts"]["A2"] == "[2.00 s] a figure\n[6.00 s] a figure\n[10.00 s] a figure"
    assert out["experts"]["E1"].splitlines()[0] == "[2.00 s] NO TEXT"
    convs = [c[1][0]["content"] for c in backend.calls]
    images = lambda parts: sum(p["type"] == "image_url" for p in parts)
    router, a1, *per_frame, agg = convs
    assert images(router) == 3 and images(a1) == 3  # router and video caption: all frames
    assert len(per_frame) == 6 and all(images(p) == 1 for p in per_frame)  # A2 + E1, per frame
    assert isinstance(agg, str) and "(skill E1: general OCR)" in agg


def test_ocr_uses_tesseract_when_installed(video_data, monkeypatch):
    fake = types.SimpleNamespace(
        get_tesseract_version=lambda: "5.0", image_to_string=lambda img: f" EXIT\n{img.size[0]} "
    )
    monkeypatch.setitem(sys.modules, "pytesseract", fake)
    rec = {**video_data[0], "id": "v", "frame_budget": 2}
    backend = _ImageBackend(_vlm_script)
    text = mexa_experts.run_expert("E1", ExpertInput(rec, backend, P))
    assert text == "[3.00 s] EXIT 128\n[9.00 s] EXIT 128" and backend.calls == []


def test_vlm_expert_without_images_is_unavailable(video_data):
    rec = {**video_data[0], "id": "v"}
    with pytest.raises(ExpertUnavailable, match="takes no images"):
        mexa_experts.run_expert("A2", ExpertInput(rec, ScriptedBackend({}), P))
    no_video = {k: v for k, v in rec.items() if k != "video"}
    with pytest.raises(ExpertUnavailable, match="no 'video'"):
        mexa_experts.run_expert("A2", ExpertInput(no_video, _ImageBackend(_vlm_script), P))


class _Crash(ScriptedBackend):
    """Fails after `budget` calls, like a killed process: the earlier results are cached."""

    def __init__(self, respond, budget):
        super().__init__(respond)
        self.budget = budget

    def chat(self, conversations, params):
        if len(self.calls) + len(conversations) > self.budget:
            raise BackendError("killed")
        return super().chat(conversations, params)


def test_resume_after_a_crash_repeats_no_call(text_data, tmp_path):
    records = _records(text_data)
    write_jsonl(tmp_path / "in.jsonl", records)
    full = ScriptedBackend(_script(text_data))
    run_pipeline(mexa.PIPELINE, tmp_path / "in.jsonl", tmp_path / "a.jsonl", full, progress=False)
    first = _Crash(_script(text_data), budget=13)
    with pytest.raises(RuntimeError, match="killed"):
        run_pipeline(
            mexa.PIPELINE, tmp_path / "in.jsonl", tmp_path / "b.jsonl", first, concurrency=1,
            progress=False,
        )  # fmt: skip
    n_before = len(read_jsonl(tmp_path / "b.jsonl"))
    assert 0 < n_before < len(records)
    second = ScriptedBackend(_script(text_data))
    report = run_pipeline(
        mexa.PIPELINE, tmp_path / "in.jsonl", tmp_path / "b.jsonl", second, progress=False
    )
    assert len(first.calls) + len(second.calls) == len(full.calls)  # no call made twice
    assert report.done_before == n_before and report.calls == len(second.calls)
    a, b = (tmp_path / "a.jsonl").read_bytes(), (tmp_path / "b.jsonl").read_bytes()
    assert a == b
    again = run_pipeline(
        mexa.PIPELINE, tmp_path / "in.jsonl", tmp_path / "b.jsonl", second, progress=False
    )
    assert again.calls == 0 and again.written == 0


def test_bad_records_are_reported(text_data, tmp_path):
    good = {**text_data[0], "id": "ok"}
    bad = [
        {**good, "id": "a", "options": ["only one"]},
        {**good, "id": "b", "answer": "E"},
        {**good, "id": "c", "mode": "vote"},
        {**good, "id": "d", "experts": {"Z1": "vlm"}},
        {**good, "id": "e", "experts": {"A1": "oracle"}},
        {**good, "id": "f", "question": " "},
    ]
    write_jsonl(tmp_path / "in.jsonl", [good, *bad])
    report = run_pipeline(
        mexa.PIPELINE, tmp_path / "in.jsonl", tmp_path / "out.jsonl",
        ScriptedBackend({}, default="B1"), progress=False,
    )  # fmt: skip
    errors = [b["error"] for b in report.bad_records]
    assert report.written == 1 and len(errors) == 6
    assert "in.jsonl:2: field 'options'" in errors[0]
    assert "field 'answer' must be an option letter A-D, got 'E'" in errors[1]
    assert "field 'mode'" in errors[2]
    assert "unknown skill id 'Z1'" in errors[3]
    assert "unknown expert kind 'oracle'" in errors[4]
    assert "field 'question'" in errors[5]


@pytest.mark.slow  # two subprocesses importing jaxmm: ~20-40 s on a loaded 2-core machine
def test_launcher_end_to_end(text_data, tmp_path):
    data = os.path.dirname(os.path.dirname(text_data[0]["subtitles"]))
    respond = _script(text_data)
    with scripted_openai_server(respond) as (url, seen):
        cmd = [
            sys.executable, "launch/mexa.py", f"--data_dir={data}", f"--out_dir={tmp_path}/o",
            f"--backend=openai:{url},model=m", "--experts=A1=precomputed", "--progress=false",
        ]  # fmt: skip
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        assert "| mexa | 10 | 1.000 | 0.250 | 0.000 |" in out.stdout
        assert "| direct | 10 | 0.000 | 0.250 | 1.000 |" in out.stdout
        assert len(seen) == 30
        again = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        assert json.loads(again.stdout.strip().splitlines()[-1])["model_calls"] == 0
        assert len(seen) == 30
        fixed = [*cmd[:3], f"--out_dir={tmp_path}/fixed", *cmd[4:], "--skills=A1, B1"]
        fixed.append("--modes=mexa")
        out = subprocess.run(fixed, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        assert len(seen) == 40  # the aggregator only: no router call
        assert "| mexa | 10 | 1.000 |" in out.stdout and "| direct |" not in out.stdout
        items = [
            {"uid": q["id"], "question": q["question"], "choices": q["options"],
             "answer": q["options"][ord(q["answer"]) - 65]}
            for q in text_data
        ] + [{"uid": "open", "question": "Why?", "question_type": "open"}]  # fmt: skip
        (tmp_path / "ann.json").write_text(json.dumps(items))
        ann = [*cmd[:2], f"--annotations={tmp_path}/ann.json", "--task_type=movie_qa"]
        ann += [f"--out_dir={tmp_path}/ann", cmd[4], "--modes=direct", "--progress=false"]
        out = subprocess.run(ann, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        assert "10 multiple-choice items, 1 open-ended skipped" in out.stdout
        assert "| direct | 10 | 0.000 | 0.250 | 1.000 |" in out.stdout and len(seen) == 50
        cmd[-2] = "--experts=A1=oracle"
        bad = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        assert bad.returncode == 1 and "unknown expert kind 'oracle'" in bad.stderr


def test_precomputed_router_output_makes_no_router_call(text_data):
    rec = {**text_data[0], "id": "p", "skills": "B1, X7", "experts": {"A1": "precomputed"}}
    backend = ScriptedBackend(_script(text_data))
    out = mexa.run(rec, backend, P)
    assert len(backend.calls) == 1  # the aggregator only
    assert out["router"] == {
        "raw": "B1, X7", "skills": ["B1"], "unknown": ["X7"], "fallback": False,
        "precomputed": True,
    }  # fmt: skip
    assert out["correct"] is True
    listed = mexa.run({**rec, "skills": ["A1"]}, backend, P)
    assert listed["router"]["skills"] == ["A1"] and set(listed["experts"]) == {"A1"}


def test_unreadable_video_routes_from_text(video_data, tmp_path):
    broken = tmp_path / "cut.mp4"
    broken.write_bytes(open(video_data[0]["video"], "rb").read()[:300])
    rec = {**video_data[0], "id": "v", "video": str(broken), "experts": {"A1": "precomputed"}}
    backend = _ImageBackend(lambda p: "A1, A2" if p.startswith("You select") else "B")
    out = mexa.run(rec, backend, P)
    assert "cut.mp4" in out["router"]["frames_error"]
    assert isinstance(backend.calls[0][1][0]["content"], str)  # the router saw text only
    assert set(out["experts"]) == {"A1"} and "cut.mp4" in out["expert_errors"]["A2"]


def test_vlm_and_ocr_experts_through_the_engine_with_a_tiny_vlm(
    video_data, tmp_path_factory, monkeypatch
):
    """The `vlm` captioner and the OCR-by-VLM fallback on the real engine backend (a tiny
    random VLM): each frame's line is what the engine answers for that frame's pixels."""
    from transformers import AutoTokenizer

    from jaxmm.generate.backends import EngineBackend
    from tests.generate.fixtures import build_tiny_vlm, build_tokenizer

    monkeypatch.setitem(sys.modules, "pytesseract", None)  # not installed: OCR by the VLM
    tok = AutoTokenizer.from_pretrained(build_tokenizer(tmp_path_factory.mktemp("tok")))
    _, _, engine = build_tiny_vlm(tok, max_seq_len=256)
    backend = EngineBackend(engine)
    rec = {**video_data[0], "id": "v", "frame_budget": 2}
    params = GenerationParams(max_tokens=4)
    x = ExpertInput(rec, backend, params)
    clip = x.clip
    for skill in ("A2", "E1"):
        ids = []
        for frame, t in zip(clip.frames, clip.timestamps_s, strict=True):
            parts = mexa_experts.frame_parts(frame[None], t[None])
            text = {"type": "text", "text": mexa_experts.CAPTION_PROMPTS[skill]}
            ids.append(engine.chat_inputs([{"role": "user", "content": [*parts, text]}])[0])
        # The frames' own pixels, not the PNGs in the parts: the parts carried them intact.
        got = engine.generate(ids, params, [f[None] for f in clip.frames])
        times = clip.timestamps_s
        want = [f"[{t:.2f} s] {c.text.strip()}" for t, c in zip(times, got, strict=True)]
        assert mexa_experts.run_expert(skill, x) == "\n".join(want)
    assert not engine.has_work()
