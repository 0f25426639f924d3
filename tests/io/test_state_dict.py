"""Weight files: round trips for every format, lazy sharded reads, and errors naming the file."""

import ast
import json
import os
import pathlib

import ml_dtypes
import numpy as np
import pytest

from jaxmm.io import state_dict as sd


def _tensors():
    rng = np.random.default_rng(0)
    return {
        "layer.0.weight": rng.normal(size=(4, 3)).astype(np.float32),
        "layer.0.bias": rng.normal(size=(4,)).astype(np.float16),
        "half": rng.normal(size=(2, 5)).astype(ml_dtypes.bfloat16),
        "ids": np.arange(6, dtype=np.int64).reshape(2, 3),
        "scalar": np.array(2.5, np.float64),
    }


def _assert_same(got, want):
    assert sorted(got) == sorted(want)
    for name, value in want.items():
        assert got[name].dtype == value.dtype, name
        assert got[name].shape == value.shape, name
        np.testing.assert_array_equal(got[name].astype(np.float64), value.astype(np.float64))


@pytest.mark.parametrize("suffix", [".safetensors", ".npz"])
def test_numpy_formats_round_trip(tmp_path, suffix):
    path = tmp_path / f"w{suffix}"
    sd.save_state_dict(_tensors(), path)
    _assert_same(sd.load_state_dict(path), _tensors())
    assert os.listdir(tmp_path) == [path.name]  # the temp file was renamed, none left


def test_safetensors_metadata_and_atomic_overwrite(tmp_path):
    from safetensors import safe_open

    path = tmp_path / "w.safetensors"
    sd.save_state_dict({"a": np.ones(2, np.float32)}, path, metadata={"format": "pt"})
    with safe_open(str(path), framework="numpy") as f:
        assert f.metadata() == {"format": "pt"}
    with pytest.raises(ValueError, match="cannot write"):
        sd.save_state_dict({"a": np.zeros(2)}, tmp_path / "w.h5")
    with pytest.raises(Exception, match="object"):  # a failed write keeps the old file
        sd.save_state_dict({"a": np.array([object()])}, path)
    np.testing.assert_array_equal(sd.load_state_dict(path)["a"], np.ones(2, np.float32))
    assert os.listdir(tmp_path) == ["w.safetensors"]


@pytest.mark.parametrize("suffix", [".pth", ".pt", ".bin"])
def test_torch_files_round_trip_with_their_dtypes(tmp_path, suffix):
    torch = pytest.importorskip("torch")
    want = _tensors()
    state = {k: torch.from_numpy(v.astype(np.float32)) for k, v in want.items() if k != "half"}
    state["layer.0.bias"] = state["layer.0.bias"].half()
    state["ids"] = state["ids"].long()
    state["scalar"] = state["scalar"].double()
    state["half"] = torch.from_numpy(want["half"].astype(np.float32)).bfloat16()
    state["strided"] = torch.arange(12.0).reshape(3, 4).t()  # a non-contiguous view
    path = tmp_path / f"w{suffix}"
    torch.save(state, path)
    want["strided"] = np.arange(12.0, dtype=np.float32).reshape(3, 4).T
    _assert_same(sd.load_state_dict(path), want)


def test_torch_file_that_is_not_a_flat_state_dict(tmp_path):
    torch = pytest.importorskip("torch")
    torch.save({"model": {"w": torch.ones(2)}}, tmp_path / "nested.pth")
    with pytest.raises(ValueError, match=r"nested.pth'?: entry 'model' is a dict, not a tensor"):
        sd.load_state_dict(tmp_path / "nested.pth")
    torch.save([torch.ones(2)], tmp_path / "list.pt")
    with pytest.raises(ValueError, match=r"list.pt'?: expected a state dict .* got list"):
        sd.load_state_dict(tmp_path / "list.pt")


def test_errors_name_the_file_and_what_was_expected(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"LPIPS weights file '.*missing.safetensors'"):
        sd.load_state_dict(tmp_path / "missing.safetensors", what="LPIPS weights")
    (tmp_path / "w.h5").write_bytes(b"x")
    with pytest.raises(ValueError, match=r"w.h5'?: expected a file ending in one of .*\.npz"):
        sd.load_state_dict(tmp_path / "w.h5")
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="junk.safetensors'?: not a readable safetensors"):
        sd.load_state_dict(tmp_path / "junk.safetensors")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="junk.npz'?: not a readable .npz"):
        sd.load_state_dict(tmp_path / "junk.npz")


def test_missing_torch_is_a_clear_import_error(tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_torch(name, *args, **kwargs):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("No module named 'torch'")
        return real_import(name, *args, **kwargs)

    (tmp_path / "w.pth").write_bytes(b"\x80")
    monkeypatch.setattr(builtins, "__import__", no_torch)
    with pytest.raises(ImportError, match=r"reading weights '.*w.pth' needs torch"):
        sd.load_state_dict(tmp_path / "w.pth")
    # .safetensors and .npz never import torch.
    sd.save_state_dict({"a": np.ones(1, np.float32)}, tmp_path / "a.npz")
    assert sd.load_state_dict(tmp_path / "a.npz")["a"].tolist() == [1.0]


def _write_sharded(folder):
    tensors = _tensors()
    names = sorted(tensors)
    shards = {"s-1.safetensors": names[:2], "s-2.safetensors": names[2:]}
    for shard, members in shards.items():
        sd.save_state_dict({n: tensors[n] for n in members}, folder / shard)
    weight_map = {n: shard for shard, members in shards.items() for n in members}
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    return tensors


def test_lazy_shards_read_headers_then_one_tensor_at_a_time(tmp_path):
    tensors = _write_sharded(tmp_path)
    with sd.SafetensorsShards.of_folder(tmp_path) as shards:
        assert sorted(shards) == sorted(tensors) and len(shards) == len(tensors)
        assert "half" in shards and "nope" not in shards
        assert not shards._handles  # names come from the index: no shard opened yet
        assert shards.shape("half") == (2, 5)
        assert len(shards._handles) == 1  # a shard is opened when first asked for
        _assert_same({n: shards.get(n) for n in shards}, tensors)
        assert len(shards._handles) == 2
        with pytest.raises(KeyError, match="'nope' is in no file"):
            shards.get("nope")
    assert not shards._handles  # closed
    # A single file: its names come from the header.
    (tmp_path / "one").mkdir()
    sd.save_state_dict(tensors, tmp_path / "one" / "model.safetensors")
    with sd.SafetensorsShards.of_folder(tmp_path / "one") as single:
        assert sorted(single) == sorted(tensors)
        np.testing.assert_array_equal(single.get("ids"), tensors["ids"])


def test_sharded_errors_name_the_files(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no model.safetensors or .*index.json in .*"):
        sd.SafetensorsShards.of_folder(tmp_path)
    _write_sharded(tmp_path)
    (tmp_path / "s-2.safetensors").unlink()
    with sd.SafetensorsShards.of_folder(tmp_path) as shards:
        with pytest.raises(FileNotFoundError, match=r"s-2.safetensors \(named in .*index.json\)"):
            shards.shape("scalar")
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}}))
    with pytest.raises(ValueError, match="index.json: no 'weight_map' dict"):
        sd.SafetensorsShards.of_folder(tmp_path)


def test_io_imports_nothing_else_from_jaxmm():
    """jaxmm.io is the lowest jaxmm layer: every other layer may import it, it imports none."""
    folder = pathlib.Path(sd.__file__).parent
    for source in folder.glob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            bad = [n for n in names if n == "jaxmm" or n.startswith("jaxmm.")]
            bad = [n for n in bad if not n.startswith("jaxmm.io")]
            assert not bad, f"{source.name} imports {bad}"
