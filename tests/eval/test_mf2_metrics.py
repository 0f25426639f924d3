"""MF² parsing and metrics against hand-computed values, and the release-layout loader's
named errors (file:line and column)."""

import pytest

from jaxmm.data import movies_synth as ms
from jaxmm.eval import mf2


# ------------------------------------------------------------------------------ parsers
@pytest.mark.parametrize(
    "text, strict, first, last, fallback",
    [
        ("<answer>TRUE</answer>", True, True, True, True),
        ("<answer> false. </answer>", False, False, False, False),
        # the explanation argues one way, the tag decides
        ("It looks false at first, but it is true. <answer>TRUE</answer>", True, False, True, True),
        # no tag: strict gives up, fallback takes the first occurrence
        ("False. Actually, on reflection, true.", None, False, True, False),
        ("TRUE or FALSE? <answer>FALSE</answer>", False, True, False, False),
        # two tags: the last one is the final answer
        ("<answer>TRUE</answer> wait <answer>FALSE</answer>", False, True, False, False),
        ("<answer>maybe</answer> it is true", None, True, True, True),
        ("I cannot tell.", None, None, None, None),
        ("The claim is untrue and falsely stated.", None, None, None, None),  # whole words only
        ("", None, None, None, None),
    ],
)
def test_parsers(text, strict, first, last, fallback):
    got = [mf2.parse_answer(text, p) for p in ("strict", "first", "last", "strict_fallback")]
    assert got == [strict, first, last, fallback]


def test_unknown_parser():
    with pytest.raises(ValueError, match="unknown parser 'middle'"):
        mf2.parse_answer("true", "middle")


# ------------------------------------------------------------------------------ metrics
def test_pair_metrics_hand_computed():
    R = mf2.PairResult
    results = [
        R("m1", True, False),  # correct
        R("m1", True, True),  # fib believed
        R("m2", False, False),  # fact rejected
        R("m2", None, False),  # unparsable fact
        R("m3", True, False),  # correct
    ]
    m = mf2.pair_metrics(results)
    assert m["pairs"] == 5 and m["movies"] == 3
    assert m["pairwise_accuracy"] == pytest.approx(2 / 5)
    assert m["tpr"] == pytest.approx(3 / 5)  # facts judged TRUE: m1, m1, m3
    assert m["tnr"] == pytest.approx(4 / 5)  # fibs judged FALSE: all but the second
    assert m["none_rate"] == pytest.approx(1 / 10)  # one claim of ten
    assert m["movie_pairwise_accuracy"] == pytest.approx((1 / 2 + 0 + 1) / 3)
    assert m["movie/m1/pairwise_accuracy"] == 0.5 and m["movie/m2/pairwise_accuracy"] == 0.0
    assert m["movie/m2/tpr"] == 0.0 and m["movie/m2/tnr"] == 1.0
    assert m["movie/m2/none_rate"] == 0.25
    assert mf2.pair_metrics([]) == {"pairs": 0.0}


def test_always_true_scores_zero_and_chance_is_a_quarter():
    R = mf2.PairResult
    always = mf2.pair_metrics([R("m", True, True)] * 4)
    assert (always["pairwise_accuracy"], always["tpr"], always["tnr"]) == (0.0, 1.0, 0.0)
    # every combination of two coin flips once: exactly one of four pairs is right
    flips = [R("m", a, b) for a in (True, False) for b in (True, False)]
    assert mf2.pair_metrics(flips)["pairwise_accuracy"] == mf2.CHANCE


# ------------------------------------------------------------------------------ loader
@pytest.fixture
def release(tmp_path):
    ms.write_dataset(str(tmp_path), n=2, seed=0, video=False)
    return tmp_path


def test_load_pairs_and_context(release):
    pairs = mf2.load_pairs(release)
    lines = (release / "metadata.csv").read_text().splitlines()
    assert len(pairs) == len(lines) - 1
    first = pairs[0]
    assert first.pair_id == "movie000-0" and first.where.endswith("metadata.csv:2")
    assert first.category == "character" and first.extra == {"evidence": "text"}
    assert [p.pair_id for p in pairs if p.movie_id == "movie001"][0] == "movie001-0"
    text = mf2.transcript(release, "movie000")
    assert "-->" not in text and text.count("\n") == 5  # 6 lines, timing lines dropped
    assert "gives" in mf2.synopsis(release, "movie000")
    with pytest.raises(FileNotFoundError, match="movie000.mp4"):
        mf2.video_path(release, "movie000")  # written without videos


def _rewrite(release, line_no: int, new: str) -> None:
    path = release / "metadata.csv"
    lines = path.read_text().splitlines()
    lines[line_no - 1] = new
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize(
    "line_no, new, match",
    [
        (1, "movie_id,true_claim,category", r"csv:1: header lacks column\(s\) \['false_claim'\]"),
        (3, "movie000,,A gives B.,object,scene,text", r"metadata.csv:3: column 'true_claim'"),
        (4, "movie000,A gives B the key.", r"metadata.csv:4: column 'false_claim' is missing"),
        (5, "movie000,x,y,object,scene,text,surplus", r"metadata.csv:5: row has 7 fields"),
        (6, "movie000,Same.,Same.,object,scene,text", r"metadata.csv:6: column 'false_claim' eq"),
        (7, " ,x,y,object,scene,text", r"metadata.csv:7: column 'movie_id'"),
    ],
)  # fmt: skip
def test_malformed_metadata_rows_are_named(release, line_no, new, match):
    _rewrite(release, line_no, new)
    with pytest.raises(mf2.MF2DataError, match=match):
        mf2.load_pairs(release)


def test_missing_files_are_named(release, tmp_path_factory):
    (release / "subtitles" / "movie001.srt").unlink()
    with pytest.raises(FileNotFoundError, match="subtitle file .*movie001.srt"):
        mf2.transcript(release, "movie001")
    (release / "synopses" / "movie001.txt").write_text("  \n")
    with pytest.raises(mf2.MF2DataError, match="movie001.txt' is empty"):
        mf2.synopsis(release, "movie001")
    with pytest.raises(FileNotFoundError, match="metadata file"):
        mf2.load_pairs(tmp_path_factory.mktemp("empty"))
