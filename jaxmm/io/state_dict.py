"""The one weight-file reader and writer: {tensor name: numpy array} state dicts on disk.

Formats, chosen by suffix:
  * `.safetensors` (read whole, or lazily one tensor at a time through `SafetensorsShards`,
    which also reads sharded Hugging Face folders through `model.safetensors.index.json`);
  * `.npz` (numpy, no pickles);
  * `.pth` / `.pt` / `.bin` (torch pickles, read with `torch.load(weights_only=True)`; torch is
    an optional dependency imported only for these suffixes).
Dtypes are kept as stored; bfloat16 arrives as `ml_dtypes.bfloat16` from every format.
Errors name the file and what was expected of it.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

SAFETENSORS_SUFFIXES = (".safetensors",)
NPZ_SUFFIXES = (".npz",)
TORCH_SUFFIXES = (".pth", ".pt", ".bin")
SUFFIXES = SAFETENSORS_SUFFIXES + NPZ_SUFFIXES + TORCH_SUFFIXES

PathLike = str | os.PathLike


def _check_file(path: str, what: str) -> None:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} file {path!r} not found")


def load_state_dict(path: PathLike, *, what: str = "weights") -> dict[str, np.ndarray]:
    """Reads a whole weight file into {name: array}; `what` names it in errors."""
    path = os.fspath(path)
    _check_file(path, what)
    if path.endswith(SAFETENSORS_SUFFIXES):
        from safetensors.numpy import load_file

        try:
            return load_file(path)
        except Exception as e:  # safetensors raises its own error types on bad headers
            raise ValueError(f"{what} {path!r}: not a readable safetensors file ({e})") from e
    if path.endswith(NPZ_SUFFIXES):
        try:
            with np.load(path, allow_pickle=False) as archive:
                return {name: _npz_array(archive[name]) for name in archive.files}
        except (ValueError, OSError) as e:
            raise ValueError(f"{what} {path!r}: not a readable .npz archive ({e})") from e
    if path.endswith(TORCH_SUFFIXES):
        return _load_torch(path, what)
    raise ValueError(f"{what} {path!r}: expected a file ending in one of {SUFFIXES}")


def _npz_array(array: np.ndarray) -> np.ndarray:
    """np.savez stores ml_dtypes.bfloat16 as raw 2-byte voids ('V2'); the only 2-byte
    ml_dtypes type is bfloat16, so view those back as bfloat16."""
    if array.dtype == np.dtype("V2"):
        import ml_dtypes

        return array.view(ml_dtypes.bfloat16)
    return array


def _load_torch(path: str, what: str) -> dict[str, np.ndarray]:
    try:
        import torch
    except ImportError as e:
        raise ImportError(
            f"reading {what} {path!r} needs torch (the torch-parity extra); or convert it to "
            "safetensors where torch is installed"
        ) from e
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # unpickling errors come in many types
        raise ValueError(f"{what} {path!r}: torch.load(weights_only=True) failed ({e})") from e
    if not isinstance(state, Mapping):
        raise ValueError(
            f"{what} {path!r}: expected a state dict {{name: tensor}}, got {type(state).__name__}"
        )
    out = {}
    for name, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise ValueError(
                f"{what} {path!r}: entry {name!r} is a {type(value).__name__}, not a tensor "
                "(expected a flat state dict)"
            )
        out[str(name)] = _torch_to_numpy(value)
    return out


def _torch_to_numpy(tensor: Any) -> np.ndarray:
    """A CPU tensor as a numpy array of the same dtype (numpy has no bfloat16: ml_dtypes)."""
    import torch

    tensor = tensor.detach().cpu()
    if tensor.dtype == torch.bfloat16:
        import ml_dtypes

        return tensor.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    return tensor.numpy()


def save_state_dict(
    tensors: Mapping[str, np.ndarray], path: PathLike, *, metadata: dict[str, str] | None = None
) -> None:
    """Writes {name: array} as .safetensors (with `metadata`) or .npz, atomically.

    The file is written under a temporary name beside `path` and renamed, so a crash never
    leaves a half-written file under the final name.
    """
    path = os.fspath(path)
    arrays = {name: np.asarray(value) for name, value in tensors.items()}
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        if path.endswith(SAFETENSORS_SUFFIXES):
            from safetensors.numpy import save_file

            save_file(arrays, tmp, metadata=metadata)
        elif path.endswith(NPZ_SUFFIXES):
            if metadata:
                raise ValueError(f"{path!r}: .npz files cannot hold metadata")
            with open(tmp, "wb") as f:
                np.savez(f, **arrays)
        else:
            raise ValueError(f"cannot write {path!r}: expected a .safetensors or .npz path")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def safetensors_index(index_path: PathLike) -> dict[str, str]:
    """tensor name -> shard path, from a Hugging Face `*.safetensors.index.json`."""
    index_path = os.fspath(index_path)
    _check_file(index_path, "safetensors index")
    with open(index_path) as f:
        try:
            weight_map = json.load(f).get("weight_map")
        except (json.JSONDecodeError, AttributeError) as e:
            raise ValueError(f"{index_path}: not a JSON object with a 'weight_map' ({e})") from e
    if not isinstance(weight_map, dict):
        raise ValueError(f"{index_path}: no 'weight_map' dict")
    folder = os.path.dirname(index_path)
    return {name: os.path.join(folder, shard) for name, shard in weight_map.items()}


class SafetensorsShards:
    """Lazily opened safetensors file(s): names and shapes from the headers, tensors one at a
    time (memory-mapped), so a checkpoint larger than host memory can be placed tensor by
    tensor. Use as a context manager, or call `close()`.

    `weight_map` maps each tensor name to its file (`safetensors_index`, or a single file's
    names through `SafetensorsShards.of_file`); `named_in` is said in the error when a
    mapped file does not exist.
    """

    def __init__(self, weight_map: Mapping[str, str], *, named_in: str | None = None):
        self.weight_map = dict(weight_map)
        self.named_in = named_in
        self._handles: dict[str, Any] = {}
        self._stack = contextlib.ExitStack()

    @classmethod
    def of_file(cls, path: PathLike) -> SafetensorsShards:
        """Every tensor of one .safetensors file (reads the header only)."""
        path = os.fspath(path)
        shards = cls({})
        shards.weight_map = dict.fromkeys(shards._handle(path).keys(), path)
        return shards

    @classmethod
    def of_folder(
        cls,
        folder: PathLike,
        single: str = "model.safetensors",
        index: str = "model.safetensors.index.json",
    ) -> SafetensorsShards:
        """A Hugging Face folder: sharded through `index` if present, else `single`."""
        folder = os.fspath(folder)
        index_path = os.path.join(folder, index)
        if os.path.isfile(index_path):
            return cls(safetensors_index(index_path), named_in=index)
        single_path = os.path.join(folder, single)
        if os.path.isfile(single_path):
            return cls.of_file(single_path)
        present = sorted(os.listdir(folder)) if os.path.isdir(folder) else "(no such folder)"
        raise FileNotFoundError(f"no {single} or {index} in {folder!r}; it holds {present}")

    def _handle(self, path: str) -> Any:
        if path not in self._handles:
            if not os.path.isfile(path):
                where = f" (named in {self.named_in})" if self.named_in else ""
                raise FileNotFoundError(f"{path}{where} does not exist")
            from safetensors import safe_open

            try:
                handle = safe_open(path, framework="numpy")
            except Exception as e:  # safetensors raises its own error types on bad headers
                raise ValueError(f"{path!r}: not a readable safetensors file ({e})") from e
            self._handles[path] = self._stack.enter_context(handle)
        return self._handles[path]

    def __contains__(self, name: object) -> bool:
        return name in self.weight_map

    def __iter__(self) -> Iterator[str]:
        return iter(self.weight_map)

    def __len__(self) -> int:
        return len(self.weight_map)

    def _file_of(self, name: str) -> str:
        if name not in self.weight_map:
            raise KeyError(f"tensor {name!r} is in no file of this checkpoint")
        return self.weight_map[name]

    def shape(self, name: str) -> tuple[int, ...]:
        """The stored shape, from the header (no tensor data is read)."""
        return tuple(self._handle(self._file_of(name)).get_slice(name).get_shape())

    def get(self, name: str) -> np.ndarray:
        """One tensor, read from its file."""
        return self._handle(self._file_of(name)).get_tensor(name)

    def close(self) -> None:
        self._stack.close()
        self._handles.clear()

    def __enter__(self) -> SafetensorsShards:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
