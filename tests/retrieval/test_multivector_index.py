"""MultiVectorIndex: build, atomic save, memory-mapped load, validation errors."""

import json

import ml_dtypes
import numpy as np
import pytest

from jaxmm.retrieval import IndexFormatError, MultiVectorIndex
from jaxmm.retrieval import index as index_lib


def _docs(seed=0, n_d=6, dim=8):
    rng = np.random.default_rng(seed)
    lens = rng.integers(1, 9, size=n_d)
    return [rng.normal(size=(n, dim)).astype(np.float32) for n in lens], [
        f"d{i}" for i in range(n_d)
    ]


def test_build_from_list_and_padded_agree():
    docs, ids = _docs()
    a = MultiVectorIndex.build(docs, ids)
    L = max(len(d) for d in docs)
    padded = np.zeros((len(docs), L, 8), np.float32)
    mask = np.zeros((len(docs), L), bool)
    for i, d in enumerate(docs):
        padded[i, : len(d)], mask[i, : len(d)] = d, True
    b = MultiVectorIndex.build(padded, ids, doc_mask=mask)
    np.testing.assert_array_equal(a.tokens, b.tokens)
    np.testing.assert_array_equal(a.offsets, b.offsets)
    assert a.offsets[-1] == sum(len(d) for d in docs) and a.num_docs == 6 and a.dim == 8
    # Round trip back to the padded layout used by search.
    docs_p, side, valid = a.padded(multiple=4, doc_multiple=4, dim=16)
    assert docs_p.shape == (8, -(-L // 4) * 4, 16) and valid.sum() == 6
    np.testing.assert_array_equal(docs_p[:6, :L, :8][mask], padded[mask])
    np.testing.assert_array_equal(side[:6, :L], mask)
    assert not side[6:].any() and not docs_p[..., 8:].any()


@pytest.mark.parametrize("dtype", [np.float32, ml_dtypes.bfloat16])
def test_save_load_roundtrip_mmap(tmp_path, dtype):
    docs, ids = _docs(1)
    mods = [np.random.default_rng(i).integers(1, 4, size=len(d)) for i, d in enumerate(docs)]
    idx = MultiVectorIndex.build(docs, ids, mods, dtype=dtype, extra={"encoder": "test"})
    idx.save(tmp_path / "idx")
    manifest = json.loads((tmp_path / "idx" / "manifest.json").read_text())
    assert manifest["dim"] == 8 and manifest["num_docs"] == 6 and manifest["version"] == 1
    assert manifest["dtype"] == np.dtype(dtype).name and manifest["num_modalities"] == 3
    back = MultiVectorIndex.load(tmp_path / "idx")
    assert isinstance(back.tokens.base, np.memmap) or isinstance(back.tokens, np.memmap)
    assert back.tokens.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(np.asarray(back.tokens), idx.tokens)
    np.testing.assert_array_equal(back.modality, idx.modality)
    assert back.doc_ids == ids and back.extra == {"encoder": "test"}
    assert [p.name for p in tmp_path.iterdir()] == ["idx"]  # no temp dirs left behind


def test_crash_mid_save_keeps_old_index(tmp_path, monkeypatch):
    docs, ids = _docs(2)
    old = MultiVectorIndex.build(docs, ids)
    old.save(tmp_path / "idx")
    new = MultiVectorIndex.build(docs[:3], ids[:3])
    calls = []
    real_write = index_lib._write_npy

    def crash_on_second_file(path, array):
        calls.append(path.name)
        if len(calls) == 2:
            raise OSError("disk full (simulated crash)")
        real_write(path, array)

    monkeypatch.setattr(index_lib, "_write_npy", crash_on_second_file)
    with pytest.raises(OSError, match="simulated"):
        new.save(tmp_path / "idx")
    back = MultiVectorIndex.load(tmp_path / "idx")
    assert back.num_docs == 6
    np.testing.assert_array_equal(np.asarray(back.tokens), old.tokens)
    assert [p.name for p in tmp_path.iterdir()] == ["idx"]


def test_overwrite_replaces_index(tmp_path):
    docs, ids = _docs(3)
    MultiVectorIndex.build(docs, ids).save(tmp_path / "idx")
    MultiVectorIndex.build(docs[:2], ids[:2]).save(tmp_path / "idx")
    assert MultiVectorIndex.load(tmp_path / "idx").num_docs == 2
    assert [p.name for p in tmp_path.iterdir()] == ["idx"]


def test_truncated_file_is_a_clear_error(tmp_path):
    docs, ids = _docs(4)
    MultiVectorIndex.build(docs, ids).save(tmp_path / "idx")
    tokens = tmp_path / "idx" / "tokens.npy"
    tokens.write_bytes(tokens.read_bytes()[:-40])
    with pytest.raises(IndexFormatError, match="tokens.npy"):
        MultiVectorIndex.load(tmp_path / "idx")
    with pytest.raises(IndexFormatError, match="tokens.npy"):
        MultiVectorIndex.load(tmp_path / "idx", mmap=False)


def test_manifest_mismatch_and_missing_index(tmp_path):
    docs, ids = _docs(5)
    MultiVectorIndex.build(docs, ids).save(tmp_path / "idx")
    m = json.loads((tmp_path / "idx" / "manifest.json").read_text())
    m["dim"] = 16
    (tmp_path / "idx" / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(IndexFormatError, match="shape"):
        MultiVectorIndex.load(tmp_path / "idx")
    with pytest.raises(FileNotFoundError, match="manifest.json"):
        MultiVectorIndex.load(tmp_path / "nothing")


def test_build_and_search_input_errors():
    docs, ids = _docs(6)
    with pytest.raises(ValueError, match="one dim"):
        MultiVectorIndex.build([docs[0], docs[1][:, :4]], ids[:2])
    with pytest.raises(ValueError, match="doc_ids"):
        MultiVectorIndex.build(docs, ids[:2])
    with pytest.raises(ValueError, match="unique"):
        MultiVectorIndex.build(docs[:2], ["a", "a"])
    idx = MultiVectorIndex.build(docs, ids)
    with pytest.raises(ValueError, match="index dim"):
        idx.search(np.zeros((1, 3, 5), np.float32), k=2)
    with pytest.raises(ValueError, match="k must be"):
        idx.search(np.zeros((1, 3, 8), np.float32), k=7)
