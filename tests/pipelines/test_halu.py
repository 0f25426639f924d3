"""`halu` (CLATTER guided hallucination detection): every parser branch, each mode, the
aggregation rule, every metric against hand-computed values, the loader, the synthetic pairs
and the validator, all with `ScriptedBackend` (no model)."""

import json

import pytest

from jaxmm import pipelines
from jaxmm.data import claims, halu_synth
from jaxmm.eval import halu as ev
from jaxmm.generate.params import GenerationParams
from jaxmm.pipelines import halu
from jaxmm.pipelines.runtime import run_pipeline
from tests.generate.scripted import ScriptedBackend

PARAMS = GenerationParams(max_tokens=32)
SOURCE = "Mara Varga was born in 1950. She worked as a chemist. She lived in Karsby."


# ---------------------------------------------------------------- parser: decomposition
@pytest.mark.parametrize(
    "text",
    [
        "1. Mara was born in 1950.\n2. Mara was a chemist.",
        "1) Mara was born in 1950.\n2) Mara was a chemist.",
        "(1) Mara was born in 1950.\n(2) Mara was a chemist.",
        "Sub-claim 1: Mara was born in 1950.\nSub-claim 2: Mara was a chemist.",
        "Claim 1. Mara was born in 1950.\nclaim 2. Mara was a chemist.",
        "- Mara was born in 1950.\n* Mara was a chemist.",
        "\u2022 Mara was born in 1950.\n\u2022 Mara was a chemist.",
        "**1.** Mara was born in 1950.\n**2.** Mara was a chemist.",
        '1. "Mara was born in 1950."\n2. "Mara was a chemist."',
        "Here are the atomic sub-claims:\n\n1. Mara was born in 1950.\n2. Mara was a chemist.\n"
        "These are all of them.",
        "1. Mara was born in 1950. 2. Mara was a chemist.",
        "Sub-claims: 1. Mara was born in 1950. 2) Mara was a chemist.",
        "1. Mara was born in 1950.\n2. Mara was a chemist.\n3. Mara was a chemist.",
    ],
)
def test_subclaims_parse_every_numbering_variant(text):
    assert halu.parse_subclaims(text) == (["Mara was born in 1950.", "Mara was a chemist."], None)


@pytest.mark.parametrize("text", ["", "I cannot do that.", "Mara was born in 1950.", "1.\n2. "])
def test_no_list_items_is_an_error_not_an_exception(text):
    assert halu.parse_subclaims(text) == ([], "no numbered or bulleted sub-claims")


# ---------------------------------------------------------------- parser: attribution
@pytest.mark.parametrize(
    "text, label",
    [
        ("Label: supported", "supported"),
        ("label - Contradicted.", "contradicted"),
        ("Label: **unsupported**", "unsupported"),
        ("Label: not supported", "unsupported"),
        ("Label: [refuted]", "contradicted"),
        ("Judgment: entailed", "supported"),
        ("The source contradicts it, so... Label: supported", "supported"),  # the line wins
        ("It is not contradicted. The sub-claim is supported.", "supported"),  # last word
        ("The sub-claim is not supported by the source.", "unsupported"),
        ("The source does not mention it; it is unverifiable.", "unsupported"),
        ("Label: <supported, contradicted or unsupported>", None),  # an echoed option list
        ("Label: supported, contradicted or unsupported\nIt is contradicted.", "contradicted"),
        ("I think so.", None),
        ("The source supports the claim that Mara was born in 1950.", "supported"),
        ("The source does not support the claim.", "unsupported"),
        ("The source doesn't  support it.", "unsupported"),
    ],
)
def test_label_parse(text, label):
    assert halu.parse_label(text) == label


@pytest.mark.parametrize(
    "text, evidence",
    [
        ('Evidence: "She worked as a chemist."\nLabel: supported', ["She worked as a chemist."]),
        ("Evidence: \u201cShe lived in Karsby.\u201d\nLabel: supported", ["She lived in Karsby."]),
        ('Evidence: "born in 1950" and "a chemist"', ["born in 1950", "a chemist"]),
        ("Evidence: She worked as a chemist.\nLabel: supported", ["She worked as a chemist."]),
        ("Evidence: none\nLabel: unsupported", []),
        ("Evidence: N/A.\nLabel: unsupported", []),
        ("Evidence:\nLabel: unsupported", []),
        ('The source says "She lived in Karsby." Label: supported', ["She lived in Karsby."]),
        ("Label: supported", []),  # missing quotes and no Evidence line
        ('Evidence: "abc"\nLabel: supported "not evidence"', ["abc"]),  # stops at the label
        ('Evidence: "ab"', []),  # too short to be a quote
    ],
)
def test_evidence_parse(text, evidence):
    assert halu.parse_evidence(text) == evidence


def test_attribution_is_label_plus_evidence():
    assert halu.parse_attribution('Evidence: "x y z"\nLabel: contradicted') == {
        "label": "contradicted",
        "evidence": ["x y z"],
    }


# ---------------------------------------------------------------- parser: verdict
@pytest.mark.parametrize(
    "text, prefer, verdict",
    [
        ("Verdict: hallucinated", "last", "hallucinated"),
        ("Verdict: **Faithful**", "last", "faithful"),
        ("Final answer: unfaithful", "last", "hallucinated"),
        ("Verdict: hallucinated\nVerdict: faithful", "last", "faithful"),  # last labelled line
        ("Faithful. Although one could think it is hallucinated.", "first", "faithful"),
        ("Faithful. Although one could think it is hallucinated.", "last", "hallucinated"),
        ("The text is not hallucinated.", "last", "faithful"),
        ("The text is not faithful to the source.", "last", "hallucinated"),
        ("One fact is not supported.", "first", "hallucinated"),
        ("Everything is supported.", "first", "faithful"),
        ('Answer "Verdict: faithful" or "Verdict: hallucinated"', "last", None),  # echo
        ("faithful or hallucinated? Hard to say, it is hallucinated.", "first", "hallucinated"),
        ("I do not know.", "first", None),
        ("Faithful: no", "first", "hallucinated"),
        ("Faithful: yes", "first", "faithful"),
        ("Hallucinated? **No**", "first", "faithful"),
        ("Hallucinated - yes. It is faithful.", "first", "hallucinated"),
    ],
)
def test_verdict_parse(text, prefer, verdict):
    assert halu.parse_verdict(text, prefer=prefer) == verdict


# ---------------------------------------------------------------- modes with ScriptedBackend
def _script(decomposition, attributions, aggregation):
    """A backend answering each guided step by what its prompt starts with."""

    def respond(prompt):
        if prompt.startswith("Break the text"):
            return decomposition
        if prompt.startswith("Text:"):
            return aggregation
        subclaim = prompt.split("Sub-claim: ", 1)[1].split("\n", 1)[0]
        return attributions[subclaim]

    return ScriptedBackend(respond)


def _record(**kw):
    return {"id": "r", "source": SOURCE, "claim": "Mara, a chemist born in 1950, won a prize."} | kw


def test_guided_runs_three_steps_and_records_a_full_trace():
    backend = _script(
        "Sub-claims:\n1. Mara was born in 1950.\n2. Mara was a chemist.\n3. Mara won a prize.",
        {
            "Mara was born in 1950.": 'Evidence: "Mara Varga was born in 1950."\nLabel: supported',
            "Mara was a chemist.": 'Evidence: "She worked as a chemist"\nLabel: supported',
            "Mara won a prize.": "Evidence: none\nLabel: unsupported",
        },
        "Verdict: hallucinated",
    )
    out = halu.run(_record(label="hallucinated"), backend, PARAMS)
    assert [c[0] for c in backend.calls] == ["chat"] * 5  # decompose, 3 attribute, aggregate
    assert out["mode"] == "guided" and out["gold"] == "hallucinated"
    assert out["prediction"] == "hallucinated" and out["failures"] == []
    trace = out["trace"]
    assert [c["label"] for c in trace["subclaims"]] == ["supported", "supported", "unsupported"]
    assert trace["subclaims"][1]["evidence"] == ["She worked as a chemist"]
    assert trace["verdict"] == trace["rule_verdict"] == "hallucinated"
    agg_prompt = backend.calls[-1][1][-1]["content"]
    assert "3. Mara won a prize. -> unsupported" in agg_prompt
    assert out["quality"] == {
        "quotes": 2,
        "quotes_in_source": 2,
        "subclaims": 3,
        "subclaims_without_evidence": 1,
        "subclaims_atomic": 3,
        "subclaim_words": 5 + 4 + 4,
        "subclaim_conjunctions": 0,
        "aggregation_consistent": True,
    }
    assert out["raw"]["aggregate"] == "Verdict: hallucinated"


def test_guided_unparsable_outputs_are_failures_and_the_run_goes_on():
    claim = _record()["claim"]
    backend = _script("I am not sure how to split this.", {claim: "Hmm."}, "Could be either.")
    out = halu.run(_record(), backend, PARAMS)
    assert out["failures"] == [
        {"step": "decompose", "error": "no numbered or bulleted sub-claims"},
        {"step": "attribute", "subclaim": 0, "error": "no label"},
        {"step": "aggregate", "error": "no verdict"},
    ]
    assert out["trace"]["subclaims"] == [{"text": claim, "label": None, "evidence": []}]
    assert out["prediction"] is None and out["gold"] is None
    assert out["trace"]["rule_verdict"] is None
    assert out["quality"]["aggregation_consistent"] is None


def test_guided_keeps_at_most_max_subclaims_and_notes_the_rest():
    items = [f"Fact {i} holds." for i in range(halu.MAX_SUBCLAIMS + 2)]
    decomposition = "\n".join(f"{i + 1}. {t}" for i, t in enumerate(items))
    backend = _script(decomposition, dict.fromkeys(items, "Label: supported"), "Verdict: faithful")
    out = halu.run(_record(), backend, PARAMS)
    assert len(out["trace"]["subclaims"]) == halu.MAX_SUBCLAIMS
    assert out["trace"]["dropped_subclaims"] == items[halu.MAX_SUBCLAIMS :]
    assert len(backend.calls) == 1 + halu.MAX_SUBCLAIMS + 1
    assert out["prediction"] == "faithful" and out["quality"]["aggregation_consistent"] is True


def test_guided_inconsistent_aggregation_is_recorded():
    backend = _script(
        "1. Mara won a prize.", {"Mara won a prize.": "Label: contradicted"}, "Verdict: faithful"
    )
    out = halu.run(_record(), backend, PARAMS)
    assert out["prediction"] == "faithful" and out["trace"]["rule_verdict"] == "hallucinated"
    assert out["quality"]["aggregation_consistent"] is False


@pytest.mark.parametrize(
    "mode, answer, prediction",
    [
        ("direct", "Faithful.", "faithful"),
        ("direct", "hallucinated", "hallucinated"),
        ("cot", "The source says 1950, the claim too. Nothing is hallucinated... "
         "but the prize is not in the source.\nVerdict: hallucinated", "hallucinated"),
        ("cot", "Looks hallucinated at first, but every fact is supported.", "faithful"),
    ],
)  # fmt: skip
def test_baselines_make_one_call(mode, answer, prediction):
    backend = ScriptedBackend(lambda p: answer)
    out = halu.run(_record(mode=mode, label=0), backend, PARAMS)
    assert len(backend.calls) == 1
    prompt = backend.calls[0][1][0]["content"]
    assert SOURCE in prompt and _record()["claim"] in prompt
    assert out == {
        "mode": mode,
        "gold": "faithful",
        "prediction": prediction,
        "trace": {"verdict": prediction},
        "failures": [],
        "raw": {mode: answer},
    }


def test_baseline_without_a_verdict_is_a_failure():
    out = halu.run(_record(mode="direct"), ScriptedBackend(lambda p: "Maybe."), PARAMS)
    assert out["prediction"] is None and out["failures"] == [
        {"step": "direct", "error": "no verdict"}
    ]


def test_text_field_and_source_list_are_accepted():
    backend = ScriptedBackend(lambda p: "faithful")
    rec = {"id": 1, "source": ["Passage one.", "Passage two."], "text": "T.", "mode": "direct"}
    halu.validate(rec)
    halu.run(rec, backend, PARAMS)
    assert "Passage one.\n\nPassage two." in backend.calls[0][1][0]["content"]


def test_version_names_the_prompts():
    assert halu.PIPELINE.version.startswith(halu.PROMPT_VERSION + "+")
    assert pipelines.get("halu") is halu.PIPELINE


# ---------------------------------------------------------------- aggregation rule
@pytest.mark.parametrize(
    "labels, verdict",
    [
        (["supported", "supported"], "faithful"),
        (["supported", "unsupported"], "hallucinated"),
        (["contradicted"], "hallucinated"),
        (["supported", None], None),
        ([], None),
    ],
)
def test_rule_verdict(labels, verdict):
    assert ev.rule_verdict(labels) == verdict


# ---------------------------------------------------------------- metrics
def test_detection_metrics_hand_computed():
    H, F = "hallucinated", "faithful"
    gold = [H, H, H, F, F, H]
    pred = [H, F, None, F, H, H]  # None -> scored wrong (as F for gold H)
    # tp=2 (0,5) fn=2 (1,2) tn=1 (3) fp=1 (4)
    m = ev.detection_metrics(gold, pred)
    assert m["accuracy"] == pytest.approx(3 / 6)
    assert m["balanced_accuracy"] == pytest.approx((2 / 4 + 1 / 2) / 2)
    assert m["f1_hallucinated"] == pytest.approx(2 * 2 / (2 * 2 + 1 + 2))
    assert ev.detection_metrics([F, F], [F, None]) == {
        "accuracy": 0.5,
        "balanced_accuracy": 0.5,  # only the faithful class: its recall
        "f1_hallucinated": 0.0,
    }
    assert ev.detection_metrics([], []) == {}
    with pytest.raises(ValueError, match="2 gold labels but 1"):
        ev.detection_metrics([H, F], [H])


@pytest.mark.parametrize(
    "quote, found",
    [
        ("She worked as a chemist.", True),  # exact
        ("she  WORKED as a chemist", True),  # case, spacing, punctuation
        ("She worked as chemist", True),  # fuzzy: one word dropped (ratio 0.93)
        ("Mara Varga was born in 1905", True),  # fuzzy: a typo in the year (ratio 0.96)
        ("She worked as a surgeon.", False),  # ratio 0.79 < 0.85
        ("Mara won the Solvay Prize.", False),
        ("...", False),
    ],
)
def test_quote_in_source(quote, found):
    assert ev.quote_in_source(quote, SOURCE) is found


@pytest.mark.parametrize(
    "text, conjunctions, atomic",
    [
        ("Mara was born in 1950.", 0, True),
        ("Mara was born in 1950 and worked as a chemist.", 1, False),
        ("Mara lived in Karsby; she was a chemist, but not a pilot.", 2, False),
        ("one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
         "fifteen sixteen", 0, False),  # 16 words > 15
    ],
)  # fmt: skip
def test_atomicity(text, conjunctions, atomic):
    assert ev.conjunction_count(text) == conjunctions
    assert ev.is_atomic(text) is atomic


def test_trace_metrics_pool_over_records():
    q1 = ev.trace_quality(
        SOURCE,
        [
            {"text": "Mara was born in 1950.", "evidence": ["born in 1950", "in Paris"]},
            {"text": "Mara was a chemist and a pilot.", "evidence": [], "label": "supported"},
        ],
        "faithful",
    )  # a label missing -> consistency undefined
    won = {"text": "Mara won.", "evidence": ["She lived in Karsby."], "label": "unsupported"}
    q2 = ev.trace_quality(SOURCE, [won], "faithful")
    assert q1["aggregation_consistent"] is None and q2["aggregation_consistent"] is False
    m = ev.trace_metrics([q1, q2])
    assert m == {
        "mean_subclaims": 1.5,
        "evidence_in_source": 2 / 3,
        "aggregation_consistency": 0.0,
        "evidence_missing_rate": 1 / 3,
        "atomic_rate": 2 / 3,
        "mean_subclaim_words": (5 + 7 + 2) / 3,
        "mean_subclaim_conjunctions": 1 / 3,
    }
    assert ev.trace_metrics([]) == {}


def test_pipeline_metrics_per_mode_hand_computed():
    def out(mode, gold, pred, failures=(), quality=None):
        rec = {"mode": mode, "gold": gold, "prediction": pred, "failures": list(failures)}
        return rec | ({"quality": quality} if quality else {})

    born = {"text": "Mara was born in 1950.", "evidence": ["born in 1950"], "label": "supported"}
    quality = ev.trace_quality(SOURCE, [born], "faithful")
    outputs = [
        out("guided", "faithful", "faithful", quality=quality),
        out("guided", "hallucinated", None, [{"step": "aggregate"}], quality=quality),
        out("direct", "hallucinated", "hallucinated"),
        out("direct", None, "faithful"),
    ]
    m = halu.metrics([], outputs)
    assert m["records"] == 4 and m["labelled"] == 3
    assert m["accuracy"] == pytest.approx(2 / 3)
    assert m["balanced_accuracy"] == pytest.approx((1 / 2 + 1) / 2)
    assert m["f1_hallucinated"] == pytest.approx(2 / 3)
    assert m["unparsed_prediction_rate"] == 0.25 and m["records_with_failures"] == 0.25
    assert m["parse_failures"] == 1
    assert m["guided/accuracy"] == 0.5 and m["direct/accuracy"] == 1.0
    assert m["guided/evidence_in_source"] == 1.0 and m["aggregation_consistency"] == 1.0
    assert "direct/evidence_in_source" not in m
    assert "guided/records" in m and not any(
        k.startswith("direct/") for k in halu.metrics([], outputs[2:])
    )


# ---------------------------------------------------------------- validator and runtime
def test_bad_records_get_named_errors_and_the_runtime_writes_metrics(tmp_path):
    good = {"id": "g", "source": SOURCE, "claim": "Mara was a chemist.", "label": "SUPPORTS"}
    lines = [
        good | {"mode": "direct"},
        {"id": "a", "claim": "x"},
        {"id": "b", "source": "", "claim": "x"},
        {"id": "c", "source": ["ok", 3], "claim": "x"},
        {"id": "d", "source": "s"},
        {"id": "e", "source": "s", "claim": "x", "text": "y"},
        {"id": "f", "source": "s", "claim": "  "},
        {"id": "h", "source": "s", "claim": "x", "mode": "fast"},
        {"id": "i", "source": "s", "claim": "x", "label": "maybe"},
    ]
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(x) + "\n" for x in lines))
    out = tmp_path / "out.jsonl"
    report = run_pipeline(
        halu.PIPELINE, src, out, ScriptedBackend(lambda p: "faithful"), progress=False
    )
    errors = {e["where"].rsplit(":", 1)[1]: e["error"] for e in report.bad_records}
    assert "'source'" in errors["2"] and "'source' must be a non-empty string" in errors["3"]
    assert "non-empty list" in errors["4"] and "'claim' or 'text'" in errors["5"]
    assert "'claim' or 'text'" in errors["6"] and "'claim' must be a non-empty" in errors["7"]
    assert "'mode' must be one of" in errors["8"] and "'label'" in errors["9"]
    assert report.written == 1 and report.metrics["accuracy"] == 1.0
    assert json.load(open(str(out) + ".metrics.json"))["accuracy"] == 1.0
    manifest = json.load(open(str(out) + ".manifest.json"))
    assert manifest["pipeline_version"] == halu.VERSION


# ---------------------------------------------------------------- loader
def test_load_claims_normalises_labels_and_assigns_ids(tmp_path):
    path = tmp_path / "fever.jsonl"
    rows = [
        {"source": "s", "claim": "c", "label": "REFUTES"},
        {"id": "x", "source": ["a", "b"], "text": "t", "label": True},
        {"source": "s", "claim": "c", "label": "NOT ENOUGH INFO", "extra": 1},
        {"source": "s", "claim": "c"},
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows[:2]) + "\n\n" + "\n".join(
        json.dumps(r) for r in rows[2:]) + "\n")  # fmt: skip
    recs = claims.load_claims(path, mode="cot")
    assert [r["id"] for r in recs] == ["fever-1", "x", "fever-4", "fever-5"]
    assert [r.get("label") for r in recs] == ["hallucinated", "hallucinated", "hallucinated", None]
    assert recs[1]["claim"] == "t" and "text" not in recs[1] and recs[2]["extra"] == 1
    assert all(r["mode"] == "cot" for r in recs)
    for r in recs:
        halu.validate(r)


@pytest.mark.parametrize(
    "row, error",
    [
        ({"claim": "c"}, "lacks field 'source'"),
        ({"source": "s"}, "lacks field 'claim'"),
        ({"source": "s", "claim": "c", "label": 2}, "field 'label'"),
    ],
)
def test_load_claims_errors_name_file_line_and_field(tmp_path, row, error):
    path = tmp_path / "c.jsonl"
    path.write_text(json.dumps(row) + "\n")
    with pytest.raises(ValueError, match=f"c.jsonl:1: .*{error}"):
        claims.load_claims(path)


@pytest.mark.parametrize(
    "value, label",
    [(1, "hallucinated"), (0, "faithful"), (False, "faithful"), ("Supported", "faithful"),
     ("not_supported", "hallucinated"), ("contradicted", "hallucinated"),
     ("faithful", "faithful")],
)  # fmt: skip
def test_normalize_label(value, label):
    assert claims.normalize_label(value) == label


# ---------------------------------------------------------------- synthetic pairs
def test_synthetic_pairs_are_seeded_balanced_and_labelled_right(tmp_path):
    recs = halu_synth.generate(24, seed=3)
    assert recs == halu_synth.generate(24, seed=3) and recs != halu_synth.generate(24, seed=4)
    kinds = [r["kind"] for r in recs]
    assert (kinds.count("supported"), kinds.count("contradicted"), kinds.count("unsupported")) == (
        12, 6, 6)  # fmt: skip
    assert len({r["id"] for r in recs}) == 24
    for r in recs:
        halu.validate(r)
        facts = [s + "." for s in r["claim"].rstrip(".").split(". ")]
        in_source = [f in r["source"] for f in facts]
        if r["kind"] == "supported":
            assert all(in_source) and r["label"] == "faithful" and r["planted"] is None
        else:
            assert r["label"] == "hallucinated" and r["planted"] in facts
            assert r["planted"] not in r["source"] and in_source.count(False) == 1
    halu_synth.main(["--n", "20", "--seed", "0", "--out", str(tmp_path / "s.jsonl")])
    assert claims.load_claims(tmp_path / "s.jsonl") == halu_synth.generate(20, 0)
    with pytest.raises(ValueError, match="n must be >= 1"):
        halu_synth.generate(0)
