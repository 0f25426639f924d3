"""The option-letter parser on hand-written answers and the accuracy metrics against
hand-computed values."""

import pytest

from jaxmm.eval.mexa import accuracy_metrics, chance, parse_choice

OPTIONS = ["Mara", "Tobias", "Kofi", "Lena"]


@pytest.mark.parametrize(
    "text, want",
    [
        ("B", ("B", "leading")),
        ("(C)", ("C", "leading")),
        ("[d]", ("D", "leading")),
        ("c. Kofi", ("C", "leading")),
        ("D: Lena", ("D", "leading")),
        ("The answer is B because the subtitles say so.", ("B", "answer_is")),
        ("Answer: (c)", ("C", "answer_is")),
        ("the answer is: d.", ("D", "answer_is")),
        ("A red figure gives it. So C.", ("C", "lone_letter")),  # the article is skipped
        ("The correct option is D.", ("D", "lone_letter")),
        ("I think Tobias gives it", ("B", "option_text")),
        ("answer is a woman", (None, None)),  # "a" + a word: the article, not option A
        ("Kofi or Lena", (None, None)),  # two options named: ambiguous
        ("E", (None, None)),  # not an option of a 4-option question
        ("", (None, None)),
        ("A", ("A", "leading")),
    ],
)
def test_parse_choice(text, want):
    assert parse_choice(text, OPTIONS) == want


def test_accuracy_metrics_hand_computed():
    rows = [
        {"prediction": "A", "answer": "A", "num_options": 4, "task_type": "movie_qa",
         "category": "giver"},
        {"prediction": "B", "answer": "A", "num_options": 4, "task_type": "movie_qa",
         "category": "giver"},
        {"prediction": None, "answer": "C", "num_options": 2, "task_type": "mmau",
         "category": "sound"},
        {"prediction": "D", "answer": "D", "num_options": 5, "task_type": "mmau",
         "category": "sound"},
        {"prediction": "A", "num_options": 4, "task_type": "mmau"},  # no gold: not scored
    ]  # fmt: skip
    m = accuracy_metrics(rows)
    assert m["questions"] == 4
    assert m["accuracy"] == pytest.approx(2 / 4)
    assert m["unparsed_rate"] == pytest.approx(1 / 4)
    assert m["chance"] == pytest.approx((1 / 4 + 1 / 4 + 1 / 2 + 1 / 5) / 4)
    assert m["task=movie_qa/accuracy"] == pytest.approx(1 / 2)
    assert m["task=mmau/accuracy"] == pytest.approx(1 / 2)
    assert m["task=mmau/questions"] == 2
    assert m["category=giver/accuracy"] == pytest.approx(1 / 2)
    assert chance([2, 4]) == pytest.approx(0.375)
    assert accuracy_metrics([]) == {"questions": 0.0}
