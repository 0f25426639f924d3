"""Short-answer matching (jaxmm.eval.answers)."""

from jaxmm.eval.answers import exact_match, normalize


def test_normalize_and_exact_match():
    assert normalize("The  Eiffel-Tower!") == "eiffel tower"
    assert exact_match("A dog.", "dog")
    assert exact_match("Lima", ["Oslo", "lima"])
    assert not exact_match("a dog and a cat", "dog")  # equality, not containment
    assert not exact_match("Theodore", "odore")  # articles only as whole words
