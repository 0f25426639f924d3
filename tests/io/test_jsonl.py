"""JSON lines: round trips, blank lines, file:line errors, atomic replace and append."""

import json
import math
import os

import pytest

from jaxmm.io import jsonl

RECORDS = [{"a": 1, "text": "héllo"}, {"a": 2, "nested": {"x": [1.5, None]}}, {"a": 3}]


def test_round_trip_and_blank_lines(tmp_path):
    path = tmp_path / "r.jsonl"
    assert jsonl.write_jsonl(path, iter(RECORDS)) == 3
    assert jsonl.read_jsonl(path) == RECORDS
    # Blank and whitespace-only lines are skipped, but still count for line numbers.
    path.write_text('\n{"a": 1}\n   \n\n{"a": 2}\n')
    assert list(jsonl.iter_jsonl(path)) == [(2, {"a": 1}), (5, {"a": 2})]
    assert jsonl.line_index(path) == [(1, 2), (15, 5)]
    assert jsonl.read_record_at(path, 15, 5) == {"a": 2}


def test_non_finite_floats_round_trip(tmp_path):
    """metrics.jsonl may hold a NaN loss (the trainer's NaN guard logs it before stopping)."""
    path = tmp_path / "m.jsonl"
    with jsonl.JsonlWriter(path) as w:
        w.write({"step": 1, "loss": float("nan"), "g": float("inf")})
    (row,) = jsonl.read_jsonl(path)
    assert math.isnan(row["loss"]) and row["g"] == math.inf


def test_bad_lines_name_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "a"}\n\n{"text": oops}\n[1, 2]\n{"other": 1}\n')
    with pytest.raises(ValueError, match=rf"{path}:3: bad JSON record \(.* at column 10\)"):
        jsonl.read_jsonl(path)
    index = jsonl.line_index(path)
    with pytest.raises(ValueError, match=rf"{path}:4: record must be a JSON object, got list"):
        jsonl.read_record_at(path, *index[2])
    with pytest.raises(ValueError, match=rf"{path}:5: record lacks required field\(s\) \['text'\]"):
        jsonl.read_record_at(path, *index[3], required_keys=("text",))

    def positive(record):
        if record["text"] != "a":
            raise ValueError("text must be 'a'")

    assert jsonl.read_record_at(path, *index[0], validate=positive) == {"text": "a"}
    with pytest.raises(ValueError, match=rf"{path}:5: 'text'"):  # KeyError from validate
        jsonl.read_record_at(path, *index[3], validate=positive)
    with pytest.raises(FileNotFoundError, match="BEIR file .*nope.jsonl"):
        jsonl.read_jsonl(tmp_path / "nope.jsonl", what="BEIR file")
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        jsonl.line_index(tmp_path / "nope.jsonl")


def test_write_is_atomic_and_keeps_the_old_file_on_failure(tmp_path):
    path = tmp_path / "out.jsonl"
    jsonl.write_jsonl(path, RECORDS)

    def records():
        yield {"a": 10}
        raise RuntimeError("producer died")

    with pytest.raises(RuntimeError, match="producer died"):
        jsonl.write_jsonl(path, records())
    assert jsonl.read_jsonl(path) == RECORDS
    with pytest.raises(TypeError, match="must be a mapping, got list"):
        jsonl.write_jsonl(path, [[1, 2]])
    assert jsonl.read_jsonl(path) == RECORDS
    assert os.listdir(tmp_path) == ["out.jsonl"]  # no temp files left behind


def test_writer_appends_and_each_line_is_on_disk_at_once(tmp_path):
    path = tmp_path / "log.jsonl"
    jsonl.write_jsonl(path, RECORDS[:1])
    writer = jsonl.JsonlWriter(path)
    writer.write({"step": 1})
    # Line-buffered: a reader (or a process that outlives a SIGKILL) sees it before close.
    assert [json.loads(line) for line in path.read_text().splitlines()] == [RECORDS[0], {"step": 1}]
    writer.write({"step": 2})
    writer.close()
    with jsonl.JsonlWriter(path) as again:
        again.write({"step": 3})
    assert jsonl.read_jsonl(path) == [RECORDS[0], {"step": 1}, {"step": 2}, {"step": 3}]
