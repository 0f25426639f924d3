"""Annotation items in the shapes MEXA's release reads (Video-MMMU: `options` + letter;
MMAU: `choices` + the answer's text) become `mexa` records; open items are skipped and
counted; bad items are named."""

import json

import pytest

from jaxmm.data.mcq_annotations import AnnotationError, load_annotations, records_from_annotations


def test_both_shapes_and_open_items(tmp_path):
    items = [
        {"id": "q1", "question": "Which law?", "options": ["Ohm", "Hooke"], "answer": "b",
         "question_type": "multiple-choice", "vpath": "v1.mp4"},
        {"id": 7, "question": "What sound?", "choices": ["a dog", "a bell", "rain"],
         "answer": "A bell"},
        {"uid": "q3", "question": "Explain.", "question_type": "open", "answer": "because"},
        {"question_id": 9, "question": "Which?", "options": ["x", "y"], "answer": 0},
        {"q_uid": "u", "question": "No gold?", "options": ["x", "y"]},
    ]  # fmt: skip
    (tmp_path / "a.json").write_text(json.dumps(items))
    records, skipped = load_annotations(tmp_path / "a.json", "mmau")
    assert skipped == 1
    assert [(r["id"], r.get("answer"), r["task_type"]) for r in records] == [
        ("q1", "B", "mmau"), ("7", "B", "mmau"), ("9", "A", "mmau"), ("u", None, "mmau")
    ]  # fmt: skip
    assert records[1]["options"] == ["a dog", "a bell", "rain"] and "choices" not in records[1]
    assert records[0]["vpath"] == "v1.mp4"  # extra fields kept
    (tmp_path / "a.jsonl").write_text("\n".join(json.dumps(i) for i in items[:2]))
    assert len(load_annotations(tmp_path / "a.jsonl", "video_mmmu")[0]) == 2


@pytest.mark.parametrize(
    "item, message",
    [
        ({"id": 1, "question": "q", "options": ["x", "y"], "answer": "z"}, "field 'answer' 'z'"),
        ({"id": 1, "question": "q", "options": ["x", "y"], "answer": 2}, "field 'answer' 2"),
        ({"question": "q", "options": ["x", "y"]}, "no id field"),
        ({"id": 1, "options": ["x", "y"]}, "field 'question'"),
        ({"id": 1, "question": "q", "options": "x y"}, "must be a list of strings"),
    ],
)
def test_bad_items_are_named(item, message):
    with pytest.raises(AnnotationError, match=rf"ann\[1\]: .*{message}"):
        records_from_annotations(
            [{"id": 0, "question": "ok", "options": ["a", "b"]}, item], "m3d", "ann"
        )
