"""PLY export/import in the standard 3DGS layout (binary little-endian float32 vertices).

Properties: x y z nx ny nz f_dc_0..2 [f_rest_0..44] opacity scale_0..2 rot_0..3, with opacity
stored as a logit, scales as logs and rot as a (w, x, y, z) quaternion, so the files open in
the usual 3DGS viewers. f_rest (SH bands 1..3) is channel-major, f_rest_{c·15 + k} for
coefficient k of channel c (the 3DGS layout): given `sh_rest` [N, K, 3] (K = 3, 8 or 15, see
`jaxmm.gaussians.sh`) it is written padded to 15, else zeros, because many viewers expect
degree-3 files. 4D Gaussians add `t`, `scale_t` (log)
and `rot_r_0..3` (the right quaternion; rot_0..3 is the left one).
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np

from jaxmm.gaussians.params import Gaussians3D, Gaussians4D

_NUM_REST = 45
_PLY_TYPES = {
    "float": "<f4",
    "float32": "<f4",
    "double": "<f8",
    "float64": "<f8",
    "uchar": "u1",
    "uint8": "u1",
    "int": "<i4",
    "int32": "<i4",
}


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(p) - np.log1p(-p)


def save_ply(
    path: str | os.PathLike,
    g: Gaussians3D | Gaussians4D,
    *,
    sh_rest: bool | np.ndarray | jax.Array = True,
) -> None:
    """Writes `g` (activated parameters) to `path`, atomically (temp file + rename).

    `sh_rest`: True writes zero f_rest_0..44, False none, an array [N, K, 3] its bands."""
    if not isinstance(g, (Gaussians3D, Gaussians4D)):
        raise TypeError(f"save_ply expects Gaussians3D or Gaussians4D, got {type(g).__name__}")
    g.validate()
    a = jax.tree.map(lambda x: np.asarray(x, np.float32), g)
    n = a.means.shape[0]
    is_4d = isinstance(g, Gaussians4D)
    cols: dict[str, np.ndarray] = {}
    for i, c in enumerate("xyz"):
        cols[c] = a.means[:, i]
    for c in ("nx", "ny", "nz"):
        cols[c] = np.zeros(n, np.float32)
    for i in range(3):
        cols[f"f_dc_{i}"] = a.sh_dc[:, i]
    if not isinstance(sh_rest, bool):
        rest = np.asarray(sh_rest, np.float32)
        if rest.ndim != 3 or rest.shape[0] != n or rest.shape[2] != 3 or rest.shape[1] > 15:
            raise ValueError(f"save_ply: sh_rest must be [{n}, K<=15, 3], got {rest.shape}")
        rest = np.pad(rest, ((0, 0), (0, 15 - rest.shape[1]), (0, 0)))
        flat = rest.transpose(0, 2, 1).reshape(n, _NUM_REST)  # channel-major
        for i in range(_NUM_REST):
            cols[f"f_rest_{i}"] = flat[:, i]
    elif sh_rest:
        for i in range(_NUM_REST):
            cols[f"f_rest_{i}"] = np.zeros(n, np.float32)
    cols["opacity"] = _logit(a.opacities)
    for i in range(3):
        cols[f"scale_{i}"] = np.log(np.maximum(a.scales[:, i], 1e-12))
    quat = a.q_left if is_4d else a.quats
    quat = quat / np.maximum(np.linalg.norm(quat, axis=-1, keepdims=True), 1e-12)
    for i in range(4):
        cols[f"rot_{i}"] = quat[:, i]
    if is_4d:
        cols["t"] = a.means[:, 3]
        cols["scale_t"] = np.log(np.maximum(a.scales[:, 3], 1e-12))
        q_right = a.q_right / np.maximum(np.linalg.norm(a.q_right, axis=-1, keepdims=True), 1e-12)
        for i in range(4):
            cols[f"rot_r_{i}"] = q_right[:, i]
    rec = np.empty(n, dtype=[(k, "<f4") for k in cols])
    for k, v in cols.items():
        rec[k] = v
    header = ["ply", "format binary_little_endian 1.0", f"element vertex {n}"]
    header += [f"property float {k}" for k in cols] + ["end_header"]
    path = os.fspath(path)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(("\n".join(header) + "\n").encode("ascii"))
        f.write(rec.tobytes())
    os.replace(tmp, path)


def _read_vertices(path: str) -> np.ndarray:
    with open(path, "rb") as f:
        if f.readline().strip() != b"ply":
            raise ValueError(f"{path}: not a PLY file (missing 'ply' magic)")
        fields, n, fmt, in_vertex = [], None, None, False
        while True:
            line = f.readline()
            if not line:
                raise ValueError(f"{path}: PLY header has no end_header")
            parts = line.decode("ascii", "replace").split()
            if not parts:
                continue
            if parts[0] == "end_header":
                break
            if parts[0] == "format":
                fmt = parts[1]
            elif parts[0] == "element":
                in_vertex = parts[1] == "vertex"
                if in_vertex:
                    n = int(parts[2])
                elif n is None:
                    raise ValueError(f"{path}: element {parts[1]!r} before 'vertex' unsupported")
            elif parts[0] == "property" and in_vertex:
                if parts[1] == "list" or parts[1] not in _PLY_TYPES:
                    raise ValueError(f"{path}: unsupported vertex property {' '.join(parts[1:])}")
                fields.append((parts[2], _PLY_TYPES[parts[1]]))
        if fmt != "binary_little_endian":
            raise ValueError(f"{path}: only binary_little_endian PLY is supported, got {fmt!r}")
        if n is None:
            raise ValueError(f"{path}: no 'element vertex' in header")
        dtype = np.dtype(fields)
        data = f.read(n * dtype.itemsize)
        if len(data) != n * dtype.itemsize:
            raise ValueError(f"{path}: truncated: expected {n} vertices of {dtype.itemsize} bytes")
        return np.frombuffer(data, dtype=dtype)


def load_ply(path: str | os.PathLike) -> Gaussians3D | Gaussians4D:
    """Reads a 3DGS-layout PLY (4D if it has `t`), returning activated parameters."""
    path = os.fspath(path)
    v = _read_vertices(path)
    names = set(v.dtype.names)
    need = [
        "x",
        "y",
        "z",
        "f_dc_0",
        "f_dc_1",
        "f_dc_2",
        "opacity",
        "scale_0",
        "scale_1",
        "scale_2",
        "rot_0",
        "rot_1",
        "rot_2",
        "rot_3",
    ]
    missing = [k for k in need if k not in names]
    if missing:
        raise ValueError(f"{path}: missing 3DGS vertex properties {missing}")
    col = lambda *ks: np.stack([np.asarray(v[k], np.float32) for k in ks], -1)
    means = col("x", "y", "z")
    scales = np.exp(col("scale_0", "scale_1", "scale_2"))
    opacities = 1.0 / (1.0 + np.exp(-np.asarray(v["opacity"], np.float32)))
    sh_dc = col("f_dc_0", "f_dc_1", "f_dc_2")
    quat = col("rot_0", "rot_1", "rot_2", "rot_3")
    if "t" in names:
        g = Gaussians4D(
            means=np.concatenate([means, col("t")], -1),
            scales=np.concatenate([scales, np.exp(col("scale_t"))], -1),
            q_left=quat,
            q_right=col("rot_r_0", "rot_r_1", "rot_r_2", "rot_r_3"),
            opacities=opacities,
            sh_dc=sh_dc,
        )
    else:
        g = Gaussians3D(means=means, scales=scales, quats=quat, opacities=opacities, sh_dc=sh_dc)
    return jax.tree.map(jnp.asarray, g)
