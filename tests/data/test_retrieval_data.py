"""BEIR loaders and TREC run/qrels I/O: round trips, and clear errors on bad files."""

import json

import pytest

from jaxmm.data import retrieval as beir
from jaxmm.retrieval import read_qrels, read_run, write_qrels, write_run


def _dataset():
    corpus = {"d1": {"title": "Cats", "text": "Cats purr."}, "d2": {"title": "", "text": "Dogs."}}
    return beir.BeirDataset(corpus, {"q1": "what purrs"}, {"q1": {"d1": 1, "d2": 0}})


def test_beir_roundtrip(tmp_path):
    beir.write_beir(tmp_path, _dataset())
    # An unjudged query in queries.jsonl is dropped from the split.
    with open(tmp_path / "queries.jsonl", "a") as f:
        f.write(json.dumps({"_id": "q9", "text": "unjudged"}) + "\n")
    ds = beir.load_beir(tmp_path)
    assert ds == _dataset()
    assert ds.doc_text("d1") == "Cats Cats purr." and ds.doc_text("d2") == "Dogs."


def test_beir_errors_name_file_and_line(tmp_path):
    beir.write_beir(tmp_path, _dataset())
    with open(tmp_path / "corpus.jsonl", "a") as f:
        f.write('{"_id": "d3"}\n')
    with pytest.raises(ValueError, match=r"corpus.jsonl:3: missing field\(s\) \['text'\]"):
        beir.load_beir(tmp_path)
    beir.write_beir(tmp_path, _dataset())
    (tmp_path / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\tx\n")
    with pytest.raises(ValueError, match="test.tsv:2: score 'x'"):
        beir.load_beir(tmp_path)
    (tmp_path / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\tnope\t1\n")
    with pytest.raises(ValueError, match="doc ids not in corpus"):
        beir.load_beir(tmp_path)
    with pytest.raises(FileNotFoundError, match="dev.tsv"):
        beir.load_beir(tmp_path, split="dev")


def test_trec_run_and_qrels_roundtrip(tmp_path):
    run = {"q1": {"d1": 0.5, "d2": 1.5, "d3": -2.0}, "q2": {"d9": 3.25}}
    write_run(tmp_path / "run.trec", run, tag="exp")
    lines = (tmp_path / "run.trec").read_text().splitlines()
    assert lines[0] == "q1 Q0 d2 1 1.5 exp" and lines[2].startswith("q1 Q0 d3 3 ")
    assert read_run(tmp_path / "run.trec") == run
    qrels = {"q1": {"d1": 1, "d2": 0}}
    write_qrels(tmp_path / "qrels.txt", qrels)
    assert read_qrels(tmp_path / "qrels.txt") == qrels


def test_trec_errors(tmp_path):
    (tmp_path / "bad.trec").write_text("q1 Q0 d1 1 0.5 tag\nq1 Q0 d2 2\n")
    with pytest.raises(ValueError, match="bad.trec:2: expected 6"):
        read_run(tmp_path / "bad.trec")
    with pytest.raises(ValueError, match="whitespace"):
        write_run(tmp_path / "x", {"q 1": {"d": 1.0}})
