"""ECRS frame selection: the entropy, the product rule, the growing threshold, the round cap
and the top-up, each against hand-computed values; and a decoded procedural clip where
entropy alone must find the few frames with content."""

from __future__ import annotations

import numpy as np
import pytest

from jaxmm.data import reagent_synth
from jaxmm.data.video import read_video, write_video
from jaxmm.pipelines import reagent_frames as ecrs


def test_colour_entropy_by_hand():
    uniform = np.full((1, 4, 4, 3), 7, np.uint8)
    halves = np.zeros((1, 4, 4, 3), np.uint8)
    halves[0, :2] = 255  # every channel: half 0, half 255 -> 1 bit
    quarters = np.zeros((1, 4, 4, 3), np.uint8)
    quarters[0, :, :, 0] = np.array([0, 1, 2, 3])  # red: 4 equal values -> 2 bits; G, B: 0
    e = ecrs.colour_entropy(np.concatenate([uniform, halves, quarters]))
    # atol: the +1e-9 added to every bin (as the released code does) adds ~8e-6 bits
    np.testing.assert_allclose(e, [0.0, 1.0, 2.0 / 3.0], atol=2e-5)
    with pytest.raises(ValueError, match=r"\[F, H, W, 3\]"):
        ecrs.colour_entropy(np.zeros((4, 4, 3), np.uint8))


def test_product_rule_rounds_and_top_up_by_hand():
    # entropy [0, 2, 4, 4, 4] -> minmax [0, .5, 1, 1, 1]; similarity [1, 1, 0, .5, 1]
    # round 0 (0.03):   product [0, .5, 0, .5, 1] -> minmax same -> keep {1, 3, 4}
    # round 1 (0.0303): over {1, 3, 4}: entropy [0, 1, 1] x sim [1, 0, 1] = [0, 0, 1] -> {4}
    # round 2 (0.0306): over {4}: minmax of one value is 0 -> nothing passes -> stop with {4}
    # top-up to 2: whole-clip product [0, .5, 0, .5, 1], best two 4 then 1 (tie 1/3: earlier)
    sel = ecrs.select_frames(np.array([0, 2, 4, 4, 4.0]), np.array([1, 1, 0, 0.5, 1]), min_frames=2)
    assert sel.indices == (1, 4)
    assert sel.kept_per_round == (3, 1, 0) and sel.rounds == 3 and sel.topped_up == 1
    np.testing.assert_allclose(sel.thresholds, [0.03, 0.0303, 0.030603])
    # without a top-up need the loop's result stands
    assert ecrs.select_frames(
        np.array([0, 2, 4, 4, 4.0]), np.array([1, 1, 0, 0.5, 1]), min_frames=1
    ).indices == (4,)


def test_threshold_grows_each_round():
    # round 0: minmax [0, .5, .5151, 1] -> keep {1, 2, 3}
    # round 1: over {1, 2, 3}: [0, .0302, 1]; .0302 <= 0.0303 (grown) -> keep {3} only
    #          (a constant 0.03 would keep {2, 3} and need another round)
    sel = ecrs.select_frames(np.array([0.0, 0.5, 0.5151, 1.0]), min_frames=1)
    assert sel.indices == (3,)
    assert sel.kept_per_round == (3, 1, 0)


def test_at_most_ten_rounds():
    # linear entropies: every round drops exactly the lowest frame; 10 rounds leave {10, 11}
    sel = ecrs.select_frames(np.arange(12.0), min_frames=1)
    assert sel.rounds == 10 and sel.indices == (10, 11)
    assert ecrs.select_frames(np.arange(12.0), min_frames=1, max_rounds=3).indices == tuple(
        range(3, 12)
    )


def test_top_up_to_min_frames_or_all():
    e = np.array([0, 0, 0, 5, 0, 0.0])
    assert ecrs.select_frames(e, min_frames=3).indices == (0, 1, 3)  # ties: earlier frames
    assert ecrs.select_frames(e, min_frames=32).indices == tuple(range(6))  # fewer than 32
    sel = ecrs.select_frames(np.arange(40.0))  # defaults: >= 32 frames
    assert len(sel.indices) >= 32


def test_bad_shapes_fail_clearly():
    with pytest.raises(ValueError, match="similarity shape"):
        ecrs.select_frames(np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError, match="non-empty"):
        ecrs.select_frames(np.zeros(0))


def test_entropy_alone_finds_the_content_frames_of_a_decoded_clip(tmp_path):
    rng = np.random.default_rng(0)
    frames = np.zeros((48, 96, 128, 3), np.uint8)  # black, except four frames with content
    content = [5, 17, 18, 40]
    for i in content:
        frames[i] = reagent_synth.render_event("red", "teal")
        frames[i, :40, :40] = rng.integers(0, 256, (40, 40, 3))  # textured corner
    clip = read_video(write_video(tmp_path / "c.mp4", frames, fps=8))
    entropy = ecrs.colour_entropy(clip.frames)
    assert set(np.argsort(-entropy)[:4]) == set(content)
    sel = ecrs.select_frames(entropy, min_frames=4)
    assert set(sel.indices) == set(content)
    # the default budget tops up to 32 and keeps every content frame
    sel32 = ecrs.select_frames(entropy)
    assert len(sel32.indices) == 32 and set(content) <= set(sel32.indices)


def test_cosine_similarity():
    np.testing.assert_allclose(
        ecrs.cosine_similarity(np.array([[1.0, 0], [0, 2], [1, 1]]), np.array([3.0, 0])),
        [1, 0, np.sqrt(0.5)],
    )
