"""The `mf2` pipeline with `ScriptedBackend`: one conversation per claim (a pair's claims never
together), every prompt style and setting's prompt, every parser through the runtime, the
metrics file against hand-computed values, resume without repeated calls, video settings'
NotImplementedError and the image-part interface, and the launcher end to end."""

import json
import subprocess
import sys

import pytest

from jaxmm import pipelines
from jaxmm.data import movies_synth as ms
from jaxmm.generate.backends import ImageInputError
from jaxmm.generate.call_cache import CachedBackend
from jaxmm.generate.params import GenerationParams
from jaxmm.io.jsonl import read_jsonl, write_jsonl
from jaxmm.pipelines import mf2
from jaxmm.pipelines.runtime import run_pipeline
from tests.generate.scripted import ScriptedBackend, scripted_openai_server

pytestmark = pytest.mark.filterwarnings("ignore:os.fork:RuntimeWarning")


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    root = tmp_path_factory.mktemp("mf2")
    ms.write_dataset(str(root), n=2, seed=0, video=False)
    return str(root)


def _claim_of(prompt: str) -> str:
    return prompt.split("Claim: ", 1)[1].split("\n", 1)[0]


def _oracle(true_claims: set[str], style: str):
    """Answers every claim correctly in the style's own format."""

    def answer(prompt: str) -> str:
        word = "TRUE" if _claim_of(prompt) in true_claims else "FALSE"
        return {
            "explanation": f"The subtitles say so. <answer>{word}</answer>",
            "explanation_free": f"Reasoning about it, the claim is {word.lower()}.",
            "direct": f"<answer>{word}</answer>",
            "direct_free": word,
        }[style]

    return answer


@pytest.mark.parametrize("style", mf2.STYLES)
def test_each_claim_alone_and_style_prompts(release, tmp_path, style):
    records = mf2.build_records(release, mf2.TEXT_SETTINGS, [style])
    n_pairs = len(records) // 3
    write_jsonl(tmp_path / "in.jsonl", records)
    truths = {r["true_claim"] for r in records}
    backend = ScriptedBackend(_oracle(truths, style))
    report = run_pipeline(
        pipelines.get("mf2"),
        tmp_path / "in.jsonl",
        tmp_path / "out.jsonl",
        backend,
        progress=False,
    )
    assert report.calls == 2 * len(records)
    fibs = {r["false_claim"] for r in records}
    for _, conv, _ in backend.calls:
        (message,) = conv
        prompt = message["content"]
        assert isinstance(prompt, str) and prompt.endswith(mf2.PROMPTS[style])
        shown = [c for c in truths | fibs if f"Claim: {c}\n" in prompt]
        assert len(shown) == 1  # one claim per conversation, its pair never alongside
    for setting in mf2.TEXT_SETTINGS:
        m = report.metrics
        assert m[f"{setting}/{style}/pairwise_accuracy"] == 1.0
        assert m[f"{setting}/{style}/pairs"] == n_pairs
        assert m[f"{setting}/{style}/none_rate"] == 0.0


def test_settings_show_their_context(release):
    records = {r["setting"]: r for r in mf2.build_records(release, mf2.TEXT_SETTINGS, ["direct"])}
    transcript_line = "I brought you the"
    synopsis_word = "First, "
    prompts = {s: mf2.claim_messages(r, r["true_claim"])[0]["content"] for s, r in records.items()}
    assert transcript_line not in prompts["statement"] and synopsis_word not in prompts["statement"]
    assert transcript_line in prompts["transcripts"] and synopsis_word not in prompts["transcripts"]
    assert synopsis_word in prompts["synopsis"] and transcript_line not in prompts["synopsis"]
    assert prompts["statement"].startswith("Is the following claim")


def test_parsers_and_metrics_through_the_runtime(release, tmp_path):
    """Four pairs with hand-written answers; every parser's numbers computed by hand."""
    records = mf2.build_records(release, ["statement"], ["explanation"])[:4]
    answers = {  # (answer on the fact, answer on the fib)
        0: ("<answer>TRUE</answer>", "<answer>FALSE</answer>"),  # all parsers: correct
        1: ("false, no: true", "true? no, false"),  # no tags: first wrong, last right
        2: ("<answer>TRUE</answer>", "It is true. <answer>FALSE</answer>"),  # first: fib TRUE
        3: ("I do not know.", "<answer>FALSE</answer>"),  # fact unparsable everywhere
    }
    table = {}
    for i, r in enumerate(records):
        table[r["true_claim"]], table[r["false_claim"]] = answers[i]
    write_jsonl(tmp_path / "in.jsonl", records)
    backend = ScriptedBackend(lambda p: table[_claim_of(p)])
    report = run_pipeline(
        mf2.PIPELINE, tmp_path / "in.jsonl", tmp_path / "out.jsonl", backend, progress=False
    )
    m = report.metrics
    want = {  # parser: (pairwise, tpr, tnr, none)
        "strict": (2 / 4, 2 / 4, 3 / 4, 3 / 8),  # pair 1 untagged, pair 3 fact untagged
        "first": (1 / 4, 2 / 4, 2 / 4, 1 / 8),  # 1: fact false / fib true; 2: fib "true"
        "last": (3 / 4, 3 / 4, 4 / 4, 1 / 8),
        "strict_fallback": (2 / 4, 2 / 4, 3 / 4, 1 / 8),  # 1 falls back to first
    }
    for parser, (acc, tpr, tnr, none) in want.items():
        p = f"statement/explanation/parser={parser}/"
        got = (m[p + "pairwise_accuracy"], m[p + "tpr"], m[p + "tnr"], m[p + "none_rate"])
        assert got == pytest.approx((acc, tpr, tnr, none)), parser
    # the headline uses the style's default parser (explanation: strict with fallback)
    assert m["statement/explanation/pairwise_accuracy"] == pytest.approx(2 / 4)
    outs = read_jsonl(tmp_path / "out.jsonl")
    assert [o["correct"] for o in outs] == [True, False, True, False]
    assert outs[1]["verdicts"]["first"] == {"true": False, "false": True}
    # a rerun repeats no call and rewrites nothing
    again = run_pipeline(
        mf2.PIPELINE, tmp_path / "in.jsonl", tmp_path / "out.jsonl", backend, progress=False
    )
    assert again.written == 0 and again.calls == 0 and len(backend.calls) == 8


class _Killed(ScriptedBackend):
    """Fails once `budget` calls are made, like a killed process (earlier calls are cached)."""

    def __init__(self, respond, budget):
        super().__init__(respond)
        self.budget = budget

    def chat(self, conversations, params):
        if len(self.calls) + len(conversations) > self.budget:
            raise RuntimeError("killed")
        return super().chat(conversations, params)


def test_killed_run_resumes_without_repeating_a_call(release, tmp_path):
    """Killed with a budget of 5 calls: a pair's 2 claims go in one batched call, so 2 pairs
    (4 calls) are answered and the third pair's batch fails; the rerun makes only the 8
    missing calls (4 pairs; an answered pair not yet written comes from the cache) and
    writes the same file as an uninterrupted run."""
    records = mf2.build_records(release, ["statement", "synopsis"], ["direct"])[:6]
    write_jsonl(tmp_path / "in.jsonl", records)
    oracle = _oracle({r["true_claim"] for r in records}, "direct")
    full = ScriptedBackend(oracle)
    run_pipeline(mf2.PIPELINE, tmp_path / "in.jsonl", tmp_path / "a.jsonl", full, progress=False,
                 cache_dir=tmp_path / "cache_a")  # fmt: skip
    killed = _Killed(oracle, budget=5)
    with pytest.raises(RuntimeError, match="killed"):
        run_pipeline(mf2.PIPELINE, tmp_path / "in.jsonl", tmp_path / "b.jsonl", killed,
                     concurrency=1, progress=False, cache_dir=tmp_path / "cache_b")  # fmt: skip
    n_before = len(read_jsonl(tmp_path / "b.jsonl"))
    assert len(killed.calls) == 4 and 0 < n_before <= 2
    second = ScriptedBackend(oracle)
    report = run_pipeline(mf2.PIPELINE, tmp_path / "in.jsonl", tmp_path / "b.jsonl", second,
                          progress=False, cache_dir=tmp_path / "cache_b")  # fmt: skip
    assert (report.done_before, report.written) == (n_before, 6 - n_before)
    assert report.calls == len(second.calls) == 8
    asked = [c[1][-1]["content"] for c in killed.calls + second.calls]
    assert len(asked) == len(set(asked)) == 2 * len(records)  # every claim asked exactly once
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()


def test_bad_records_are_reported(release, tmp_path):
    good = mf2.build_records(release, ["transcripts"], ["direct"])[0]
    bad = [
        {**good, "id": "a", "style": "chatty"},
        {**good, "id": "b", "transcripts": ""},
        {**good, "id": "c", "setting": "smell"},
        {**good, "id": "d", "false_claim": good["true_claim"]},
    ]
    write_jsonl(tmp_path / "in.jsonl", [good, *bad])
    report = run_pipeline(
        mf2.PIPELINE,
        tmp_path / "in.jsonl",
        tmp_path / "out.jsonl",
        ScriptedBackend({}, default="TRUE"),
        progress=False,
    )
    errors = [b["error"] for b in report.bad_records]
    assert report.written == 1 and len(errors) == 4
    assert "in.jsonl:2: field 'style'" in errors[0]
    assert "needs a non-empty field 'transcripts'" in errors[1]
    assert "unknown MF² setting 'smell'" in errors[2]
    assert "'false_claim' equals" in errors[3]


class _ImageBackend(ScriptedBackend):
    """A backend double that declares image inputs and records the content parts."""

    accepts_images = True

    def chat(self, conversations, params):
        self.calls.extend(("chat", c, params) for c in conversations)
        return ["<answer>TRUE</answer>" for _ in conversations]


def test_video_settings_need_image_inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("mf2v")
    ms.write_dataset(str(root), n=1, seed=1)
    (record,) = mf2.build_records(str(root), ["video_synopsis"], ["direct"], frame_budget=4)[:1]
    with pytest.raises(
        ImageInputError, match=r"\['video_synopsis'\] send video frames .*'scripted'"
    ):
        mf2.run(record, ScriptedBackend({}, default="TRUE"), GenerationParams())
    backend = _ImageBackend({})
    assert CachedBackend(backend, tmp_path_factory.mktemp("cache")).accepts_images  # passed on
    mf2.run(record, backend, GenerationParams())
    (_, conv, _), _ = backend.calls
    parts = conv[0]["content"]
    assert "synopsis of a movie" in parts[0]["text"] and "4 frames" in parts[0]["text"]
    images = [p for p in parts if p["type"] == "image_url"]
    times = [p["text"] for p in parts[1:-1] if p["type"] == "text"]
    assert len(images) == 4 and times == ["[1.50 s]", "[4.50 s]", "[7.50 s]", "[10.50 s]"]
    assert images[0]["image_url"]["url"].startswith("data:image/png;base64,")
    assert parts[-1]["text"].endswith(mf2.PROMPTS["direct"])


@pytest.mark.slow  # three subprocesses: ~30 s on a loaded 2-core machine
def test_launcher_end_to_end(release, tmp_path):
    truths = {r["true_claim"] for r in mf2.build_records(release, ["statement"], ["direct"])}
    with scripted_openai_server(_oracle(truths, "direct_free")) as (url, seen):
        cmd = [
            sys.executable,
            "launch/mf2.py",
            f"--data_dir={release}",
            f"--out_dir={tmp_path}/o",
            f"--backend=openai:{url},model=m",
            "--settings=statement,synopsis",
            "--styles=direct_free",
            "--progress=false",
        ]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        assert "| statement | direct_free | 14 | 1.000 |" in out.stdout
        calls = len(seen)
        again = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        assert json.loads(again.stdout.strip().splitlines()[-1])["model_calls"] == 0
        assert len(seen) == calls == 2 * 14 * 2
        cmd[-3] = "--settings=video"
        bad = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        assert bad.returncode == 1 and "['video'] send video frames" in bad.stderr
        assert "takes no images" in bad.stderr
