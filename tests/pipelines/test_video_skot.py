"""Video-SKoT orchestration with scripted backends and hand-computed expectations: skill
phrases, taxonomy, skill-conditioned CoT + filter, SFT data, routing, resume.

The real MiniLM taxonomy and the LoRA adapter swap on a real (tiny) engine are in
test_video_skot_models.py.
"""

import json
import os

import numpy as np
import pytest

from jaxmm.data import movie_qa
from jaxmm.data.sft_records import to_conversation
from jaxmm.generate.backends import BackendError
from jaxmm.generate.params import GenerationParams
from jaxmm.pipelines import skot_answer, skot_cot, skot_experts, skot_skills, video_skot
from jaxmm.pipelines import skot_prompts as P
from jaxmm.pipelines import skot_taxonomy as tax
from jaxmm.pipelines.runtime import run_pipeline
from tests.generate.scripted import ScriptedBackend

Q = {
    "id": "q1",
    "context": "Subtitles: Ana, I brought you the key.\nSynopsis: Bo gives Ana the key.",
    "question": "Who gives the key to Ana?",
    "options": ["Bo", "Cy", "Di", "Ed"],
    "answer": "A",
}
OPTS = "A. Bo\nB. Cy\nC. Di\nD. Ed"
PARAMS = GenerationParams(max_tokens=64)


# ------------------------------------------------------------------ parsers
@pytest.mark.parametrize(
    "text, want",
    [
        ("Skill: Identify who gives an object.", "Identify who gives an object"),
        ('\n\n- "Track object handovers"\nmore text', "Track object handovers"),
        (
            "one two three four five six seven eight nine ten",
            "one two three four five six seven eight",
        ),
        ("  \n ", None),
        ("Skill: Skill: Skill: Sk", "Sk"),  # a label loop (SmolLM2 wrote one)
        ("Skill: Skill:", None),
    ],
)
def test_parse_skill_phrase(text, want):
    assert P.parse_skill_phrase(text) == want


@pytest.mark.parametrize(
    "text, want",
    [
        ("Step 1 ... Answer: B", "B"),
        ("The answer is (C). Later: Answer: D.", "D"),  # the last one counts
        ("B. Cy", "B"),
        ("**Answer:** **A**", None),  # bold label splits "Answer" from the colon: unread
        ("I think so", None),
    ],
)
def test_parse_final_answer(text, want):
    assert P.parse_final_answer(text) == want


def test_parse_judge_and_training_target():
    assert P.parse_judge("Yes, it is.") is True
    assert P.parse_judge("no") is False
    assert P.parse_judge("Maybe") is None
    assert skot_cot.training_target("Bo gives it.\nAnswer: A\nThanks!", "A") == (
        "Bo gives it.\nAnswer: A"
    )
    assert skot_cot.training_target(" Bo gives it. ", "A") == "Bo gives it.\nAnswer: A"


@pytest.mark.parametrize(
    "text, want",
    [
        ("So the answer is Bo. Answer: B", ("B", "answer_line")),
        ("(C)", ("C", "letter")),
        ("Cy? No. The key came from Bo.", ("A", "option_text")),  # the last option named
        ("Ana's aunt, not Ana's aunty", ("A", "option_text")),  # whole words only
        ("Nobody knows", (None, "none")),  # "Bo" inside "Nobody" is no match
        ("The answer is a key from Cy", ("B", "option_text")),  # "a" is no option letter
        ("a Cy", ("B", "option_text")),
        ("ANSWER: d", (None, "none")),
    ],
)
def test_read_answer_rules(text, want):
    options = ["Ana's aunt", "Cy", "Di", "Ed"] if "aunt" in text else ["Bo", "Cy", "Di", "Ed"]
    assert P.read_answer(text, options) == want


def test_read_answer_prefers_the_longest_option_ending_last():
    assert P.read_answer("it was the red key", ["key", "red key"]) == ("B", "option_text")


def test_params_for_caps_short_steps_only():
    assert P.params_for("rewrite", PARAMS).max_tokens == 16
    assert P.params_for("judge", PARAMS).max_tokens == 4
    assert P.params_for("fuse", PARAMS) is PARAMS


# ------------------------------------------------------------------ step 1: skills
def test_skills_two_calls_exact_prompts():
    describe = P.PROMPTS["describe"].format(
        context=Q["context"], question=Q["question"], options=OPTS
    )
    rewrite = P.PROMPTS["rewrite"].format(description="You must find the giver.")
    backend = ScriptedBackend(
        {describe: " You must find the giver. ", rewrite: "Skill: Identify the giver of an object."}
    )
    out = skot_skills.run(Q, backend, PARAMS)
    assert out["skill_description"] == "You must find the giver."
    assert out["skill_phrase"] == "Identify the giver of an object"
    assert out["failures"] == []
    assert [c[2].max_tokens for c in backend.calls] == [48, 16]


def test_skills_empty_rewrite_falls_back_and_is_counted():
    backend = ScriptedBackend(lambda p: "Find who hands it over." if "Do not" in p else "")
    out = skot_skills.run(Q, backend, PARAMS)
    assert out["skill_phrase"] == "Find who hands it over"
    assert out["failures"] == ["rewrite_empty"]


@pytest.mark.parametrize(
    "bad, field",
    [
        ({"options": ["only"]}, "options"),
        ({"answer": "E"}, "answer"),
        ({"question": " "}, "question"),
        ({"video": ""}, "video"),
        ({"frame_budget": 0}, "frame_budget"),
        ({"frame_budget": "8"}, "frame_budget"),
    ],
)
def test_skills_validate_names_the_field(bad, field):
    with pytest.raises(ValueError, match=field):
        skot_skills.validate(Q | bad)


# ------------------------------------------------------------------ step 2: taxonomy
POINTS = np.array(
    [[1, 0], [0.9, 0.1], [0.8, 0.2], [0, 1], [0.1, 0.9], [0.3, 0.7], [-1, 0]], np.float32
)
PHRASES = [f"p{i}" for i in range(7)]
IDS = [f"t{i}" for i in range(7)]


def test_taxonomy_clusters_and_names_by_nearest_member(tmp_path):
    t = tax.build_taxonomy(IDS, PHRASES, POINTS, k=3, seed=0)
    groups = sorted(sorted(m) for m in t.members)
    assert groups == [["t0", "t1", "t2"], ["t3", "t4", "t5"], ["t6"]]
    by_members = {tuple(sorted(m)): n for m, n in zip(t.members, t.names, strict=True)}
    # centroids (0.9, 0.1) = t1 exactly, (0.133, 0.867): t4 at 0.047 is nearest, (-1, 0) = t6
    assert by_members[("t0", "t1", "t2")] == "p1"
    assert by_members[("t3", "t4", "t5")] == "p4"
    assert by_members[("t6",)] == "p6"
    assert t.route(np.array([0.7, 0.3])) == t.names.index("p1")
    # distances from (0.6, 0.5): 0.50, 0.59, 1.68
    assert [t.names[c] for c in t.nearest(np.array([0.6, 0.5]), 3)] == ["p1", "p4", "p6"]
    tax.save(t, tmp_path / "t.json")
    back = tax.load(tmp_path / "t.json")
    assert back.names == t.names and back.members == t.members
    np.testing.assert_allclose(back.centroids, t.centroids)
    assert json.loads((tmp_path / "t.json").read_text())["k"] == 3


def test_taxonomy_errors():
    with pytest.raises(tax.TaxonomyError, match="at least 3 distinct"):
        tax.build_taxonomy(IDS[:3], PHRASES[:3], np.ones((3, 2)), k=3)
    with pytest.raises(tax.TaxonomyError, match="same length"):
        tax.build_taxonomy(IDS, PHRASES[:2], POINTS, k=2)


# ------------------------------------------------------------------ step 3: skill CoT
SKILLS = ["Identify the giver", "Track objects", "Order events"]


def cot_backend(final: str, verdict: str = "Yes") -> ScriptedBackend:
    def respond(prompt: str) -> str:
        if "Write one short sub-question" in prompt:
            skill = prompt.split('uses the skill "')[1].split('"')[0]
            return f"Sub-question: Who acts for {skill}?\nextra"
        if prompt.endswith("?") and "Answer briefly" in prompt:
            return "Bo does.\n"
        if "Helpful steps" in prompt:
            return f"The giver hands the key over.\n{final}\nTrailing words."
        if "Reply yes or no" in prompt:
            return verdict
        raise AssertionError(prompt)

    return ScriptedBackend(respond)


def test_cot_flow_and_kept_rationale():
    backend = cot_backend("Answer: A")
    out = skot_cot.run(Q | {"skills": SKILLS}, backend, PARAMS)
    assert out["sub_questions"] == [f"Who acts for {s}?" for s in SKILLS]
    assert out["sub_answers"] == ["Bo does."] * 3
    fuse_prompt = backend.calls[6][1][-1]["content"]
    assert "1. [Identify the giver] Who acts for Identify the giver? -> Bo does.\n2. [Track" in (
        fuse_prompt
    )
    assert f"Options:\n{OPTS}" in fuse_prompt
    # 3 sub-questions + 3 answers (two batched calls) + fuse + judge
    assert [len(c[1]) for c in backend.calls] == [1] * 8
    assert out["predicted"] == "A" and out["judge"] is True and out["keep"] is True
    assert out["target"] == "The giver hands the key over.\nAnswer: A"
    assert out["answer_rule"] == "answer_line"


@pytest.mark.parametrize(
    "final, verdict, reason, calls",
    [
        ("Answer: C", "Yes", "wrong_answer", 7),  # the judge is not asked
        ("no letter at all", "Yes", "no_answer", 7),
        ("Answer: A", "No.", "judge_rejected", 8),
        ("It was Cy.", "No.", "wrong_answer", 7),  # named option, read as C
        ("Answer: A", "Perhaps", "judge_unparsed", 8),
    ],
)
def test_cot_filter(final, verdict, reason, calls):
    backend = cot_backend(final, verdict)
    out = skot_cot.run(Q | {"skills": SKILLS}, backend, PARAMS)
    assert (out["reason"], out["keep"], out["target"]) == (reason, False, None)
    assert len(backend.calls) == calls


def test_cot_metrics():
    outs = [
        {"keep": True, "reason": "kept"},
        {"keep": False, "reason": "wrong_answer"},
        {"keep": False, "reason": "judge_rejected"},
        {"keep": False, "reason": "no_answer"},
    ]
    m = skot_cot.metrics([], outs)
    assert m["kept_rate"] == 0.25 and m["answer_accuracy"] == 0.5
    assert m["reason/wrong_answer"] == 1.0


def test_answer_metrics_hand_computed():
    outs = [
        {"correct": True, "predicted": "A"},
        {"correct": False, "predicted": None},
        {"correct": False, "predicted": "B", "frames_error": "video file 'x.mp4' ..."},
        {"correct": True, "predicted": "C"},
    ]
    m = skot_answer.metrics([], outs)
    assert m == {"accuracy": 0.5, "unparsed_rate": 0.25, "frames_error_rate": 0.25}


# ------------------------------------------------------------------ step 4: SFT data
def test_expert_data_files_are_sft_records(tmp_path):
    qs = [Q | {"id": f"q{i}"} for i in range(4)]
    cot = {
        "q0": {"keep": True, "target": "T0\nAnswer: A"},
        "q1": {"keep": False, "target": None},
        "q2": {"keep": True, "target": "T2\nAnswer: A"},
        "q3": {"keep": True, "target": "T3\nAnswer: A"},
    }
    files = skot_experts.write_expert_data(
        str(tmp_path), qs, cot, {"q0": 1, "q1": 0, "q2": 1, "q3": 2}
    )
    assert {k: v["examples"] for k, v in files.items()} == {"all": 3, "expert_1": 2, "expert_2": 1}
    rows = [json.loads(line) for line in open(files["expert_1"]["path"])]
    assert [r["id"] for r in rows] == ["q0", "q2"]
    conv = to_conversation(rows[1], "x")  # the reader of jaxmm.tasks.sft
    assert conv.messages[1] == {"role": "assistant", "content": "T2\nAnswer: A"}
    assert conv.messages[0]["content"] == P.PROMPTS["answer"].format(
        context=Q["context"], question=Q["question"], options=OPTS
    )


# ------------------------------------------------------------------ routing + driver
QTYPE_PHRASE = {
    "giver": "Identify who performs an action",
    "object": "Identify the object exchanged",
    "place": "Recall a stated destination",
    "relation": "Infer how characters are related",
    "order": "Order events in time",
}
PHRASE_VEC = {p: np.eye(5, dtype=np.float32)[i] for i, p in enumerate(QTYPE_PHRASE.values())}


def fake_embed(phrases):
    return np.stack([PHRASE_VEC[p] for p in phrases])


class ScriptedExperts(ScriptedBackend):
    """Answers `answer` prompts with a letter that depends on the selected adapter."""

    def __init__(self, respond, letters):
        super().__init__(respond)
        self.letters, self.loaded, self.active = letters, {}, "base"
        self.model = "scripted+base"

    def add(self, name, adapter_dir):
        assert os.path.exists(os.path.join(adapter_dir, "adapter_config.json"))
        self.loaded[name] = adapter_dir

    def select(self, name):
        assert name == "base" or name in self.loaded
        self.active, self.model = name, f"scripted+{name}"


def world(train, test):
    by_question = {q["question"]: q for q in [*train, *test]}

    def find(prompt):
        return next(q for text, q in by_question.items() if f"Question: {text}" in prompt)

    def respond(prompt):
        if "describe the skill" in prompt:
            return f"Skill for a {find(prompt)['qtype']} question."
        if prompt.startswith("Skill description:"):
            qtype = prompt.split("Skill for a ")[1].split(" question")[0]
            return QTYPE_PHRASE[qtype]
        if "Write one short sub-question" in prompt:
            return "What happens?"
        if "Answer briefly" in prompt:
            return "Something."
        if "Helpful steps" in prompt:  # right for giver/object/place, wrong otherwise
            q = find(prompt)
            wrong = "B" if q["answer"] == "A" else "A"
            right = q["qtype"] in ("giver", "object", "place")
            return f"Reasoning.\nAnswer: {q['answer'] if right else wrong}"
        if "Reply yes or no" in prompt:
            return "yes"
        raise AssertionError(prompt)

    return respond


def test_route_uses_nearest_centroid_and_falls_back_to_base():
    t = tax.Taxonomy(["a", "b"], np.array([[1, 0], [0, 1]], np.float32), [["x"], ["y"]], 0)
    r = video_skot.route(["u", "v"], np.array([[0.9, 0.2], [0.1, 0.8]]), t, ["expert_0"])
    assert r == {"u": {"cluster": 0, "expert": "expert_0"}, "v": {"cluster": 1, "expert": "base"}}


def run_driver(out, train, test, backend, experts, trained):
    def train_fn(name, data, workdir, adapter_dir):
        trained.append((name, sum(1 for _ in open(data))))
        os.makedirs(adapter_dir)
        with open(os.path.join(adapter_dir, "adapter_config.json"), "w") as f:
            f.write("{}")

    cfg = video_skot.SkotConfig(k=5, seed=0, top_skills=3, params=PARAMS)
    return video_skot.run_video_skot(
        str(out), train, test, backend, fake_embed, train_fn, lambda: experts, cfg
    )


def test_driver_end_to_end_routes_and_resumes(tmp_path):
    train = movie_qa.generate(10, 0, prefix="train")  # two of each question type
    test = movie_qa.generate(5, 1, prefix="test")
    respond = world(train, test)
    # expert_<c> answers its own questions right only when routed correctly: each adapter
    # answers "A"; the single expert "B"; base "C"
    letters = {"all": "B", "base": "C"}
    backend = ScriptedBackend(respond)
    experts = ScriptedExperts(respond, letters)

    def answer(prompt):
        if "Think step by step" not in prompt:
            return respond(prompt)
        q = next(q for q in test if f"Question: {q['question']}" in prompt)
        active = experts.active
        if active.startswith("expert_"):
            return (
                f"Answer: {q['answer']}" if active == f"expert_{routed[q['id']]}" else "Answer: Z"
            )
        return f"Answer: {letters[active]}"

    experts.responses = answer
    trained = []
    tax_clusters = {}
    # the expected route: each test question's qtype phrase -> the cluster holding that phrase
    routed = {}

    def pre_route():
        t = tax.build_taxonomy(
            [q["id"] for q in train],
            [QTYPE_PHRASE[q["qtype"]] for q in train],
            fake_embed([QTYPE_PHRASE[q["qtype"]] for q in train]),
            k=5,
            seed=0,
        )
        for q in test:
            routed[q["id"]] = t.route(PHRASE_VEC[QTYPE_PHRASE[q["qtype"]]])
            tax_clusters[q["qtype"]] = routed[q["id"]]

    pre_route()
    res = run_driver(tmp_path, train, test, backend, experts, trained)
    # CoT kept for giver/object/place (2 questions each), wrong answers for relation/order
    assert res["kept_rationales"] == 6
    assert res["cot_reasons"] == {"kept": 6, "wrong_answer": 4}
    expected_experts = {f"expert_{tax_clusters[t]}": 2 for t in ("giver", "object", "place")}
    assert res["experts"] == expected_experts | {"all": 6}
    assert sorted(trained) == sorted(res["experts"].items())
    # relation/order clusters have no expert -> base; the others routed to the right adapter
    assert res["routed_to_base"] == 2
    for q in test:
        want = "base" if q["qtype"] in ("relation", "order") else f"expert_{routed[q['id']]}"
        assert res["routing"][q["id"]]["expert"] == want
    base_right = sum(q["answer"] == "C" for q in test if q["qtype"] in ("relation", "order"))
    assert res["systems"]["skot"]["correct"] == 3 + base_right
    assert res["systems"]["single"]["correct"] == sum(q["answer"] == "B" for q in test)
    assert res["systems"]["base"]["correct"] == sum(q["answer"] == "C" for q in test)
    taxonomy = json.loads((tmp_path / "02_taxonomy.json").read_text())
    assert sorted(c["name"] for c in taxonomy["clusters"]) == sorted(QTYPE_PHRASE.values())
    # calls: 15 descriptions + 5 rewrites (the rewrite prompts of one qtype are identical:
    # cache hits), per CoT 3 sub-questions + 3 answers + 1 fuse, 6 judge calls for the 6 kept
    assert len(backend.calls) == 15 + 5 + 10 * (3 + 3 + 1) + 6
    # rerun: every model call comes from the cache, no expert is trained again
    backend2, experts2 = ScriptedBackend(respond), ScriptedExperts(answer, letters)
    res2 = run_driver(tmp_path, train, test, backend2, experts2, trained)
    assert backend2.calls == [] and experts2.calls == []
    assert len(trained) == 4 and res2["systems"] == res["systems"]


class FailingAfter(ScriptedBackend):
    def __init__(self, respond, n):
        super().__init__(respond)
        self.n = n

    def chat(self, conversations, params):
        if len(self.calls) + len(conversations) > self.n:
            raise BackendError("killed")
        return super().chat(conversations, params)


def test_cot_stage_resumes_without_repeating_calls(tmp_path):
    train = movie_qa.generate(5, 0, prefix="train")
    respond = world(train, [])
    inp = tmp_path / "in.jsonl"
    inp.write_text("".join(json.dumps(q | {"skills": SKILLS}) + "\n" for q in train))
    full = ScriptedBackend(respond)
    run_pipeline(
        skot_cot.PIPELINE, inp, tmp_path / "ref.jsonl", full, params=PARAMS, progress=False
    )
    dying = FailingAfter(respond, 11)  # dies inside the second record
    with pytest.raises(RuntimeError, match="killed"):
        run_pipeline(
            skot_cot.PIPELINE,
            inp,
            tmp_path / "out.jsonl",
            dying,
            params=PARAMS,
            concurrency=1,
            progress=False,
        )
    again = ScriptedBackend(respond)
    run_pipeline(
        skot_cot.PIPELINE,
        inp,
        tmp_path / "out.jsonl",
        again,
        params=PARAMS,
        concurrency=1,
        progress=False,
    )
    assert len(dying.calls) + len(again.calls) == len(full.calls)
    assert (tmp_path / "out.jsonl").read_text() == (tmp_path / "ref.jsonl").read_text()
