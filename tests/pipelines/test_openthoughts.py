"""OpenThoughts curation: every stage with hand-computed values, the difficulty parser, the
code exception to dedup, N seeded answers per question, resume, bad records, the output rows."""

import json
import os
import sqlite3
import subprocess
import sys

import pytest

from jaxmm import pipelines
from jaxmm.data.openthoughts import (
    assistant_turn,
    exact_dedup,
    mix,
    read_sharegpt,
    select,
    to_sharegpt,
)
from jaxmm.data.reasoning_questions import SOURCE_RANKING, generate_questions
from jaxmm.generate.params import GenerationParams
from jaxmm.pipelines.openthoughts import (
    ANSWER_SYSTEM,
    LENGTH_SYSTEM,
    STAGE_FILES,
    CurationConfig,
    parse_difficulty,
    run_openthoughts,
)
from jaxmm.pipelines.runtime import run_pipeline
from tests.generate.scripted import ScriptedBackend, scripted_openai_server

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _write(path, records):
    with open(path, "w") as f:
        for r in records:
            f.write((r if isinstance(r, str) else json.dumps(r)) + "\n")
    return path


def _read(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


# ------------------------------------------------------------------ generator


def test_generator_is_deterministic_with_domains_sources_and_duplicates():
    qs = generate_questions(24, seed=0)
    assert qs == generate_questions(24, seed=0) and qs != generate_questions(24, seed=1)
    assert len(qs) == 24 and len({q["id"] for q in qs}) == 24
    assert [q["domain"] for q in qs[:4]] == ["math", "code", "math", "code"]
    for q in qs:
        assert q["source"] in SOURCE_RANKING[q["domain"]] and 1 <= q["difficulty"] <= 10
    # ids 4 and 14 copy math questions 0 and 10; ids 9 and 19 copy code questions 5 and 15
    for dup, orig in [(4, 0), (14, 10), (9, 5), (19, 15)]:
        assert {**qs[dup], "id": qs[orig]["id"]} == qs[orig]
    assert [qs[i]["domain"] for i in (4, 14, 9, 19)] == ["math", "math", "code", "code"]
    with pytest.raises(ValueError, match="n must be a positive integer"):
        generate_questions(0)


# ------------------------------------------------------------------ difficulty parser


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Difficulty: 7", (7, "labelled")),
        ("The difficulty level is 6.5 because of the recursion.", (7, "labelled")),
        ("difficulty rating = **3**", (3, "labelled")),
        ("Difficulty: 10/10", (10, "labelled")),
        ("I would say 8/10.", (8, "out_of_10")),
        ("Step 1 done. Overall 4 out of 10", (4, "out_of_10")),
        ("Probably a 2, since it is a single loop", (2, "first_number")),
        ("7.49", (7, "first_number")),
        ("Difficulty: 11", (None, "out_of_range")),
        ("0", (None, "out_of_range")),
        ("12 out of 10!", (None, "out_of_range")),
        ("It is quite hard.", (None, "no_number")),
        ("", (None, "no_number")),
    ],
)
def test_parse_difficulty_every_rule(text, expected):
    assert parse_difficulty(text) == expected


# ------------------------------------------------------------------ pure stages


def _q(qid, domain, source, question, difficulty=None, **extra):
    return {"id": qid, "domain": domain, "source": source, "question": question,
            "difficulty": difficulty, **extra}  # fmt: skip


def test_mix_keeps_the_best_sources_per_domain():
    recs = [_q("a", "math", "s1", "A"), _q("b", "math", "s3", "B"), _q("c", "math", "s2", "C"),
            _q("d", "code", "c1", "D"), _q("e", "bio", "x", "E")]  # fmt: skip
    kept, m = mix(recs, {"math": ["s1", "s2", "s3"], "code": ["c9", "c1"]}, 2)
    assert [r["id"] for r in kept] == ["a", "c", "d", "e"]  # bio has no ranking: kept whole
    assert (m["in"], m["out"], m["sources_dropped"]) == (5, 4, ["math/s3"])
    kept, m = mix(recs, {"math": ["s1", "s2", "s3"], "code": ["c9", "c1"]}, 1)
    assert [r["id"] for r in kept] == ["a", "e"] and m["out_by_domain"] == {"bio": 1, "math": 1}
    with pytest.raises(ValueError, match="sources_per_domain"):
        mix(recs, {}, 0)


def test_select_keeps_the_top_fraction_per_domain_by_score():
    scores = [("m0", "math", 10), ("m1", "math", 30), ("m2", "math", 20), ("m3", "math", None),
              ("m4", "math", 30), ("c0", "code", 5), ("c1", "code", None)]  # fmt: skip
    recs = [_q(i, d, "s", i, filter_score=s) for i, d, s in scores]
    kept, m = select(recs, 0.5)
    # math: ceil(2.5) = 3 of [10, 30, 20, None, 30] -> m1, m4 (30, tie by order), m2 (20);
    # code: ceil(1.0) = 1 -> c0 (an unscored record ranks last)
    assert [r["id"] for r in kept] == ["m1", "m2", "m4", "c0"]
    assert (m["in"], m["out"], m["unscored"]) == (7, 4, 2)
    assert m["out_by_domain"] == {"code": 1, "math": 3}
    assert [r["id"] for r in select(recs, 1.0)[0]] == [i for i, _, _ in scores]
    with pytest.raises(ValueError, match="keep_fraction"):
        select(recs, 0)


def test_exact_dedup_removes_math_duplicates_but_never_code():
    recs = [_q("m0", "math", "s", "Solve x+1=2."), _q("m1", "math", "t", "Solve  x+1=2. "),
            _q("m2", "math", "s", "solve x+1=2."), _q("c0", "code", "s", "Reverse a string."),
            _q("c1", "code", "t", "Reverse a string."),
            _q("s0", "science", "s", "Solve x+1=2.")]  # fmt: skip
    kept, m = exact_dedup(recs)
    # m1 equals m0 up to whitespace; m2 differs in case; code and other domains are separate
    assert [r["id"] for r in kept] == ["m0", "m2", "c0", "c1", "s0"]
    assert (m["in"], m["out"], m["removed"]) == (6, 5, 1)
    assert m["removed_by_domain"] == {"math": 1}
    assert m["duplicates_kept_by_domain"] == {"code": 1}
    assert [r["id"] for r in exact_dedup(recs, no_dedup_domains=())[0]] == [
        "m0", "m2", "c0", "s0"]  # fmt: skip


def test_assistant_turn_and_sharegpt_rows():
    assert assistant_turn("  <think> x = 1 </think> The answer is 1. ") == (
        "<think>\nx = 1\n</think>\n\nThe answer is 1.", True)  # fmt: skip
    assert assistant_turn("First add.\n\nSo 4.\n") == (
        "<think>\nFirst add.\n\nSo 4.\n</think>\n\nSo 4.", False)  # fmt: skip
    answered = [_q("q1", "math", "s", "1+3?", 2, answers=["<think>a</think>4", "So 4."])]
    rows, m = to_sharegpt(answered)
    assert rows[1] == {
        "id": "q1-a1", "question_id": "q1", "domain": "math", "source": "s", "difficulty": 2,
        "conversations": [{"from": "human", "value": "1+3?"},
                          {"from": "gpt", "value": "<think>\nSo 4.\n</think>\n\nSo 4."}],
    }  # fmt: skip
    # assistant values: "<think>\na\n</think>\n\n4" (7+1+1+1+8+2+1 = 21 chars), 29 chars
    assert (m["in"], m["out"], m["answers_per_question"]) == (1, 2, 2.0)
    assert m["mean_response_chars"] == 25.0 and m["responses_with_model_think_tags"] == 1
    assert m["difficulty_histogram"]["2"] == 2 and m["difficulty_histogram"]["none"] == 0


# ------------------------------------------------------------------ model stages


def test_filter_stage_rates_code_and_measures_math_responses(tmp_path):
    src = _write(tmp_path / "in.jsonl", [
        _q("c0", "code", "s", "Reverse a string.", stage="filter", filter="difficulty"),
        _q("c1", "code", "s", "Sort a list.", stage="filter", filter="difficulty"),
        _q("m0", "math", "s", "1+1?", stage="filter", filter="length"),
    ])  # fmt: skip

    def respond(prompt):
        if "Reverse a string." in prompt:
            return "Difficulty: 2"
        return "I'd say 9/10" if "Sort a list." in prompt else "two, since 1+1=2"

    backend = ScriptedBackend(respond)
    out = tmp_path / "out.jsonl"
    params = GenerationParams(max_tokens=8)
    report = run_pipeline(pipelines.get("openthoughts"), src, out, backend, params=params,
                          progress=False, concurrency=1)  # fmt: skip
    rows = _read(out)
    assert [(r["filter_score"], r["rated_difficulty"], r["filter_parse"]) for r in rows] == [
        (2, 2, "labelled"), (9, 9, "out_of_10"), (16, None, "length")]  # fmt: skip
    assert "stage" not in rows[0] and rows[0]["question"] == "Reverse a string."
    length_call = backend.calls[2][1]
    assert length_call == [{"role": "system", "content": LENGTH_SYSTEM},
                           {"role": "user", "content": "1+1?"}]  # fmt: skip
    m = report.metrics
    assert (m["in"], m["out"], m["rated_difficulty_2"], m["rated_difficulty_9"]) == (3, 3, 1, 1)
    assert (m["parse_labelled"], m["parse_out_of_10"], m["parse_length"]) == (1, 1, 1)
    assert m["mean_filter_response_chars"] == (13 + 12 + 16) / 3


def test_n_answers_use_distinct_seeds_and_distinct_cache_keys(tmp_path):
    src = _write(tmp_path / "in.jsonl", [
        _q("a", "math", "s", "1+1?", stage="answers", n_answers=3),
        _q("b", "math", "s", "2+2?", stage="answers", n_answers=3),
    ])  # fmt: skip
    backend = ScriptedBackend(lambda p: f"<think>thinking about {p}</think>done")
    out = tmp_path / "out.jsonl"
    params = GenerationParams(max_tokens=8, temperature=0.7, seed=5)
    report = run_pipeline(pipelines.get("openthoughts"), src, out, backend, params=params,
                          progress=False, concurrency=1)  # fmt: skip
    assert [c[2].seed for c in backend.calls] == [5, 6, 7, 5, 6, 7]
    assert backend.calls[0][1][0] == {"role": "system", "content": ANSWER_SYSTEM}
    rows = _read(out)
    assert rows[0]["answer_seeds"] == [5, 6, 7] and len(rows[1]["answers"]) == 3
    keys = sqlite3.connect(str(out) + ".cache/calls.sqlite").execute("SELECT key FROM calls")
    assert len({k for (k,) in keys}) == 6  # one cache entry per (question, seed)
    assert (report.calls, report.metrics["answers_per_question"]) == (6, 3.0)


def test_bad_model_stage_records_are_named(tmp_path):
    src = _write(tmp_path / "in.jsonl", [
        _q("a", "math", "s", "1+1?", stage="rate"),
        _q("b", "math", "s", "1+1?", stage="filter", filter="longest"),
        _q("c", "math", "s", "1+1?", stage="answers", n_answers=0),
        _q("d", "math", "s", "", stage="answers"),
        _q("e", "math", "s", "1+1?", 12, stage="answers"),
    ])  # fmt: skip
    report = run_pipeline(pipelines.get("openthoughts"), src, tmp_path / "o.jsonl",
                          ScriptedBackend({}), progress=False)  # fmt: skip
    errors = [b["error"] for b in report.bad_records]
    assert [e.split(": ", 1)[0] for e in errors] == [f"{src}:{i}" for i in range(1, 6)]
    for err, field in zip(errors, ["'stage'", "'filter'", "'n_answers'", "'question'",
                                   "'difficulty'"], strict=True):  # fmt: skip
        assert f"field {field}" in err
    assert report.written == 0


# ------------------------------------------------------------------ driver


QUESTIONS = [  # hand-made: m4's source is dropped by the mix; m3 repeats m1; c2 repeats c1
    _q("m1", "math", "algebra", "Q1", 6), _q("m2", "math", "algebra", "Q2", 5),
    _q("m3", "math", "arith", "Q1", 6), _q("m4", "math", "sequence", "Q4", 9),
    _q("m5", "math", "arith", "Q5", 7), _q("c1", "code", "lists", "C1", 3),
    _q("c2", "code", "strings", "C1", 3), _q("c3", "code", "lists", "C3", 8),
    _q("c4", "code", "strings", "C4", 1),
]  # fmt: skip
DIFFICULTY = {q["question"]: q["difficulty"] for q in QUESTIONS}
RANKING = {"math": ["algebra", "arith", "sequence"], "code": ["lists", "strings"]}


def _teacher():
    """Ratings = the known difficulty; length probe = 10 chars per difficulty point; answers:
    math with <think> tags, code without."""

    def respond(key):
        system, question = key.split("\n", 1)
        if question.startswith("Rate how difficult"):
            return f"Difficulty: {DIFFICULTY[question.rsplit(chr(10), 1)[1]]}"
        if system == LENGTH_SYSTEM:
            return "w" * (10 * DIFFICULTY[question])
        if question.startswith("Q"):
            return f"<think>work on {question}</think>answer {question}"
        return f"def f():\n    pass  # {question}"

    key = lambda conv: (conv[0]["content"] if len(conv) > 1 else "") + "\n" + conv[-1]["content"]
    return ScriptedBackend(respond, chat_key=key)


def _config(**kw):
    base = dict(ranking=RANKING, keep_fraction=0.75, n_answers=2,
                filter_params=GenerationParams(max_tokens=8),
                answer_params=GenerationParams(max_tokens=8, temperature=0.7, seed=0))  # fmt: skip
    return CurationConfig(**(base | kw))


def test_driver_runs_every_stage_and_a_rerun_calls_nothing(tmp_path):
    qfile = _write(tmp_path / "questions.jsonl", QUESTIONS)
    backend, out = _teacher(), tmp_path / "ot"
    s = run_openthoughts(out, backend, _config(), questions=qfile, concurrency=1, progress=False)
    ids = {stage: [r["id"] for r in _read(out / f)] for stage, f in STAGE_FILES.items()}
    assert ids["mix"] == ["m1", "m2", "m3", "m5", "c1", "c2", "c3", "c4"]  # sequence dropped
    # filter, keep ceil(0.75 * 4) = 3 per domain: math by length (60, 50, 60, 70) drops m2;
    # code by rating (3, 3, 8, 1) drops c4
    assert ids["filter"] == ["m1", "m3", "m5", "c1", "c2", "c3"]
    assert ids["dedup"] == ["m1", "m5", "c1", "c2", "c3"]  # m3 = m1 removed; c2 = c1 kept
    assert ids["sharegpt"] == [f"{q}-a{k}" for q in ids["dedup"] for k in (0, 1)]
    assert [(s[k]["in"], s[k]["out"]) for k in STAGE_FILES] == [
        (9, 9), (9, 8), (8, 8), (8, 6), (6, 5), (5, 5), (5, 10)]  # fmt: skip
    assert s["dedup"]["removed"] == 1 and s["dedup"]["duplicates_kept_by_domain"] == {"code": 1}
    # same prompts are cache hits (m3 = m1, c2 = c1): 6 + 2 filter calls, 8 + 2 answer calls
    assert (s["filter_scores"]["calls"], s["filter_scores"]["cache_hits"]) == (6, 2)
    assert (s["answers"]["calls"], s["answers"]["cache_hits"]) == (8, 2)
    assert len(backend.calls) == 14
    assert s["filter_scores"]["rated_difficulty_3"] == 2 and s["filter_scores"]["parse_length"] == 4
    assert s["filter"]["difficulty_histogram"]["8"] == 1
    final = s["sharegpt"]
    assert final["answers_per_question"] == 2.0 and final["responses_with_model_think_tags"] == 4
    hist = {k: v for k, v in final["difficulty_histogram"].items() if v}
    assert hist == {"3": 4, "6": 2, "7": 2, "8": 2}  # math: source difficulty; code: rated
    for stage, f in STAGE_FILES.items():
        metrics = json.load(open(out / (f + ".metrics.json")))
        assert metrics["out"] == s[stage]["out"]

    again = run_openthoughts(out, backend, _config(), questions=qfile, progress=False)
    assert len(backend.calls) == 14 and all(again[k]["skipped"] for k in STAGE_FILES)
    assert again["answers"]["out"] == 5

    # a third answer per question: only answers and sharegpt run; seeds 0, 1 come from the cache
    third = run_openthoughts(
        out, backend, _config(n_answers=3), questions=qfile, concurrency=1, progress=False
    )
    assert [k for k in STAGE_FILES if not third[k]["skipped"]] == ["answers", "sharegpt"]
    assert (third["answers"]["calls"], third["sharegpt"]["out"]) == (4, 15)
    assert len(backend.calls) == 18


def test_output_rows_read_back_with_the_loader(tmp_path):
    qfile = _write(tmp_path / "questions.jsonl", QUESTIONS)
    out = tmp_path / "ot"
    run_openthoughts(out, _teacher(), _config(), questions=qfile, progress=False)
    rows = read_sharegpt(out / STAGE_FILES["sharegpt"])
    assert len(rows) == 10
    assert rows[0] == {
        "id": "m1-a0", "question_id": "m1", "domain": "math", "source": "algebra",
        "difficulty": 6,
        "conversations": [{"from": "human", "value": "Q1"},
                          {"from": "gpt", "value": "<think>\nwork on Q1\n</think>\n\nanswer Q1"}],
    }  # fmt: skip
    code = rows[4]["conversations"][1]["value"]  # c1: no tags from the model -> wrapped
    assert code == "<think>\ndef f():\n    pass  # C1\n</think>\n\npass  # C1"
    bad = _write(tmp_path / "bad.jsonl", [rows[0], {**rows[1], "conversations": [
        {"from": "human", "value": "Q"}, {"from": "gpt", "value": "no trace"}]}])  # fmt: skip
    with pytest.raises(ValueError, match=f"{bad}:2: the last turn must be from 'gpt'"):
        read_sharegpt(bad)


def test_bad_question_records_are_reported_and_the_rest_runs(tmp_path):
    qfile = _write(tmp_path / "questions.jsonl", [
        QUESTIONS[0], "{not json", {"id": "x1", "domain": "math", "source": "algebra"},
        _q("x2", 7, "algebra", "Q7"), _q("x3", "math", "algebra", "Q8", 11), QUESTIONS[0],
    ])  # fmt: skip
    out = tmp_path / "ot"
    s = run_openthoughts(out, _teacher(), _config(), questions=qfile, progress=False)
    assert (s["source"]["in"], s["source"]["out"], s["source"]["bad_records"]) == (6, 1, 5)
    errors = [e["error"] for e in _read(out / (STAGE_FILES["source"] + ".errors.jsonl"))]
    assert errors[0].startswith(f"{qfile}:2: bad JSON")
    assert errors[1] == f"{qfile}:3: record lacks required field(s) ['question']"
    assert errors[2].startswith(f"{qfile}:4: field 'domain' must be a non-empty string")
    assert errors[3].startswith(f"{qfile}:5: field 'difficulty' must be an integer 1-10")
    assert errors[4].startswith(f"{qfile}:6: duplicate id 'm1'")
    assert s["sharegpt"]["out"] == 2
    with pytest.raises(ValueError, match="filter_method"):
        _config(filter_method="shortest")


def test_generated_questions_run_end_to_end(tmp_path):
    config = _config(ranking=SOURCE_RANKING, keep_fraction=0.5)
    backend = ScriptedBackend(lambda p: "Difficulty: 5 " + p[:20])
    s = run_openthoughts(tmp_path, backend, config, num_questions=20, progress=False)
    # 10 math, 10 code; the mix drops gen-math-sequence (records 6 and 12)
    assert (s["source"]["out"], s["mix"]["out"]) == (20, 18)
    assert s["mix"]["sources_dropped"] == ["math/gen-math-sequence"]
    assert s["sharegpt"]["out"] == 2 * s["dedup"]["out"]


def test_cli_runs_all_stages_against_an_openai_server_and_skips_them_on_rerun(tmp_path):
    out = tmp_path / "ot"
    with scripted_openai_server(lambda p: "Difficulty: 4") as (url, seen):
        cmd = [sys.executable, "launch/openthoughts.py", f"--out_dir={out}",
               f"--backend=openai:{url},model=teacher", "--num_questions=10", "--n_answers=2",
               "--max_tokens=8", "--concurrency=1", "--noprogress"]  # fmt: skip
        env = {**os.environ, "PYTHONPATH": ROOT}
        first = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        assert first.returncode == 0, first.stderr
        calls = len(seen)
        again = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        assert again.returncode == 0, again.stderr
        assert len(seen) == calls  # nothing repeated
    lines = again.stdout.strip().splitlines()
    assert [line.split(":")[0] for line in lines] == list(STAGE_FILES)
    assert all('"skipped": true' in line for line in lines)
    rows = read_sharegpt(out / STAGE_FILES["sharegpt"])
    assert rows and rows[0]["conversations"][1]["value"].startswith("<think>\nDifficulty: 4")
    bad = subprocess.run([*cmd[:2], f"--out_dir={out}", "--backend=nope:x"], cwd=ROOT, env=env,
                         capture_output=True, text=True)  # fmt: skip
    assert bad.returncode == 1 and "backend spec 'nope:x'" in bad.stderr
