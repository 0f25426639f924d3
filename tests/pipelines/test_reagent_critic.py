"""ReAgent-V critic: report / sub-question / reflection parsing with named failures, and every
branch of the meta merge (thresholds 0.6 / 0.7 / 0.8, else highest confidence)."""

from __future__ import annotations

import json

import pytest

from jaxmm.pipelines import reagent_critic as critic
from jaxmm.pipelines.reagent_critic import Reflection


def report_json(reward=0.8, **scores) -> str:
    values = {d: {"value": 4.0, "reason": "ok"} for d in critic.DIMENSIONS} | scores
    return json.dumps(
        {
            "structured_feedback": "fine",
            "scores": values,
            "total_score": 20,
            "scalar_reward": reward,
        }
    )


def test_report_parses_the_released_layout_inside_prose():
    text = "Here is my evaluation:\n```json\n" + report_json(0.8, temporal_accuracy=2) + "\n```"
    r = critic.parse_report(text)
    assert r.reward == 0.8 and r.feedback == "fine"
    assert r.scores == {d: (2.0 if d == "temporal_accuracy" else 4.0) for d in critic.DIMENSIONS}
    assert critic.parse_report(report_json(0, visual_alignment="5")).scores["visual_alignment"] == 5


@pytest.mark.parametrize(
    "text, error",
    [
        ("The answer is good.", critic.NoJSONError),
        ('{"scores": {"visual_alignment": 4,', critic.BadJSONError),
        ("[1, 2]", critic.NoJSONError),  # no object at all
        (json.dumps({"scalar_reward": 0.5}), critic.MissingFieldError),
        (report_json(0.5, linguistic_precision=None), critic.MissingFieldError),
        (report_json(1.2), critic.OutOfRangeError),
        (report_json(-0.1), critic.OutOfRangeError),
        (report_json(0.5, option_disambiguation=6), critic.OutOfRangeError),
        (report_json("high"), critic.MissingFieldError),
    ],
)
def test_bad_reports_get_named_errors(text, error):
    with pytest.raises(error) as e:
        critic.parse_report(text)
    assert isinstance(e.value, critic.CriticError) and e.value.reason == error.reason


def test_missing_dimension_is_named():
    obj = json.loads(report_json())
    del obj["scores"]["temporal_accuracy"]
    with pytest.raises(critic.MissingFieldError, match="scores.temporal_accuracy"):
        critic.parse_report(json.dumps(obj))


def test_sub_questions_one_to_three():
    qs, cut = critic.parse_sub_questions("1. Is it red?\n- Is it on the left?\nSome remark.")
    assert qs == ["Is it red?", "Is it on the left?"] and not cut
    qs, cut = critic.parse_sub_questions("Q1: a?\nQ2: b?\nQ3: c?\nQ4: d?")
    assert qs == ["a?", "b?", "c?"] and cut
    with pytest.raises(critic.NoQuestionsError):
        critic.parse_sub_questions("The answer looks right.")


def test_reflection_parsing():
    r = critic.parse_reflection('Sure: {"answer": "B", "confidence": 0.75}', "neutral")
    assert r == Reflection("neutral", "B", 0.75)
    with pytest.raises(critic.OutOfRangeError):
        critic.parse_reflection('{"answer": "B", "confidence": 75}', "neutral")
    with pytest.raises(critic.MissingFieldError):
        critic.parse_reflection('{"answer": "", "confidence": 0.5}', "neutral")
    with pytest.raises(critic.MissingFieldError):
        critic.parse_reflection('{"answer": "B"}', "neutral")


def R(p, a, c):
    return Reflection(p, a, c)


@pytest.mark.parametrize(
    "reflections, answer, perspective, rule",
    [
        # conservative reaches 0.6 -> it wins even though the others are more confident
        (
            [R("conservative", "A", 0.6), R("neutral", "B", 0.9), R("aggressive", "C", 0.95)],
            "A",
            "conservative",
            "threshold",
        ),
        # conservative 0.59 < 0.6; neutral 0.7 reaches 0.7 -> neutral (aggressive 0.95 ignored)
        (
            [R("conservative", "A", 0.59), R("neutral", "B", 0.7), R("aggressive", "C", 0.95)],
            "B",
            "neutral",
            "threshold",
        ),
        # neutral 0.69 < 0.7; aggressive 0.8 reaches 0.8 -> aggressive
        (
            [R("conservative", "A", 0.5), R("neutral", "B", 0.69), R("aggressive", "C", 0.8)],
            "C",
            "aggressive",
            "threshold",
        ),
        # none reaches its threshold: highest confidence (aggressive 0.79)
        (
            [R("conservative", "A", 0.55), R("neutral", "B", 0.69), R("aggressive", "C", 0.79)],
            "C",
            "aggressive",
            "highest_confidence",
        ),
        (
            [R("conservative", "A", 0.5), R("neutral", "B", 0.65), R("aggressive", "C", 0.6)],
            "B",
            "neutral",
            "highest_confidence",
        ),
        # a tie below the thresholds goes to the more conservative one
        (
            [R("conservative", "A", 0.5), R("neutral", "B", 0.5), R("aggressive", "C", 0.5)],
            "A",
            "conservative",
            "highest_confidence",
        ),
        # an unparsable reflection is absent: the others decide
        ([R("neutral", "B", 0.4), R("aggressive", "C", 0.3)], "B", "neutral", "highest_confidence"),
        ([], None, None, "none_parsed"),
    ],
)
def test_merge_rules(reflections, answer, perspective, rule):
    m = critic.merge_reflections(reflections)
    assert (m.answer, m.perspective, m.rule) == (answer, perspective, rule)


def test_merge_order_does_not_depend_on_input_order():
    rs = [R("aggressive", "C", 0.85), R("neutral", "B", 0.72), R("conservative", "A", 0.1)]
    assert critic.merge_reflections(rs).perspective == "neutral"
    with pytest.raises(ValueError, match="unknown perspectives"):
        critic.merge_reflections([R("bold", "A", 1.0)])
