"""ReAgent-V through the runtime with a scripted backend: the frames each mode shows, every
step's prompt and call count, the merge and the rewards per record, the metrics, resume with
no repeated call, bad records, and the SFT / DPO / GRPO files read by the post-training tasks
(a tiny SFT and DPO run on them is marked slow)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from jaxmm import config as config_lib
from jaxmm import tasks
from jaxmm.data import reagent_synth, rl_prompts
from jaxmm.data.sft_records import iter_raw_records, load_tokenizer, to_conversation
from jaxmm.generate.params import GenerationParams
from jaxmm.io.jsonl import read_jsonl, write_jsonl
from jaxmm.pipelines import reagent_data, reagent_v
from jaxmm.pipelines.runtime import run_pipeline
from jaxmm.tasks import dpo
from jaxmm.train import trainer as trainer_lib
from tests.generate.scripted import ScriptedBackend, scripted_openai_server

SUB_QUESTIONS = "1. Is the figure blue?\n2. Is it on the left?"
GOLD = ["A", "B", "C"]
INITIAL = ["B", "B", "A"]  # what the model answers first, per question
REPORTS = {  # (question, answer judged) -> reward; missing: unparsable text
    (0, "B"): 0.3,
    (0, "A"): 0.9,
    (1, "B"): 0.85,
    (2, "B"): 0.4,
}
REFLECTIONS = {  # question -> perspective -> reply
    0: {  # conservative 0.5 < 0.6, neutral 0.75 >= 0.7 -> neutral "A" (aggressive ignored)
        "conservative": '{"answer": "B", "confidence": 0.5}',
        "neutral": '{"answer": "A", "confidence": 0.75}',
        "aggressive": '{"answer": "C", "confidence": 0.9}',
    },
    1: {  # conservative 0.9 >= 0.6 -> "B", the initial answer: no second report
        "conservative": '{"answer": "B", "confidence": 0.9}',
        "neutral": '{"answer": "C", "confidence": 0.9}',
        "aggressive": '{"answer": "C", "confidence": 0.9}',
    },
    2: {  # conservative unparsable; neutral 0.5, aggressive 0.6: none accepted -> aggressive
        "conservative": "I keep my answer.",
        "neutral": '{"answer": "A", "confidence": 0.5}',
        "aggressive": '{"answer": "B", "confidence": 0.6}',
    },
}


def report(reward: float) -> str:
    scores = {d: 3 for d in reagent_v.critic.DIMENSIONS}
    return json.dumps(
        {"structured_feedback": f"r={reward}", "scores": scores, "scalar_reward": reward}
    )


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    root = tmp_path_factory.mktemp("rv")
    recs = reagent_synth.write_dataset(str(root), n=1, seed=0)
    for r, gold in zip(recs, GOLD, strict=True):
        r["answer"] = gold
        r["min_frames"] = 4
    return recs


def responder(records):
    def respond(prompt: str) -> str:
        (j,) = [j for j, r in enumerate(records) if r["question"] in prompt]
        if "Which tools do you need?" in prompt:
            return "I need asr."
        if "Write 1 to 3 short questions" in prompt:
            return SUB_QUESTIONS
        if "Evaluate the answer." in prompt:
            judged = re.search(r"A model answered: (\S+)", prompt).group(1)
            reward = REPORTS.get((j, judged))
            return "I think it is fine." if reward is None else report(reward)
        for p, reply in REFLECTIONS[j].items():
            if reagent_v.PROMPTS[p] in prompt:
                return reply
        assert prompt.endswith(reagent_v.PROMPTS["answer"]), prompt
        return INITIAL[j]

    return respond


def scripted_similarity(question, captions, frames):
    return np.array([1.0 if "figure" in c else 0.0 for c in captions])


PIPELINE = reagent_v.make_pipeline(scripted_similarity)


def both_modes(records):
    return [r | {"id": f"{r['id']}/{m}", "mode": m} for r in records for m in reagent_v.MODES]


def run(records, tmp_path, name="out.jsonl"):
    inp = tmp_path / "in.jsonl"
    write_jsonl(inp, both_modes(records))
    backend = ScriptedBackend(responder(records))
    rep = run_pipeline(PIPELINE, inp, tmp_path / name, backend, progress=False)
    return rep, backend, {o["id"]: o for o in read_jsonl(tmp_path / name)}


def test_every_step_merge_and_reward(records, tmp_path):
    rep, backend, out = run(records, tmp_path)
    # calls: reagent 8 (answer changed) / 7 (unchanged) / 8; baseline 1 each
    assert rep.calls == len(backend.calls) == 8 + 7 + 8 + 3
    events = [sorted(f for r in records for f in r["event_frames"])]
    r0, r1, r2 = (out[f"{r['id']}/reagent"] for r in records)
    for o in (r0, r1, r2):
        assert o["frames"] == events[0] and o["selection"]["method"] == "ecrs"
        assert o["tools_chosen"] == ["asr"] and "asr output:\n(no speech)" in o["prompt"]
        assert "ocr output" not in o["prompt"]
        assert o["sub_questions"] == ["Is the figure blue?", "Is it on the left?"]
        assert "a black screen" not in o["prompt"]  # only the event frames were selected
        assert o["prompt"].count("figure holding a white square") == 3  # one line per event
    assert (r0["final_answer"], r0["merge"]) == (
        "A",
        {"perspective": "neutral", "rule": "threshold"},
    )
    assert (r0["reward_initial"], r0["reward_final"], r0["correct"], r0["initial_correct"]) == (
        0.3,
        0.9,
        True,
        False,
    )
    assert (r1["final_answer"], r1["merge"]["perspective"]) == ("B", "conservative")
    assert (r1["reward_initial"], r1["reward_final"], r1["final_report_text"]) == (0.85, 0.85, None)
    assert (r2["final_answer"], r2["merge"]) == (
        "B",
        {"perspective": "aggressive", "rule": "highest_confidence"},
    )
    assert (r2["reward_initial"], r2["reward_final"], r2["correct"]) == (None, 0.4, False)
    assert sorted(e["step"] for e in r2["errors"]) == ["reflection/conservative", "report"]
    assert {e["reason"] for e in r2["errors"]} == {"no_json"}
    # the reflection prompt carries the critic's feedback (or says there is none)
    reflect = [
        c[1][-1]["content"]
        for c in backend.calls
        if reagent_v.PROMPTS["neutral"] in c[1][-1]["content"]
    ]
    assert sum("Critic feedback: r=0.3" in p for p in reflect) == 1
    assert sum("Critic feedback: (no usable critic report)" in p for p in reflect) == 1
    # baseline: uniform frames floor((k + .5) * 160 / 4), one call, no reflection
    b0 = out[f"{records[0]['id']}/baseline"]
    assert b0["frames"] == [20, 60, 100, 140] and b0["final_answer"] == "B"
    assert "asr output" not in b0["prompt"] and "a black screen" in b0["prompt"]
    m = rep.metrics
    assert m["reagent/accuracy"] == pytest.approx(2 / 3)
    assert m["reagent/initial_accuracy"] == pytest.approx(1 / 3)
    assert m["baseline/accuracy"] == pytest.approx(1 / 3)
    assert m["reagent/reward_initial_parsed"] == 2
    assert m["reagent/reward_initial_mean"] == pytest.approx((0.3 + 0.85) / 2)
    assert m["reagent/reward_final_mean"] == pytest.approx((0.9 + 0.85 + 0.4) / 3)
    assert m["reagent/errors/no_json"] == 2
    assert (m["reagent/merge/threshold"], m["reagent/merge/highest_confidence"]) == (2, 1)


def test_resume_repeats_no_call(records, tmp_path):
    first, _, _ = run(records, tmp_path)
    path = tmp_path / "out.jsonl"
    full = path.read_bytes()
    lines = full.splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:2]) + lines[2][:10])  # killed while writing record 3
    again, backend, _ = run(records, tmp_path)
    assert (again.done_before, again.written, again.calls) == (2, 4, 0)
    assert len(backend.calls) == 0 and path.read_bytes() == full
    path.unlink()  # even with the output gone, every call comes from the cache
    third, backend, _ = run(records, tmp_path)
    assert third.calls == 0 and path.read_bytes() == full


def test_bad_records_are_reported(records, tmp_path):
    good = records[0] | {"mode": "baseline"}
    bad = [
        good | {"id": "b1", "options": ["red"]},
        good | {"id": "b2", "mode": "fast"},
        good | {"id": "b3", "answer": "D"},
        good | {"id": "b4", "tools": {"radar": "x"}},
        good | {"id": "b5", "min_frames": 0},
    ]
    write_jsonl(tmp_path / "in.jsonl", [good, *bad])
    rep = run_pipeline(
        PIPELINE,
        tmp_path / "in.jsonl",
        tmp_path / "o.jsonl",
        ScriptedBackend(responder(records)),
        progress=False,
    )
    assert rep.written == 1
    fields = ["'options'", "'mode'", "'answer'", "'tools'", "'min_frames'"]
    assert [f in b["error"] for b, f in zip(rep.bad_records, fields, strict=True)] == [True] * 5


def test_frames_text_merges_runs():
    text = reagent_v.frames_text(["a", "a", "b", "a"], [0.0, 0.5, 1.0, 2.0])
    assert text.splitlines() == ["[0.00-0.50 s] a", "[1.00 s] b", "[2.00 s] a"]


@pytest.mark.parametrize(
    "reply, choice",
    [
        ("B", "B"),
        ("(C) red", "C"),
        ("The answer is A.", "A"),
        ("blue", "A"),
        ("I don't know", None),
        ("red or blue", None),
    ],
)
def test_parse_choice(reply, choice):
    assert reagent_v.parse_choice(reply, 3, ["blue", "red", "purple"]) == choice


def test_parse_tools():
    assert reagent_v.parse_tools("Scene graph, and OCR", ["ocr", "asr", "scene_graph"]) == [
        "ocr",
        "scene_graph",
    ]
    assert reagent_v.parse_tools("none", ["ocr"]) == []
    assert reagent_v.parse_tools("radar and asr", ["ocr"]) == []


# ------------------------------------------------------------------ data selection + files
def write_sets(records, tmp_path):
    _, _, out = run(records, tmp_path)
    counts = reagent_data.write_training_data(out.values(), tmp_path / "data")
    return counts, {k: read_jsonl(tmp_path / "data" / f"{k}.jsonl") for k in ("sft", "dpo", "grpo")}


def test_reward_based_selection(records, tmp_path):
    counts, sets = write_sets(records, tmp_path)
    ids = [r["id"] + "/reagent" for r in records]
    # SFT: best reward >= 0.8 -> q0 (0.9, final "A"), q1 (0.85, "B"); q2's best is 0.4
    assert [(s["id"], s["messages"][1]["content"]) for s in sets["sft"]] == [
        (ids[0], "A"),
        (ids[1], "B"),
    ]
    # DPO: answers differ and |r_final - r_initial| >= 0.2 -> q0 only (q2 has no initial reward)
    assert [(d["id"], d["chosen"], d["rejected"]) for d in sets["dpo"]] == [(ids[0], "A", "B")]
    # GRPO: initial reward <= 0.5 -> q0 (0.3), with the gold letter as reward reference
    assert [(g["id"], g["answer"]) for g in sets["grpo"]] == [(ids[0], "A")]
    assert counts == {
        "records": 3,
        "skipped_baseline": 3,
        "skipped_no_reward": 0,
        "sft": 2,
        "dpo": 1,
        "grpo": 1,
    }
    # each file through its task's own reader
    tok = load_tokenizer("smollm2")
    for where, rec in iter_raw_records(tmp_path / "data" / "sft.jsonl"):
        conv = to_conversation(rec, where)
        assert [m["role"] for m in conv.messages] == ["user", "assistant"]
    for i, d in enumerate(sets["dpo"]):
        chosen, rejected = dpo.pair_examples(tok, d, f"dpo.jsonl:{i + 1}")
        assert tok.decode(chosen.ids[chosen.weights.astype(bool)]).startswith("A")
    assert rl_prompts.load_prompts(tmp_path / "data" / "grpo.jsonl")[0]["messages"][0][
        "content"
    ].endswith(reagent_v.PROMPTS["answer"])


def test_selection_thresholds_are_inclusive():
    row = {
        "mode": "reagent",
        "id": "x",
        "prompt": "p",
        "initial_answer": "A",
        "final_answer": "B",
        "gold": None,
    }
    sets, _ = reagent_data.select_training_data(
        [row | {"reward_initial": 0.5, "reward_final": 0.8}]
    )
    # 0.8 >= 0.8 -> SFT; |0.8 - 0.5| = 0.3 >= 0.2 -> DPO; 0.5 <= 0.5 -> GRPO (no gold: no answer)
    assert [len(sets[k]) for k in ("sft", "dpo", "grpo")] == [1, 1, 1]
    assert "answer" not in sets["grpo"][0]
    sets, counts = reagent_data.select_training_data(
        [row | {"reward_initial": 0.51, "reward_final": 0.7}]
    )
    assert [len(sets[k]) for k in ("sft", "dpo", "grpo")] == [0, 0, 0]  # margin 0.19
    _, counts = reagent_data.select_training_data(
        [row | {"reward_initial": None, "reward_final": None}]
    )
    assert counts["skipped_no_reward"] == 1


def _tiny(config: str, **overrides):
    c = config_lib.load_config_file(config)
    values = {
        "progress_bar": False,
        "log_every_steps": 1,
        "checkpoint.every_steps": 100,
        "data.eval_examples": 0,
        "optimizer.warmup_steps": 0,
    } | overrides
    with c.unlocked():
        for k, v in values.items():
            config_lib.set_key(c, k, v)
    return c


@pytest.mark.slow
def test_tiny_sft_and_dpo_train_on_the_written_files(records, tmp_path):
    _, _ = write_sets(records, tmp_path)
    data = tmp_path / "data"
    for config, name, extra in (
        ("configs/sft.py:tiny", "sft", {"data.seq_len": 512, "data.packing": False}),
        ("configs/dpo.py:tiny", "dpo", {"data.seq_len": 512}),
    ):
        c = _tiny(
            config, num_steps=2, **{"data.train_files": (str(data / f"{name}.jsonl"),)}, **extra
        )
        workdir = tmp_path / f"run_{name}"
        trainer_lib.train(c, str(workdir), tasks.build(c))
        logged = [json.loads(line) for line in open(workdir / "metrics.jsonl")]
        losses = [m["train/loss"] for m in logged if "train/loss" in m]
        assert losses and all(np.isfinite(losses)), (name, logged)


# two subprocesses: 3 s on an idle machine, 26 s on the loaded one (under the slow mark's 30 s)
def test_launcher_end_to_end(records, tmp_path):
    data = os.path.dirname(os.path.dirname(records[0]["video"]))
    with scripted_openai_server(lambda p: '{"answer": "A", "confidence": 0.9}') as (url, seen):
        cmd = [
            sys.executable,
            "launch/reagent_v.py",
            f"--data_dir={data}",
            f"--out_dir={tmp_path}/o",
            f"--backend=openai:{url},model=m",
            "--limit=1",
            "--similarity=none",
            "--progress=false",
        ]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr
        # (clip000-q0's gold is A with seed 0.) reagent: tools, answer, sub-questions, report,
        # 3 reflections (answer letter
        # unchanged: no second report) = 7; baseline: 1
        assert len(seen) == 8
        assert "| reagent | 1 | 1.000 |" in out.stdout and "| baseline | 1 | 1.000 |" in out.stdout
        # ECRS finds clip000-q0's key frames (75, 76); uniform frames 72 and 77 miss them
        assert "reagent: key frame shown for 1.000 of 1 questions" in out.stdout
        assert "baseline: key frame shown for 0.000 of 1 questions" in out.stdout
        summary = json.loads(out.stdout.strip().splitlines()[-1])
        assert summary["train_data"]["skipped_no_reward"] == 1  # the reply is no report
        again = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        assert json.loads(again.stdout.strip().splitlines()[-1])["model_calls"] == 0
        assert len(seen) == 8
        for name in ("sft", "dpo", "grpo"):
            assert os.path.exists(tmp_path / "o" / "train_data" / f"{name}.jsonl")


@pytest.mark.torch
def test_launcher_with_siglip_similarity(records, tmp_path):
    """--similarity=siglip --siglip_dir: the records carry it, ECRS runs on the SigLIP scores;
    without --siglip_dir the launcher stops with a named error before any call."""
    from tests.models.tiny_siglip import write_tiny_siglip

    folder = write_tiny_siglip(str(tmp_path / "siglip"))
    data = os.path.dirname(os.path.dirname(records[0]["video"]))
    with scripted_openai_server(lambda p: '{"answer": "A", "confidence": 0.9}') as (url, seen):
        cmd = [
            sys.executable,
            "launch/reagent_v.py",
            f"--data_dir={data}",
            f"--out_dir={tmp_path}/o",
            f"--backend=openai:{url},model=m",
            "--limit=1",
            "--modes=reagent",
            "--similarity=siglip",
            "--progress=false",
        ]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        assert out.returncode != 0 and "--similarity=siglip needs --siglip_dir" in out.stderr
        assert not seen
        out = subprocess.run(
            [*cmd, f"--siglip_dir={folder}"], capture_output=True, text=True, timeout=300
        )
        assert out.returncode == 0, out.stderr
        assert len(seen) == 7 and "| reagent | 1 |" in out.stdout
    (o,) = read_jsonl(tmp_path / "o" / "out.jsonl")
    assert o["selection"]["method"] == "ecrs" and len(o["frames"]) >= 4
    assert read_jsonl(tmp_path / "o" / "input.jsonl")[0]["similarity"] == "siglip"


class _ImageBackend(ScriptedBackend):
    """Takes images: answers from the last text part, records every conversation."""

    accepts_images = True

    def chat(self, conversations, params):
        self.calls.extend(("chat", c, params) for c in conversations)
        texts = [
            c[-1]["content"] if isinstance(c[-1]["content"], str) else c[-1]["content"][-1]["text"]
            for c in conversations
        ]
        return [self.responses(t) for t in texts]


@pytest.mark.parametrize("mode", reagent_v.MODES)
def test_image_backend_gets_the_selected_frames_with_the_answer_prompt(records, mode):
    rec = records[0] | {"mode": mode}
    backend = _ImageBackend(responder(records))
    out = reagent_v.run_record(rec, backend, GenerationParams(), scripted_similarity)
    clip = reagent_v.read_video(rec["video"])
    with_parts = [c[0]["content"] for _, c, _ in backend.calls if isinstance(c[0]["content"], list)]
    assert len(with_parts) == 1  # the answer call only; tools, critic, reflections: text
    parts = with_parts[0]
    images = [p for p in parts if p["type"] == "image_url"]
    times = [p["text"] for p in parts[:-1] if p["type"] == "text"]
    assert len(images) == len(out["frames"]) >= 4
    assert times == [f"[{clip.timestamps_s[i]:.2f} s]" for i in out["frames"]]
    assert parts[-1]["text"].endswith(reagent_v.PROMPTS["answer"])
    assert out["initial_answer"] == INITIAL[0]
    text_backend = ScriptedBackend(responder(records))  # the caption text path is unchanged
    reagent_v.run_record(rec, text_backend, GenerationParams(), scripted_similarity)
    assert all(isinstance(c[0]["content"], str) for _, c, _ in text_backend.calls)


@pytest.mark.torch
def test_siglip_similarity_is_what_ecrs_receives(records, tmp_path, monkeypatch):
    """`similarity: siglip` with a tiny random SigLIP folder: ECRS gets the cosine of
    transformers' SiglipModel image embeds (SiglipImageProcessorPil on the decoded frames) and
    text embed (the question padded to max_length), computed here independently."""
    import torch
    import transformers

    from tests.models.tiny_siglip import write_tiny_siglip

    folder = write_tiny_siglip(str(tmp_path / "siglip"))
    seen = []
    select_frames = reagent_v.ecrs.select_frames
    monkeypatch.setattr(
        reagent_v.ecrs,
        "select_frames",
        lambda entropy, sim, **kw: seen.append(sim) or select_frames(entropy, sim, **kw),
    )
    rec = records[0] | {"similarity": "siglip"}
    reagent_v.validate(rec)
    sims = {"captions": scripted_similarity, "siglip": reagent_v.siglip_similarity(folder)}
    out = reagent_v.run_record(rec, ScriptedBackend(responder(records)), GenerationParams(), sims)
    assert out["selection"]["method"] == "ecrs" and len(seen) == 1

    frames = reagent_v.read_video(rec["video"]).frames
    pixels = transformers.SiglipImageProcessorPil.from_pretrained(folder)(
        images=list(frames), return_tensors="pt"
    )["pixel_values"]
    ids = transformers.AutoTokenizer.from_pretrained(folder)(
        [rec["question"]], padding="max_length", return_tensors="pt"
    )["input_ids"]
    hf = transformers.SiglipModel.from_pretrained(folder).eval()
    with torch.no_grad():
        hf_out = hf(input_ids=ids, pixel_values=pixels)
    want = (hf_out.image_embeds @ hf_out.text_embeds[0]).numpy()
    assert seen[0].shape == (len(frames),) and np.ptp(want) > 0.05  # frames differ
    np.testing.assert_allclose(seen[0], want, atol=1e-5)


def test_siglip_similarity_named_errors(records, tmp_path):
    with pytest.raises(FileNotFoundError, match="not a SigLIP folder"):
        reagent_v.siglip_similarity(tmp_path / "no_siglip")
    rec = records[0] | {"similarity": "siglip"}
    with pytest.raises(ValueError, match="'siglip' is not configured.*--siglip_dir"):
        reagent_v.run_record(
            rec, ScriptedBackend(responder(records)), GenerationParams(), scripted_similarity
        )
    with pytest.raises(ValueError, match="field 'similarity' must be one of"):
        reagent_v.validate(records[0] | {"similarity": "clip"})


@pytest.mark.slow
def test_tiny_grpo_trains_on_the_written_prompts(records, tmp_path):
    """`grpo.jsonl` as `configs/grpo.py:prompts` reads it (a tiny random Llama over a small
    chat tokenizer): one GRPO step on the written prompt, exact-match reward on its gold."""
    from tests.generate.fixtures import build_tokenizer

    _, sets = write_sets(records, tmp_path)
    assert len(sets["grpo"]) == 1 and sets["grpo"][0]["answer"] == "A"
    c = config_lib.load_config_file("configs/grpo.py:prompts")
    values = {
        "progress_bar": False,
        "log_every_steps": 1,
        "num_steps": 1,
        "batch_size": 8,  # one prompt per fake device of the test session (the record, 8x)
        "data.prompts_file": str(tmp_path / "data" / "grpo.jsonl"),
        "data.tokenizer": build_tokenizer(tmp_path / "tok"),
        "data.max_prompt_tokens": 2048,
        "rl.group_size": 2,
        "rl.max_completion_tokens": 2,
    }
    with c.unlocked():
        for k, v in values.items():
            config_lib.set_key(c, k, v)
    task = tasks.build(c)
    (ids,) = task.prompt_ids  # the chat-rendered prompt as token ids, ending in the reply turn
    assert all(isinstance(i, int) for i in ids)
    user = sets["grpo"][0]["messages"][-1]["content"]
    assert task.tokenizer.decode(ids).startswith(
        task.tokenizer.apply_chat_template(sets["grpo"][0]["messages"], tokenize=False)
    )
    assert user[-40:] in task.tokenizer.decode(ids)
    workdir = tmp_path / "run_grpo"
    trainer_lib.train(c, str(workdir), task)
    logged = [json.loads(line) for line in open(workdir / "metrics.jsonl")]
    losses = [m["train/loss"] for m in logged if "train/loss" in m]
    assert len(losses) == 1 and np.isfinite(losses[0]), logged
