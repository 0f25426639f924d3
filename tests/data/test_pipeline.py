"""Grain pipelines: process sharding, determinism, checkpointable iterators, jsonl, tfds."""

import json

import grain
import numpy as np
import pytest

from jaxmm.data.jsonl import JsonlSource
from jaxmm.data.pipeline import DataShard, batched


def _source(n=40):
    return grain.MapDataset.range(n).map(lambda i: {"i": np.int64(i), "x": np.full(3, i, "f4")})


def _take(it, n):
    return [next(it)["i"].tolist() for _ in range(n)]


def test_process_shards_are_disjoint_and_cover_an_epoch():
    seen = []
    for index in range(2):
        it = iter(batched(_source(), DataShard(index, 2, per_process_batch=5, seed=3)))
        seen.append(sum(_take(it, 4), []))  # one epoch of this shard = 20 records = 4 batches
    assert not set(seen[0]) & set(seen[1])
    assert sorted(seen[0] + seen[1]) == list(range(40))


def test_same_seed_same_stream_other_seed_other_order():
    a = _take(iter(batched(_source(), DataShard(0, 1, 8, seed=1))), 6)
    b = _take(iter(batched(_source(), DataShard(0, 1, 8, seed=1))), 6)
    c = _take(iter(batched(_source(), DataShard(0, 1, 8, seed=2))), 6)
    assert a == b and a != c


def test_iterator_state_resumes_exactly():
    ds = batched(_source(), DataShard(0, 1, 6, seed=0))
    it = iter(ds)
    _take(it, 9)  # crosses an epoch boundary (40 records / 6 per batch)
    state = json.loads(json.dumps(it.get_state()))  # what the checkpoint stores
    expected = _take(it, 5)
    fresh = iter(ds)
    fresh.set_state(state)
    assert _take(fresh, 5) == expected


def test_jsonl_bad_record_names_file_and_line(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text('{"text": "a"}\n\n{"text": "b"}\n{"text": oops}\n[1, 2]\n{"other": 1}\n')
    src = JsonlSource(str(path), required_keys=("text",))
    assert len(src) == 5 and src[1] == {"text": "b"}
    with pytest.raises(ValueError, match=rf"{path}:4: bad JSON record"):
        src[2]
    with pytest.raises(ValueError, match=rf"{path}:5: record must be a JSON object"):
        src[3]
    with pytest.raises(ValueError, match=rf"{path}:6: record lacks required field\(s\) \['text'\]"):
        src[4]
    with pytest.raises(ValueError, match=":4:"):
        src.check_all()
    with pytest.raises(FileNotFoundError, match="missing.jsonl"):
        JsonlSource(str(tmp_path / "missing.jsonl"))


def test_jsonl_feeds_a_grain_pipeline(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps({"v": i}) + "\n" for i in range(12)))
    src = grain.MapDataset.source(JsonlSource(str(path))).map(lambda r: {"v": np.int32(r["v"])})
    got = sorted(
        sum((next(it)["v"].tolist() for it in [iter(batched(src, DataShard(0, 1, 12, 0)))]), [])
    )
    assert got == list(range(12))


def test_tfds_data_source_with_mock_data():
    tfds = pytest.importorskip("tensorflow_datasets")
    from jaxmm.data.tfds import tfds_source

    with tfds.testing.mock_data(num_examples=12, policy=tfds.testing.MockPolicy.USE_CODE):
        src = tfds_source("mnist", "train")
        assert len(src) == 12
        record = src[0]
        assert record["image"].shape == (28, 28, 1)
        ds = grain.MapDataset.source(src).map(
            lambda r: {"image": r["image"].astype(np.float32), "label": np.int64(r["label"])}
        )
        batch = next(iter(batched(ds, DataShard(0, 1, 4, seed=0))))
        assert batch["image"].shape == (4, 28, 28, 1) and batch["label"].shape == (4,)
