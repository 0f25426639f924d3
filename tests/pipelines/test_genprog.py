"""GenerationPrograms (`genprog`): sentence ids, the safe parser and its repairs, innermost-
first execution, citation propagation and rendering, the three modes, the ALCE-style NLI
judge and the metrics (hand-computed), input validation, loaders and the synthetic data.
All with `ScriptedBackend`; the real-model run is in docs/pipelines.md."""

import json
import re

import pytest

from jaxmm import pipelines
from jaxmm.data import genprog as gdata
from jaxmm.eval import answers
from jaxmm.generate.params import GenerationParams
from jaxmm.pipelines import genprog
from jaxmm.pipelines import genprog_program as gp
from jaxmm.pipelines.runtime import run_pipeline
from tests.generate.scripted import ScriptedBackend

PARAMS = GenerationParams(max_tokens=32)
DOCS = [
    {"title": "Velm", "text": "Velm is a town in Arvenia. Velm was founded in 1612."},
    {"title": "Ost", "text": "Dr. Ost lived in Velm at 5 p.m. on Mondays. Ost made clocks."},
]
# S1 Velm is a town in Arvenia. S2 Velm was founded in 1612.
# S3 Dr. Ost lived in Velm at 5 p.m. on Mondays. S4 Ost made clocks.
SENTS = gp.number_sentences([d["text"] for d in DOCS])


def test_sentences_get_global_ids_grouped_by_passage():
    assert [(s.sid, s.doc) for s in SENTS] == [(1, 1), (2, 1), (3, 2), (4, 2)]
    assert SENTS[2].text == "Dr. Ost lived in Velm at 5 p.m. on Mondays."  # pysbd: no split
    assert gp.format_sources(SENTS, ["Velm", ""]) == (
        "Document [1] (Velm)\nS1: Velm is a town in Arvenia.\nS2: Velm was founded in 1612.\n"
        "Document [2]\nS3: Dr. Ost lived in Velm at 5 p.m. on Mondays.\nS4: Ost made clocks."
    )


@pytest.mark.parametrize(
    "line, program, repairs",
    [
        (
            'fusion(S1, paraphrase(S3), instruction="when")',
            "fusion(S1, paraphrase(S3), instruction='when')",
            (),
        ),  # noqa: E501
        ("S2", "S2", ()),  # a bare id copies the sentence
        ("compression(s4)", "compression(S4)", ()),  # lower-case id
        ('paraphrase("S1")', "paraphrase(S1)", ()),  # quoted id
        ("2. `compression(S2)`.", "compression(S2)", ()),  # numbering, backticks, period
        ("- paraphrase(S1)", "paraphrase(S1)", ()),  # bullet
        ("Program 1: paraphrase(S1)", "paraphrase(S1)", ()),
        ("fusion(S1, paraphrase(S2", "fusion(S1, paraphrase(S2))", ("closed 2 open bracket(s)",)),
        ("paraphrase(S1))", "paraphrase(S1)", ("dropped 1 unmatched closing bracket(s)",)),
        (
            "fusion(S1, S2]",
            "fusion(S1, S2)",
            ("dropped 1 unmatched closing bracket(s)", "closed 1 open bracket(s)"),
        ),  # noqa: E501
        (
            'paraphrase(S1, instruction="short)',
            "paraphrase(S1, instruction='short')",
            ("closed quote",),
        ),  # noqa: E501
        (
            "fusion(S1, compression(S2, instruction=\"it's))",
            'fusion(S1, compression(S2, instruction="it\'s"))',
            ("closed quote",),
        ),  # noqa: E501
        (
            "paraphrase(S1, instruction='x",
            "paraphrase(S1, instruction='x')",
            ("closed quote", "closed 1 open bracket(s)"),
        ),  # noqa: E501
    ],
)
def test_parser_accepts_and_repairs(line, program, repairs):
    parsed = gp.parse_program(line, n_sentences=4)
    assert str(parsed.node) == program and parsed.repairs == repairs


@pytest.mark.parametrize(
    "line, error",
    [
        ("", "empty program"),
        ("```", "empty program"),
        ("fusion(S1, " + "S2, " * 600 + "S3)", "longer than 2000"),
        ("fusion(S1,, S2)", "not a valid expression"),
        ("The answer is Velm.", "not a valid expression"),
        ("summarize(S1)", "unknown module 'summarize'"),
        ("__import__('os').system('rm -rf /')", "plain name"),
        ("os.system(S1)", "plain name"),
        ("S1 + S2", "unexpected BinOp"),
        ("[S1, S2]", "unexpected List"),
        ("paraphrase(S1, S2)", "paraphrase takes exactly 1 argument(s), got 2"),
        ("compression()", "compression takes exactly 1 argument(s), got 0"),
        ("fusion(S1)", "fusion takes at least 2 argument(s), got 1"),
        ("fusion(*S1)", "starred"),
        ("paraphrase(S1, style='x')", "unknown keyword 'style'"),
        ("paraphrase(S1, **opts)", "unknown keyword '**'"),
        ("paraphrase(S1, instruction=3)", "instruction must be a string"),
        ("paraphrase(S5)", "S5 does not exist (sources are S1..S4)"),
        ("paraphrase(S0)", "S0 does not exist"),
        ("paraphrase(x)", "'x' is not a sentence id"),
        ("paraphrase('Velm')", "'Velm' is not a sentence id"),
        ("paraphrase(" * 10 + "S1" + ")" * 10, "nested deeper than 8"),
    ],
)
def test_parser_rejects_with_a_named_reason(line, error):
    with pytest.raises(gp.ProgramError, match=re.escape(error)):
        gp.parse_program(line, n_sentences=4)


def test_execution_is_innermost_first_and_citations_are_the_union_of_sources():
    node = gp.parse_program(
        'fusion(paraphrase(S1), compression(S4, instruction="short"), S2)', 4
    ).node
    calls = []

    def call(module, inputs, instruction):
        calls.append((module, list(inputs), instruction))
        return f"<{module}:{len(calls)}>"

    trace = []
    out = gp.execute(node, SENTS, call, trace)
    assert calls == [
        ("paraphrase", ["Velm is a town in Arvenia."], None),
        ("compression", ["Ost made clocks."], "short"),
        ("fusion", ["<paraphrase:1>", "<compression:2>", "Velm was founded in 1612."], None),
    ]
    assert out == gp.Output("<fusion:3>", (1, 2, 4))
    assert [t["sources"] for t in trace] == [["S1"], ["S4"], ["S1", "S2", "S4"]]
    assert gp.execute(gp.Ref(3), SENTS, call) == gp.Output(SENTS[2].text, (3,))  # no call
    assert len(calls) == 3
    assert gp.leaves(node) == [1, 4, 2]


def test_rendering_at_document_and_sentence_level():
    statements = [("Velm is in Arvenia and made clocks.", [4, 1]), ("It is old", [2]), ("Hi.", [])]
    assert gp.render_answer(statements, SENTS, "document") == (
        "Velm is in Arvenia and made clocks [1][2]. It is old [1] Hi."
    )
    assert gp.render_answer(statements, SENTS, "sentence") == (
        "Velm is in Arvenia and made clocks [S1][S4]. It is old [S2] Hi."
    )
    with pytest.raises(ValueError, match="'document' or 'sentence'"):
        gp.render_answer(statements, SENTS, "passage")


def _judge(premise, claim):
    """Entailment by words: every content word of the claim occurs in the premise."""
    words = {w for w in answers.normalize(claim).split() if len(w) > 2}
    return "Yes." if words <= set(answers.normalize(premise).split()) else "No."


def _responder(program_text=None, answer_text=None, posthoc=None):
    def respond(prompt):
        if prompt.startswith("Premise: "):
            premise, claim = prompt[len("Premise: ") :].split("\nClaim: ")
            return _judge(premise, claim.split("\nDoes the premise")[0])
        if prompt.endswith("Programs:"):
            return program_text
        if prompt.endswith("Program:"):
            sentence = prompt.rsplit("\n", 2)[-2]
            return posthoc[sentence]
        if "Question:" in prompt:
            return answer_text
        body = prompt.split("\n\n", 1)[1]  # module call: echo its inputs
        return " ".join(line.split(": ", 1)[1] for line in body.splitlines())

    return respond


def _record(**kw):
    return {"id": "r1", "question": "Where is Velm?", "docs": DOCS} | kw


def test_program_mode_end_to_end():
    program = (
        "Programs:\n"
        "fusion(S1, paraphrase(S4)\n"  # repaired: one module call each, then judged
        "compression(S2, S3)\n"  # invalid: counted, not executed
        "S3"
    )
    backend = ScriptedBackend(_responder(program_text=program))
    out = genprog.PIPELINE.run(
        _record(answers=["Arvenia", ["1612", "sixteen twelve"]]), backend, PARAMS
    )
    assert out["mode"] == "program" and out["n_sentences"] == 4
    assert [p["ok"] for p in out["programs"]] == [True, False, True] and out["programs_ok"] == 2
    assert out["programs"][0]["repairs"] == ["closed 1 open bracket(s)"]
    assert "compression takes exactly 1" in out["programs"][1]["error"]
    fused = "Velm is a town in Arvenia. Ost made clocks."
    assert out["statements"] == [
        {"text": fused, "sentences": ["S1", "S4"], "docs": [1, 2]},
        {"text": SENTS[2].text, "sentences": ["S3"], "docs": [2]},
    ]
    assert [t["module"] for t in out["trace"]] == ["paraphrase", "fusion"]
    assert out["answer_sentence_cited"] == (
        "Velm is a town in Arvenia. Ost made clocks [S1][S4]. "
        "Dr. Ost lived in Velm at 5 p.m. on Mondays [S3]."
    )
    assert out["answer_document_cited"].endswith(
        "clocks [1][2]. Dr. Ost lived in Velm at 5 p.m. on Mondays [2]."
    )  # noqa: E501
    # statement 1: S1+S4 entail it; neither alone does, so both citations are needed.
    assert out["judgments"] == [
        {"recall": True, "precise": [True, True]},
        {"recall": True, "precise": [True]},
    ]
    assert (out["citation_recall"], out["citation_precision"]) == (1.0, 1.0)
    assert out["answer_str_em"] == 0.5 and out["gold_doc_recall"] is None
    kinds = [c[1][-1]["content"].split(":")[0] for c in backend.calls]
    # 1 program call, 2 module calls, judge: recall, then per citation alone + rest (x2), recall
    assert len(backend.calls) == 1 + 2 + 1 + 4 + 1 and kinds.count("Premise") == 6
    assert all(
        c[2].max_tokens == 4 for c in backend.calls if c[1][-1]["content"].startswith("Premise")
    )  # noqa: E501


def test_posthoc_mode_cites_the_leaves_of_a_program_per_answer_sentence():
    answer = "Velm is a town in Arvenia. Velm makes clocks in 1612."
    posthoc = {
        "Velm is a town in Arvenia.": "paraphrase(S1)",
        "Velm makes clocks in 1612.": "fusion(S2, S4, S1",  # repaired; leaves S2 S4 S1
    }
    backend = ScriptedBackend(_responder(answer_text=answer, posthoc=posthoc))
    out = genprog.PIPELINE.run(_record(mode="posthoc", gold_docs=[1]), backend, PARAMS)
    assert out["mode"] == "posthoc" and out["programs_ok"] == 2 and out["trace"] == []
    assert [s["sentences"] for s in out["statements"]] == [["S1"], ["S1", "S2", "S4"]]
    assert out["answer"] == answer
    # 'velm makes clocks 1612': 'makes' is in no source -> not entailed, all imprecise
    assert out["judgments"] == [
        {"recall": True, "precise": [True]},
        {"recall": False, "precise": [False, False, False]},
    ]
    assert out["citation_recall"] == 0.5 and out["citation_precision"] == 0.25
    assert out["gold_doc_recall"] == 1.0
    bad = ScriptedBackend(_responder(answer_text="Velm.", posthoc={"Velm.": "I think S1"}))
    out = genprog.PIPELINE.run(_record(mode="posthoc"), bad, PARAMS)
    assert out["programs_ok"] == 0 and out["statements"] == [
        {"text": "Velm.", "sentences": [], "docs": []}
    ]
    assert out["judgments"] == [{"recall": False, "precise": []}]
    assert (out["citation_recall"], out["citation_precision"]) == (0.0, 0.0)


def test_direct_mode_reads_citation_marks_and_the_variant_pipelines_default_to_their_mode():
    answer = "Velm is a town in Arvenia [S1][s2][S99]. Ost made clocks [S4]. No cite here."
    backend = ScriptedBackend(_responder(answer_text=answer))
    direct = pipelines.get("genprog_direct")
    assert direct.name == "genprog_direct" and direct.version == genprog.VERSION
    out = direct.run(_record(), backend, PARAMS)
    assert out["mode"] == "direct" and out["programs"] == []
    assert out["statements"] == [
        {"text": "Velm is a town in Arvenia.", "sentences": ["S1", "S2"], "docs": [1]},
        {"text": "Ost made clocks.", "sentences": ["S4"], "docs": [2]},
        {"text": "No cite here.", "sentences": [], "docs": []},
    ]
    # statement 1: S1 alone entails it, S2 alone does not but S1 (the rest) does -> S2 over-cites
    assert out["judgments"][0] == {"recall": True, "precise": [True, False]}
    assert out["citation_recall"] == pytest.approx(2 / 3)
    assert out["citation_precision"] == pytest.approx(2 / 3)
    assert pipelines.get("genprog_posthoc").run.keywords == {"default_mode": "posthoc"}
    program = ScriptedBackend(_responder(program_text="S4"))
    out = direct.run(_record(mode="program"), program, PARAMS)  # the record's mode wins
    assert out["mode"] == "program" and out["answer"] == "Ost made clocks."


def test_judge_follows_alce_rules():
    calls = []

    def entails(premise, claim):
        calls.append(premise)
        return premise in ("A B", "A", "A C")  # S1 text "A" alone is enough

    sents = [gp.Sentence(1, 1, "A"), gp.Sentence(2, 1, "B"), gp.Sentence(3, 2, "C")]
    assert genprog.judge_statement("x", [], sents, entails) == {"recall": False, "precise": []}
    assert calls == []
    assert genprog.judge_statement("x", [1], sents, entails) == {"recall": True, "precise": [True]}
    # [1, 2]: joint yes; S1 alone yes; S2 alone no and rest (S1) yes -> S2 not precise
    got = genprog.judge_statement("x", [1, 2], sents, entails)
    assert got == {"recall": True, "precise": [True, False]}
    # [2, 3]: joint "B C" no -> recall 0, every citation imprecise, no per-citation calls
    calls.clear()
    assert genprog.judge_statement("x", [2, 3], sents, entails) == {
        "recall": False,
        "precise": [False, False],
    }
    assert calls == ["B C"]


def test_answer_str_em_and_metrics_aggregate_output_fields():
    assert answers.answer_str_em("The town is in Arvenia, since 1612!", ["arvenia", ["1612"]]) == 1
    assert answers.answer_str_em("Arvenian towns", ["Arvenia"]) == 0  # whole words only
    assert answers.answer_str_em("x", []) is None
    outputs = [
        {"mode": "program", "programs": [{}, {}, {}], "programs_ok": 2, "statements": [{}, {}],
         "citation_recall": 1.0, "citation_precision": 0.5, "answer_str_em": 0.5, "gold_doc_recall": None},  # noqa: E501
        {"mode": "posthoc", "programs": [{}], "programs_ok": 1, "statements": [{}],
         "citation_recall": 0.0, "citation_precision": 0.0, "answer_str_em": None, "gold_doc_recall": 1.0},  # noqa: E501
        {"mode": "direct", "programs": [], "programs_ok": 0, "statements": [],
         "citation_recall": 0.5, "citation_precision": 1.0, "answer_str_em": 1.0, "gold_doc_recall": 0.5},  # noqa: E501
    ]  # fmt: skip
    m = genprog.metrics([{}] * 3, outputs)
    r, p = 1.5 / 3, 1.5 / 3
    assert m == {
        "records": 3.0,
        "programs": 4.0,
        "program_parse_rate": 3 / 4,
        "citation_recall": r,
        "citation_precision": p,
        "citation_f1": pytest.approx(2 * r * p / (r + p)),
        "statements_per_record": 1.0,
        "answer_str_em": 0.75,
        "gold_doc_recall": 0.75,
    }
    assert genprog.metrics([], []) == {"records": 0.0}


def test_bad_records_get_named_errors_and_the_good_ones_run_resumably(tmp_path):
    good = _record(id="ok", context=["Velm is a town in Arvenia."])
    del good["docs"]
    lines = [
        good,
        {"id": "noq", "docs": DOCS},
        {"id": "emptyq", "question": " ", "docs": DOCS},
        {"id": "both", "question": "q", "docs": DOCS, "context": "c"},
        {"id": "nodocs", "question": "q"},
        {"id": "emptydocs", "question": "q", "docs": []},
        {"id": "baddoc", "question": "q", "docs": [{"title": "t"}]},
        {"id": "mode", "question": "q", "docs": DOCS, "mode": "oracle"},
        {"id": "ans", "question": "q", "docs": DOCS, "answers": [3]},
        {"id": "gold", "question": "q", "docs": DOCS, "gold_docs": [3]},
    ]
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(x) + "\n" for x in lines))
    backend = ScriptedBackend(_responder(program_text="paraphrase(S1)"))
    out = tmp_path / "out.jsonl"
    report = run_pipeline(genprog.PIPELINE, src, out, backend, params=PARAMS, progress=False)
    errors = [e["error"].split(": ", 1)[1] for e in report.bad_records]
    docs_error = (
        "field 'docs' must be a non-empty list of passages "
        "(non-empty strings or {'title', 'text'} objects)"
    )
    assert errors == [
        "record lacks required field(s) ['question']",
        "field 'question' must be a non-empty string",
        "give exactly one of the fields 'docs' or 'context'",
        "give exactly one of the fields 'docs' or 'context'",
        docs_error,
        docs_error,
        "field 'mode' must be one of ['program', 'posthoc', 'direct'], got 'oracle'",
        "field 'answers' must be a list of strings or of lists of strings",
        "field 'gold_docs' must list passage numbers in 1..2",
    ]
    assert report.written == 1 and report.metrics["program_parse_rate"] == 1.0
    assert report.metrics["citation_recall"] == 1.0  # paraphrase echoes S1: entailed
    n_calls = len(backend.calls)
    again = run_pipeline(genprog.PIPELINE, src, out, backend, params=PARAMS, progress=False)
    assert again.written == 0 and len(backend.calls) == n_calls


def test_synthetic_records_are_deterministic_with_gold_sources(tmp_path):
    a, b = gdata.synthetic_records(25, seed=3), gdata.synthetic_records(25, seed=3)
    assert a == b and a != gdata.synthetic_records(25, seed=4) and len(a) == 25
    for rec in a:
        genprog.validate(rec)
        assert len(rec["docs"]) == 4 and len(rec["gold_docs"]) == 2
        gold_text = " ".join(rec["docs"][d - 1]["text"] for d in rec["gold_docs"])
        for (answer,) in rec["answers"]:
            assert answer in gold_text and sum(answer in d["text"] for d in rec["docs"]) >= 1
        entity = rec["docs"][rec["gold_docs"][0] - 1]["title"]
        assert entity in rec["question"]
        assert sum(d["title"] == entity for d in rec["docs"]) == 2
    gdata.main(["--out", str(tmp_path / "s.jsonl"), "--n", "3", "--mode", "direct"])
    rows = [json.loads(x) for x in (tmp_path / "s.jsonl").read_text().splitlines()]
    assert [r["mode"] for r in rows] == ["direct"] * 3 and rows[0]["id"] == "synth-0-0"


def test_an_oracle_program_on_synthetic_data_scores_perfectly(tmp_path):
    records = gdata.synthetic_records(5, seed=1)

    answers = {r["question"]: [a for (a,) in r["answers"]] for r in records}

    def respond(prompt):
        if prompt.endswith("Programs:"):
            sources, question = prompt.rsplit("\n\nQuestion: ", 1)
            entity = next(
                w
                for w in question.split()
                if w.strip(",?").istitle() and w not in ("In", "What", "When", "Where")
            )  # noqa: E501
            facts = [
                ln.split(":")[0]
                for ln in sources.splitlines()
                if ln.startswith("S")
                and f": {entity.strip(',?')} " in ln
                and any(a in ln for a in answers[question.removesuffix("\nPrograms:")])
            ]
            return f"fusion({', '.join(facts)})"
        return _responder()(prompt)

    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in records))
    report = run_pipeline(
        genprog.PIPELINE, src, tmp_path / "o.jsonl", ScriptedBackend(respond), progress=False
    )
    m = report.metrics
    assert (m["program_parse_rate"], m["citation_recall"], m["citation_precision"]) == (1, 1, 1)
    assert (m["answer_str_em"], m["gold_doc_recall"]) == (1.0, 1.0)


def test_loaders_read_asqa_and_lfqa_json(tmp_path):
    asqa = [
        {
            "sample_id": "-123",
            "question": "Who won?",
            "qa_pairs": [{"short_answers": ["Ann", "Anne"]}, {"short_answers": ["Bo"]}],
            "docs": [{"title": f"t{i}", "text": f"Doc {i}.", "score": 1} for i in range(8)],
        }
    ]
    (tmp_path / "asqa.json").write_text(json.dumps(asqa))
    (rec,) = gdata.load_qa_json(tmp_path / "asqa.json", n_docs=3)
    assert rec == {
        "id": "-123",
        "question": "Who won?",
        "docs": [{"title": f"t{i}", "text": f"Doc {i}."} for i in range(3)],
        "answers": [["Ann", "Anne"], ["Bo"]],
    }
    lfqa = [
        {"question": "Why?", "context": "Because. Reasons."},
        {"question": "How?", "context": ["a", "b"]},
    ]  # noqa: E501
    (tmp_path / "lfqa.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lfqa))
    recs = gdata.load_qa_json(tmp_path / "lfqa.jsonl")
    assert recs == [
        {"id": "0", "question": "Why?", "docs": ["Because. Reasons."]},
        {"id": "1", "question": "How?", "docs": ["a", "b"]},
    ]
    for r in recs:
        genprog.validate(r)
    (tmp_path / "bad.json").write_text(json.dumps([{"question": "q"}]))
    with pytest.raises(ValueError, match="item 0: needs a field 'docs' or 'context'"):
        gdata.load_qa_json(tmp_path / "bad.json")
    (tmp_path / "bad2.json").write_text(json.dumps([{"docs": []}]))
    with pytest.raises(ValueError, match="item 0: field 'question'"):
        gdata.load_qa_json(tmp_path / "bad2.json")
