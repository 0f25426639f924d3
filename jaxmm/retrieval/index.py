"""MultiVectorIndex: per-token document embeddings (packed) + ids, saved atomically.

On disk (one directory):
  manifest.json   {"format": "jaxmm.multivector", "version", "dim", "dtype", "num_docs",
                   "num_tokens", "num_modalities", "files", "extra"}
  tokens.npy      [num_tokens, dim] (bf16 stored as its uint16 bit pattern)
  offsets.npy     [num_docs + 1] int64; doc d owns tokens[offsets[d]:offsets[d+1]]
  modality.npy    [num_tokens] int8, 1..M (only for modality-aware indexes, e.g. CLaMR)
  doc_ids.json    list of num_docs strings
Packed storage has no padding waste; `load` memory-maps the arrays. `save` writes a sibling
temp directory, fsyncs it and swaps it in with renames, so a crash mid-save leaves the
previous index intact.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
from jax.sharding import Mesh

from jaxmm.retrieval import search as search_lib
from kernels_pallas.maxsim import padding

FORMAT = "jaxmm.multivector"
VERSION = 1
_DTYPES = {"float32": np.float32, "float16": np.float16, "bfloat16": ml_dtypes.bfloat16}


class IndexFormatError(ValueError):
    """A malformed, truncated or mismatched index (subclass of ValueError)."""


def _dtype_name(dtype: Any) -> str:
    name = np.dtype(dtype).name
    if name not in _DTYPES:
        raise ValueError(f"index dtype must be one of {sorted(_DTYPES)}, got {name}")
    return name


class MultiVectorIndex:
    """Packed multi-vector document store with exhaustive sharded MaxSim search."""

    def __init__(
        self,
        tokens: np.ndarray,
        offsets: np.ndarray,
        doc_ids: Sequence[str],
        modality: np.ndarray | None = None,
        num_modalities: int | None = None,
        extra: dict | None = None,
    ):
        if tokens.ndim != 2:
            raise ValueError(f"tokens must be [num_tokens, dim], got shape {tokens.shape}")
        if offsets.ndim != 1 or len(offsets) != len(doc_ids) + 1:
            raise ValueError(
                f"offsets must be [num_docs + 1] = [{len(doc_ids) + 1}], got {offsets.shape}"
            )
        if offsets[0] != 0 or offsets[-1] != tokens.shape[0] or np.any(np.diff(offsets) < 0):
            raise ValueError("offsets must start at 0, be non-decreasing and end at num_tokens")
        if len(set(doc_ids)) != len(doc_ids):
            raise ValueError("doc_ids must be unique")
        if modality is not None and modality.shape != tokens.shape[:1]:
            raise ValueError(f"modality shape {modality.shape} != [num_tokens={len(tokens)}]")
        self.tokens = tokens
        self.offsets = offsets
        self.doc_ids = list(doc_ids)
        self.modality = modality
        self.num_modalities = num_modalities
        self.extra = dict(extra or {})
        self._device_cache: dict = {}

    # ------------------------------------------------------------------ build
    @classmethod
    def build(
        cls,
        doc_embeddings: np.ndarray | Sequence[np.ndarray],
        doc_ids: Sequence[str],
        modality_ids: np.ndarray | Sequence[np.ndarray] | None = None,
        *,
        doc_mask: np.ndarray | None = None,
        num_modalities: int | None = None,
        dtype: Any = None,
        extra: dict | None = None,
    ) -> MultiVectorIndex:
        """From padded [n_d, d_len, dim] (+ doc_mask, or modality ids with 0 = padding) or a
        list of per-document [len_i, dim] arrays (+ per-document modality id arrays)."""
        if isinstance(doc_embeddings, np.ndarray | jax.Array) and np.ndim(doc_embeddings) == 3:
            emb = np.asarray(doc_embeddings)
            n_d, d_len, _ = emb.shape
            if doc_mask is None:
                keep = (
                    np.asarray(modality_ids) > 0
                    if modality_ids is not None
                    else np.ones((n_d, d_len), bool)
                )
            else:
                keep = np.asarray(doc_mask, bool)
            if keep.shape != (n_d, d_len):
                raise ValueError(f"doc_mask/modality_ids shape {keep.shape} != {(n_d, d_len)}")
            per_doc = [emb[i][keep[i]] for i in range(n_d)]
            per_mod = (
                None
                if modality_ids is None
                else [np.asarray(modality_ids)[i][keep[i]] for i in range(n_d)]
            )
        else:
            per_doc = [np.asarray(e) for e in doc_embeddings]
            per_mod = None if modality_ids is None else [np.asarray(m) for m in modality_ids]
        if len(per_doc) != len(doc_ids):
            raise ValueError(f"{len(per_doc)} documents but {len(doc_ids)} doc_ids")
        dims = {e.shape[-1] for e in per_doc if e.ndim == 2}
        if any(e.ndim != 2 for e in per_doc) or len(dims) > 1:
            raise ValueError(f"every document must be [len, dim] with one dim, got dims {dims}")
        dim = dims.pop() if dims else 0
        lens = np.array([len(e) for e in per_doc], np.int64)
        offsets = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
        out_dtype = np.dtype(dtype) if dtype is not None else per_doc[0].dtype
        _dtype_name(out_dtype)
        tokens = np.concatenate(per_doc, 0).astype(out_dtype) if per_doc else np.zeros((0, dim))
        modality = None
        if per_mod is not None:
            if [len(m) for m in per_mod] != lens.tolist():
                raise ValueError("modality_ids lengths do not match the document lengths")
            modality = np.concatenate(per_mod).astype(np.int8)
            if np.any(modality < 1):
                raise ValueError("modality ids of kept tokens must be >= 1 (0 means padding)")
            num_modalities = num_modalities or int(modality.max())
        return cls(tokens, offsets, doc_ids, modality, num_modalities, extra)

    # ------------------------------------------------------------------ properties
    @property
    def num_docs(self) -> int:
        return len(self.doc_ids)

    @property
    def dim(self) -> int:
        return int(self.tokens.shape[1])

    @property
    def doc_lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def manifest(self) -> dict:
        files = ["tokens.npy", "offsets.npy", "doc_ids.json"]
        if self.modality is not None:
            files.append("modality.npy")
        return {
            "format": FORMAT,
            "version": VERSION,
            "dim": self.dim,
            "dtype": _dtype_name(self.tokens.dtype),
            "num_docs": self.num_docs,
            "num_tokens": int(self.tokens.shape[0]),
            "num_modalities": self.num_modalities,
            "files": files,
            "extra": self.extra,
        }

    # ------------------------------------------------------------------ I/O
    def save(self, path: str | os.PathLike) -> Path:
        """Atomic save: write `<path>.tmp-*`, fsync, then swap it in by renames."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
        try:
            tokens = self.tokens
            if tokens.dtype == ml_dtypes.bfloat16:
                tokens = tokens.view(np.uint16)
            _write_npy(tmp / "tokens.npy", tokens)
            _write_npy(tmp / "offsets.npy", np.asarray(self.offsets, np.int64))
            if self.modality is not None:
                _write_npy(tmp / "modality.npy", np.asarray(self.modality, np.int8))
            _write_text(tmp / "doc_ids.json", json.dumps(self.doc_ids))
            # The manifest goes last: a directory without it is never a complete index.
            _write_text(tmp / "manifest.json", json.dumps(self.manifest(), indent=2))
            _fsync_dir(tmp)
            old = None
            if path.exists():
                old = path.with_name(f".{path.name}.old-{uuid.uuid4().hex[:8]}")
                os.replace(path, old)
            os.replace(tmp, path)
            _fsync_dir(path.parent)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, mmap: bool = True) -> MultiVectorIndex:
        """Loads (memory-mapped by default) and validates an index written by `save`."""
        path = Path(path)
        manifest_path = path / "manifest.json"
        if not manifest_path.exists():
            raise FileNotFoundError(f"no index at {path}: {manifest_path.name} is missing")
        try:
            manifest = json.loads(manifest_path.read_text())
        except json.JSONDecodeError as e:
            raise IndexFormatError(f"{manifest_path}: not valid JSON ({e})") from e
        if manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
            raise IndexFormatError(
                f"{manifest_path}: format/version {manifest.get('format')}/"
                f"{manifest.get('version')} unsupported (want {FORMAT}/{VERSION})"
            )
        dtype = _DTYPES[manifest["dtype"]]
        n_tok, dim, n_docs = manifest["num_tokens"], manifest["dim"], manifest["num_docs"]
        mode = "r" if mmap else None
        tokens = _read_npy(path / "tokens.npy", mode, (n_tok, dim))
        if dtype == ml_dtypes.bfloat16:
            tokens = tokens.view(ml_dtypes.bfloat16)
        elif tokens.dtype != dtype:
            raise IndexFormatError(
                f"{path / 'tokens.npy'}: dtype {tokens.dtype} != manifest {dtype}"
            )
        offsets = np.asarray(_read_npy(path / "offsets.npy", None, (n_docs + 1,)))
        modality = None
        if "modality.npy" in manifest["files"]:
            modality = _read_npy(path / "modality.npy", mode, (n_tok,))
        doc_ids = json.loads((path / "doc_ids.json").read_text())
        if len(doc_ids) != n_docs:
            raise IndexFormatError(
                f"{path / 'doc_ids.json'}: {len(doc_ids)} ids, manifest {n_docs}"
            )
        return cls(
            tokens, offsets, doc_ids, modality, manifest["num_modalities"], manifest["extra"]
        )

    # ------------------------------------------------------------------ search
    def padded(
        self,
        multiple: int = padding.TOKEN_MULTIPLE,
        doc_multiple: int = 1,
        dim: int | None = None,
    ):
        """Padded device layout: docs [n_d', L, dim'], side [n_d', L] (mask, or modality ids),
        valid [n_d'], with L a multiple of `multiple` (default: aligned for every token block
        of the MaxSim kernels), n_d' of `doc_multiple`, and the embedding dim zero-padded to
        `dim` (zeros leave every dot product unchanged)."""
        lens = self.doc_lengths
        d_len = max(multiple, -(-int(lens.max(initial=1)) // multiple) * multiple)
        n_d = -(-self.num_docs // doc_multiple) * doc_multiple
        dim = dim or self.dim
        docs = np.zeros((n_d, d_len, dim), self.tokens.dtype)
        side = np.zeros((n_d, d_len), np.int8)  # doc mask (0/1) or modality ids, int8
        doc_of_token = np.repeat(np.arange(self.num_docs), lens)
        pos_in_doc = np.arange(len(self.tokens)) - self.offsets[:-1][doc_of_token]
        docs[doc_of_token, pos_in_doc, : self.dim] = self.tokens
        side[doc_of_token, pos_in_doc] = 1 if self.modality is None else self.modality
        valid = np.arange(n_d) < self.num_docs
        return docs, side, valid

    def search(
        self,
        query_embeddings: np.ndarray | jax.Array,
        k: int,
        q_mask: np.ndarray | jax.Array | None = None,
        *,
        normalize: bool = False,
        mesh: Mesh | None = None,
        impl: str = "auto",
        interpret: bool | None = None,
        chunk_docs: int = 8192,
    ) -> tuple[np.ndarray, list[list[str]]]:
        """Top-k documents per query: (scores [n_q, k] fp32, doc ids [n_q][k]).

        query_embeddings [n_q, q_len, dim] (+ q_mask [n_q, q_len]). Documents are sharded over
        every device of `mesh` (default: all devices). A modality-aware index scores with
        CLaMR's modality-max. `impl` / `interpret` as in `kernels_pallas.maxsim.maxsim_topk`
        (auto: Pallas on GPU, reference elsewhere; `impl="pallas"` interprets off GPU).
        """
        q = jnp.asarray(query_embeddings)
        if q.ndim != 3 or q.shape[-1] != self.dim:
            raise ValueError(
                f"query_embeddings must be [n_q, q_len, {self.dim}] to match the index dim, "
                f"got shape {tuple(q.shape)}"
            )
        if not 1 <= k <= self.num_docs:
            raise ValueError(f"k must be in [1, num_docs={self.num_docs}], got {k}")
        q_mask = jnp.ones(q.shape[:2], bool) if q_mask is None else jnp.asarray(q_mask, bool)
        if q_mask.shape != q.shape[:2]:
            raise ValueError(f"q_mask shape {q_mask.shape} != queries[:2] {q.shape[:2]}")
        mesh = mesh or search_lib.default_mesh()
        doc_axes = tuple(mesh.axis_names)
        docs, side, valid = self.device_arrays(mesh, chunk_docs)
        q = jnp.pad(q, ((0, 0), (0, 0), (0, docs.shape[-1] - self.dim))).astype(docs.dtype)
        scores, idx = search_lib.sharded_search(
            q, q_mask, docs, side, valid,
            k=k, mesh=mesh, doc_axes=doc_axes, num_modalities=self.num_modalities
            if self.modality is not None else None,
            normalize=normalize, impl=impl, interpret=interpret, chunk_docs=chunk_docs,
        )  # fmt: skip
        idx = np.asarray(idx)
        return np.asarray(scores), [[self.doc_ids[i] for i in row] for row in idx]

    def device_arrays(self, mesh: Mesh, chunk_docs: int = 8192):
        """(docs, side, valid) padded and sharded along documents over every mesh axis
        (cached). Every shard gets the same number of docs, a multiple of the search chunk
        or kernel doc block, and on GPU the dim is padded as the Triton kernel needs
        (`kernels_pallas.maxsim.padding`), so no search call re-pads the corpus."""
        doc_axes = tuple(mesh.axis_names)
        key = (mesh, chunk_docs)
        if key not in self._device_cache:
            n_shards = search_lib.num_doc_shards(mesh, doc_axes)
            per_shard = -(-self.num_docs // n_shards)
            # Per shard: a multiple of the scan chunk (CPU) or of the kernel's doc block.
            block = chunk_docs if per_shard > chunk_docs else padding.DOC_BLOCK
            doc_multiple = n_shards * block
            on_gpu = mesh.devices.flat[0].platform == "gpu"
            dim = padding.padded_dim(self.dim) if on_gpu else self.dim
            sharding = search_lib.doc_sharding(mesh, doc_axes)
            arrays = self.padded(doc_multiple=doc_multiple, dim=dim)
            self._device_cache = {key: tuple(jax.device_put(a, sharding) for a in arrays)}
        return self._device_cache[key]


def _write_npy(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as f:
        np.save(f, np.ascontiguousarray(array))
        f.flush()
        os.fsync(f.fileno())


def _write_text(path: Path, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _read_npy(path: Path, mmap_mode: str | None, shape: tuple[int, ...]) -> np.ndarray:
    if not path.exists():
        raise IndexFormatError(f"index file missing: {path}")
    try:
        array = np.load(path, mmap_mode=mmap_mode)
    except (ValueError, OSError, EOFError) as e:
        raise IndexFormatError(f"{path}: unreadable or truncated ({e})") from e
    if array.shape != shape:
        raise IndexFormatError(f"{path}: shape {array.shape} != manifest {shape}")
    return array
