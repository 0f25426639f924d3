"""MultiVENT-layout loader and the procedural CLaMR corpus (jaxmm.data.multivent / clamr_synth)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from PIL import Image

from jaxmm.data import clamr_synth
from jaxmm.data.multivent import MODALITIES, load_multivent, modality_id


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("clamr_synth")
    counts = clamr_synth.generate(
        root, splits={"train": 3, "test": 2}, seed=1, n_frames=3, frame_size=48
    )
    return root, counts


def _rewrite(root, split, edit):
    path = root / f"{split}.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    rows = edit(rows)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_generated_split_loads(corpus):
    root, counts = corpus
    assert counts == {"train": 12, "test": 8}
    split = load_multivent(root, "test")
    assert len(split.videos) == 8 and len(split.queries) == 8
    types = sorted(q.query_type for q in split.queries.values())
    assert types == sorted(list(MODALITIES) * 2)  # 'speech' is read as 'asr'
    for qid, query in split.queries.items():
        (gold,) = split.gold(qid)
        assert gold.endswith(query.query_type)  # sibling k answers the type-k query
        assert all(os.path.isfile(f) for f in split.videos[gold].frames)


def _unique_value(query):
    """The words of a query that are not template words."""
    template = set(clamr_synth.QUERY_TEMPLATES[query.query_type].split())
    return [w for w in query.text.split() if w not in template]


def test_each_query_is_answerable_from_its_modality_only(corpus):
    root, _ = corpus
    split = load_multivent(root, "train")
    videos = split.videos
    for qid, query in split.queries.items():
        (gold,) = split.gold(qid)
        prefix = gold.rsplit("-", 1)[0]
        group = [v for v in videos.values() if v.video_id.rsplit("-", 1)[0] == prefix]
        assert len(group) == 4
        others = [v for v in group if v.video_id != gold]
        if query.query_type != "video":
            words = [w.lower() for w in _unique_value(query)]
            text = videos[gold].text(query.query_type).lower()
            assert all(w in text for w in words), (query.text, text)
            # ... and in no other video of the corpus, in any modality.
            for v in videos.values():
                if v.video_id != gold:
                    blob = " ".join(v.text(m) for m in MODALITIES[1:]).lower()
                    assert not any(w in blob.split() or w.upper() in blob for w in words)
        # Every other modality of the gold video is shared with a distractor sibling.
        for m in MODALITIES[1:]:
            if m != query.query_type:
                assert any(o.text(m) == videos[gold].text(m) for o in others), (qid, m)


def _color_centroids(frames, rgb):
    out = []
    for path in frames:
        im = np.asarray(Image.open(path).convert("RGB")).astype(int)
        body = im[: int(im.shape[0] * 0.8)]  # above the text band
        hit = (np.abs(body - np.array(rgb)).sum(-1) < 30).nonzero()
        assert hit[0].size > 0, f"{path}: no pixel of colour {rgb}"
        out.append((hit[1].mean(), hit[0].mean()))  # (x, y)
    return np.array(out)


def test_video_queries_match_the_drawn_frames(corpus):
    root, _ = corpus
    split = load_multivent(root, "train")
    for qid, query in split.queries.items():
        if query.query_type != "video":
            continue
        color, shape, _, motion = query.text.split()[1:5]
        (gold,) = split.gold(qid)
        xy = _color_centroids(split.videos[gold].frames, clamr_synth.COLORS[color])
        axis, sign = {"left": (0, -1), "right": (0, 1), "up": (1, -1), "down": (1, 1)}[motion]
        steps = np.diff(xy[:, axis]) * sign
        assert (steps > 0).all(), (gold, motion, xy)
        assert shape in clamr_synth.SHAPES


def test_modality_ids():
    assert [modality_id(m) for m in MODALITIES] == [1, 2, 3, 4]
    assert modality_id("speech") == modality_id("asr")
    with pytest.raises(ValueError, match="unknown modality / query_type 'audio'"):
        modality_id("audio")


@pytest.fixture
def copy(corpus, tmp_path):
    import shutil

    root, _ = corpus
    dst = tmp_path / "c"
    shutil.copytree(root, dst)
    return dst


def test_missing_frame_is_named(copy):
    victim = copy / "frames" / "test-g001-ocr" / "01.png"
    victim.unlink()
    with pytest.raises(FileNotFoundError, match=r"test\.jsonl:\d+: video 'test-g001-ocr' frame"):
        load_multivent(copy, "test")
    assert load_multivent(copy, "test", check_frames=False).videos  # opt-out for lazy storage


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda r: [{k: v for k, v in r[0].items() if k != "asr"}] + r[1:], "missing field 'asr'"),
        (lambda r: [r[0] | {"images": []}] + r[1:], "'images' must be a non-empty list"),
        (lambda r: [r[0] | {"query_type": "audio"}] + r[1:], "unknown modality / query_type"),
        (lambda r: r + [r[0] | {"query_id": "other"}], "duplicate video_id"),
        (lambda r: [r[0] | {"ocr": 3}] + r[1:], "field 'ocr' must be a string"),
        (
            lambda r: [{k: v for k, v in r[0].items() if k != "query_id"}] + r[1:],
            "inline query but no 'query_id'",
        ),
    ],
)
def test_bad_records_are_named_with_file_and_line(copy, edit, message):
    _rewrite(copy, "test", edit)
    with pytest.raises(ValueError, match=message) as err:
        load_multivent(copy, "test")
    assert "test.jsonl:" in str(err.value)


def test_qrels_file_and_unjudged_queries(copy):
    (copy / "test_qrels.jsonl").write_text(
        json.dumps({"query_id": "q-test-g000-ocr", "doc_id": "nope", "relevance": 1}) + "\n"
    )
    with pytest.raises(ValueError, match=r"test_qrels\.jsonl:1: doc_id 'nope' is not a video"):
        load_multivent(copy, "test")
    (copy / "test_qrels.jsonl").write_text(
        json.dumps({"query_id": "q-test-g000-ocr", "doc_id": "test-g000-ocr", "relevance": 1})
        + "\n"
    )
    with pytest.raises(ValueError, match="7 queries have no relevant video"):
        load_multivent(copy, "test")


def test_missing_split_lists_what_exists(copy):
    with pytest.raises(FileNotFoundError, match=r"dev\.jsonl not found \(have: .*test\.jsonl"):
        load_multivent(copy, "dev")


def test_too_many_groups_is_refused(tmp_path):
    with pytest.raises(ValueError, match="at most 64 groups"):
        clamr_synth.generate(tmp_path, splits={"train": 65})


# ----------------------------------------------------- the noisy corpus (noise=True, the demo's)


@pytest.fixture(scope="module")
def noisy(tmp_path_factory):
    root = tmp_path_factory.mktemp("clamr_noisy")
    clamr_synth.generate(
        root, splits={"train": 4, "test": 3}, seed=2, n_frames=2, frame_size=32, noise=True
    )
    return root


def _content_words(query):
    return [w.lower() for w in _unique_value(query)]


def _words_of(video, modality):
    return set(video.text(modality).lower().replace(",", " ").replace(".", " ").split())


TEXT = clamr_synth.TEXT_MODALITIES


def test_noisy_corpus_gold_answer_only_in_the_gold_modality_of_the_positive(noisy):
    for split_name in ("train", "test"):
        split = load_multivent(noisy, split_name)
        for qid, query in split.queries.items():
            (gold,) = split.gold(qid)
            words = _content_words(query)
            assert len(words) >= 2, query.text  # every query names two or more content words
            pos = split.videos[gold]
            if query.query_type != "video":
                # all of them, together, in the positive's gold modality ...
                assert set(words) <= _words_of(pos, query.query_type), (qid, pos)
            # ... none of them in the positive's other text modalities ...
            for m in TEXT:
                if m != query.query_type:
                    assert not set(words) & _words_of(pos, m), (qid, m, pos)
            # ... and no modality of any other video holds all of them.
            for v in split.videos.values():
                if v.video_id != gold:
                    for m in TEXT:
                        assert not set(words) <= _words_of(v, m), (qid, v.video_id, m)


def test_noisy_corpus_plants_each_query_in_wrong_modalities_of_its_siblings(noisy):
    split = load_multivent(noisy, "train")
    for qid, query in split.queries.items():
        (gold,) = split.gold(qid)
        words = set(_content_words(query))
        group = gold.rsplit("-", 1)[0]
        for v in split.videos.values():
            if v.video_id == gold or not v.video_id.startswith(group + "-"):
                continue
            # every query word sits in some wrong-modality field of each sibling (token-max
            # finds all of them there), one modality never holds two of them
            wrong = [_words_of(v, m) & words for m in TEXT if m != query.query_type]
            assert set().union(*wrong) == words, (qid, v.video_id, wrong)
            assert all(len(w) <= 1 for w in wrong), (qid, v.video_id, wrong)
    # clutter: ticker text in OCR, filler / off-topic speech, boilerplate descriptions
    videos = list(split.videos.values())
    assert all(any(t in v.ocr for t in clamr_synth.TICKERS) for v in videos)
    assert all(any(s in v.asr for s in clamr_synth.OFF_TOPIC) for v in videos)
    assert all(any(b in v.description for b in clamr_synth.BOILERPLATE) for v in videos)


def test_noisy_corpus_is_deterministic_by_seed(noisy, tmp_path):
    kwargs = dict(splits={"train": 4, "test": 3}, n_frames=2, frame_size=32, noise=True)
    clamr_synth.generate(tmp_path / "same", seed=2, **kwargs)
    clamr_synth.generate(tmp_path / "other", seed=3, **kwargs)
    for split in ("train", "test"):
        want = (noisy / f"{split}.jsonl").read_text()
        assert (tmp_path / "same" / f"{split}.jsonl").read_text() == want
        assert (tmp_path / "other" / f"{split}.jsonl").read_text() != want
    frame = "frames/test-g001-asr/01.png"
    assert (tmp_path / "same" / frame).read_bytes() == (noisy / frame).read_bytes()


def test_demo_corpus_fits_the_tiny_token_budgets(tmp_path):
    """No field of the demo's noisy corpus is truncated by configs/clamr.py:tiny (a truncated
    field could drop a query's answer)."""
    from tokenizers import Tokenizer

    from configs.clamr import get_config
    from jaxmm.models.text_encoder import minilm_model_dir

    d = get_config("tiny").data
    assert d.synth_noise
    clamr_synth.generate(
        tmp_path,
        splits={"train": d.train_groups, "test": d.test_groups},
        seed=d.seed,
        n_frames=2,
        frame_size=16,
        noise=True,
    )
    tok = Tokenizer.from_file(str(minilm_model_dir() / "tokenizer.json"))
    tok.no_padding()
    tok.no_truncation()
    budgets = {"ocr": d.budget_ocr, "asr": d.budget_asr, "description": d.budget_description}
    for split in ("train", "test"):
        for v in load_multivent(tmp_path, split, check_frames=False).videos.values():
            for m, budget in budgets.items():
                n = len(tok.encode(v.text(m), add_special_tokens=False).ids)
                assert n <= budget, (v.video_id, m, n, budget)
