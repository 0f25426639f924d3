"""TextTracker: streamed deltas add up to the final text; stop strings cut before the stop."""

import numpy as np
import pytest

from jaxmm.generate.text import TextTracker


def _stream(tok, ids, stop=()):
    tracker = TextTracker(tok, stop)
    deltas = [tracker.add(i) for i in ids]
    deltas.append(tracker.finish())
    return tracker, deltas


def test_deltas_concatenate_to_full_decode(hf_tokenizer):
    text = "Jax and Flax make research code fast; café, naïve, 東京 and 🦊 are fine too."
    ids = hf_tokenizer.encode(text, add_special_tokens=False)
    tracker, deltas = _stream(hf_tokenizer, ids)
    assert "".join(deltas) == text == tracker.text
    # No delta ever contains half a character.
    assert all("\ufffd" not in d for d in deltas)


def test_random_byte_tokens_stream_like_full_decode(hf_tokenizer):
    """Random ids (invalid UTF-8 included) stream to exactly the full decode."""
    rng = np.random.default_rng(0)
    ids = rng.integers(0, len(hf_tokenizer), size=200).tolist()
    tracker, deltas = _stream(hf_tokenizer, ids)
    assert "".join(deltas) == hf_tokenizer.decode(ids, skip_special_tokens=True)


@pytest.mark.parametrize("stop", [["lazy"], ["dog.", "fox"], ["zzz"], ["o"]])
def test_stop_strings_truncate_before_the_first_stop(hf_tokenizer, stop):
    text = "The quick brown fox jumps over the lazy dog."
    ids = hf_tokenizer.encode(text, add_special_tokens=False)
    tracker, deltas = _stream(hf_tokenizer, ids, stop)
    hits = [text.find(s) for s in stop if s in text]
    want = text[: min(hits)] if hits else text
    assert "".join(deltas) == want == tracker.text
    assert tracker.stopped == bool(hits)


def test_stop_prefix_is_held_back_until_resolved(hf_tokenizer):
    """Text that might become a stop string is not emitted early, then released."""
    tracker = TextTracker(hf_tokenizer, ["brown cow"])
    out = ""
    for i in hf_tokenizer.encode("The quick brown", add_special_tokens=False):
        out += tracker.add(i)
    assert out == "The quick "  # "brown" could still start "brown cow"
    for i in hf_tokenizer.encode(" fox", add_special_tokens=False):
        out += tracker.add(i)
    assert out + tracker.finish() == "The quick brown fox"
