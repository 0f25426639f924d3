"""The MaxSim kernels' padding contract: block sizes and the aligned shapes they need.

The Pallas kernels (`pallas_gpu.py`) run on aligned shapes only: every block dim a power of
two, and every `tl.dot` operand dim >= 16 (Triton's minimum): M = block_q * q_len rows, K = the
embedding dim (a power of two >= 16), N = block_d * token block columns in the padded and
top-k kernels (`token_block` grows the token block of short documents until it is) and N =
the token block in the packed kernel (`packed_token_block`); d_len a multiple of the token
block, n_q / n_d multiples of block_q / block_d. `dot_shapes` lists the (M, K, N) a padded
kernel call will use.
The public ops pad to it here (zeros: a zero query token has weight 0, a zero embedding
column leaves every dot product unchanged, a zero doc token is masked out). Callers that keep
a corpus on device (`jaxmm.retrieval.MultiVectorIndex`) pad once with the same functions so
no search re-pads it.
The persistent scan schedule (`KernelConfig.schedule`, SCHEDULES) views the padded documents
as 2-D rows [n_d * doc_len, dim] and loads contiguous tiles of them: `scan_plan` picks
(doc_len, tile) and `pad_docs_2d` pads to it; `scan_programs` sizes its grid.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

MIN_DOT = 16  # Triton's tl.dot needs every operand dim (M, K, N) >= 16
MIN_DOT_ROWS = MIN_DOT  # M: block_q * padded q_len
MIN_DIM = 16  # the embedding dim is padded to a power of two >= this
DOC_BLOCK = 8  # default documents per program (KernelConfig.block_d, maxsim_packed)
# A multiple of every default token block (16 for the padded kernels, 32 for maxsim_packed):
# documents padded to it are aligned for any of them.
TOKEN_MULTIPLE = 32
# Shared memory the dot operands may take per program: under the A100's 163 KiB and the H100's
# 227 KiB opt-in limits, so one config compiles on both.
SHARED_MEMORY_BUDGET = 160 * 1024
# The two scan schedules (KernelConfig.schedule). "blocked": one program per (query block,
# document block), 3-D document tiles (the kernel measured on an H200, docs/gpu_results.md).
# "persistent": documents viewed as 2-D [n_d * doc_len, dim] rows, contiguous [tile, dim]
# loads, a grid of a few programs per SM each walking many document groups, and a cheap
# modality fold for modality-uniform tiles (pallas_persistent.py). The default stays
# "blocked" until a GPU A/B (benchmarks/maxsim.py times both) says the new one wins.
SCHEDULES = ("blocked", "persistent")
DEFAULT_SCHEDULE = "blocked"
# Persistent grid: programs per SM along the document axis (two [128, 128] bf16 tiles x 3
# stages fit the H100/H200's 227 KiB of shared memory per SM), and the SM count used when
# the device does not report one (H100 / H200 SXM: 132).
PROGRAMS_PER_SM = 2
FALLBACK_SM_COUNT = 132
# A persistent scan plan may pad a document by this fraction more than the tightest plan to
# get a larger (fewer-iteration) token tile.
PLAN_SLACK = 1 / 16


@dataclasses.dataclass(frozen=True)
class KernelConfig:
    """Static kernel choices (hashable: used as a custom_vjp non-diff argument)."""

    block_q: int = 1
    block_d: int = DOC_BLOCK
    block_t: int = 16
    num_warps: int = 4
    num_stages: int = 3
    interpret: bool = False
    schedule: str = DEFAULT_SCHEDULE  # "blocked" | "persistent" (SCHEDULES)
    num_programs: int = 0  # persistent: programs along the document axis; 0 = scan_programs()

    def __post_init__(self):
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")


def next_pow2(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


def round_up(n: int, m: int) -> int:
    return -(-n // m) * m


def padded_dim(dim: int) -> int:
    """The embedding dim the kernels run at: the next power of two, at least MIN_DIM."""
    return max(next_pow2(dim), MIN_DIM)


def padded_q_len(q_len: int, block_q: int) -> int:
    """Query tokens per query: a power of two with block_q * q_len >= MIN_DOT_ROWS."""
    return max(next_pow2(q_len), MIN_DOT_ROWS // block_q)


def token_block(d_len: int, block_t: int, block_d: int = DOC_BLOCK) -> int:
    """The token chunk a program folds per step: block_t, or less for short documents, but
    never so small that the dot's N = block_d * chunk falls below MIN_DOT (a 1-token document
    with block_d=8 gets chunk 2, i.e. its padding token, not an N=8 dot)."""
    return max(min(block_t, next_pow2(d_len)), -(-MIN_DOT // block_d))


def packed_token_block(block_t: int) -> int:
    """The packed kernel's token chunk: its dot has N = chunk, so a power of two >= MIN_DOT."""
    return max(next_pow2(block_t), MIN_DOT)


def padded_doc_len(d_len: int, block_t: int, block_d: int = DOC_BLOCK) -> int:
    return round_up(d_len, token_block(d_len, block_t, block_d))


def padded_doc_count(n_d: int, block_d: int = DOC_BLOCK) -> int:
    return round_up(n_d, block_d)


def pad_axis(x: jax.Array, axis: int, size: int, value=0) -> jax.Array:
    """x zero-padded (or `value`-padded) at the end of `axis` to `size`; x itself if aligned."""
    if x.shape[axis] == size:
        return x
    pad = [(0, 0)] * x.ndim
    pad[axis] = (0, size - x.shape[axis])
    return jnp.pad(x, pad, constant_values=value)


def staged_operand_bytes(cfg: KernelConfig, q_len: int, dim: int, itemsize: int) -> int:
    """Shared memory the dot operands take under Triton's software pipeline: the resident query
    rows [block_q * q_len, dim] plus num_stages buffers of the document chunk
    [block_d * block_t, dim]. An upper estimate: on an H200 (jax 0.11.2) float32 inputs with
    block_q 4, q_len 32, 8 x 16 tokens, dim 128 and 3 stages asked for exactly this, 256 KiB,
    and failed to launch (227 KiB available)."""
    rows = cfg.block_q * padded_q_len(q_len, cfg.block_q)
    cols = cfg.num_stages * cfg.block_d * cfg.block_t
    return (rows + cols) * padded_dim(dim) * itemsize


def default_config(
    n_q: int,
    q_len: int,
    interpret: bool = False,
    *,
    dim: int = 128,
    itemsize: int = 2,
    **overrides,
) -> KernelConfig:
    """Block sizes: each program keeps ~128 query-token rows resident.

    One query (memory-bound scan): 1 query x 8 docs per program, 16-token chunks, i.e. a
    [32, 128] fp32 score tile per step, leaving registers for deep load pipelining. Several
    queries: block_q = 128 // q_len queries per program, so each document tile fetched serves
    more FLOPs; the query-block axis is grid axis 0 (CUDA's fastest-varying), so the programs
    sharing a document tile run back to back and re-read it from L2, not HBM.
    These are starting points; `benchmarks/maxsim.py --sweep` times alternatives on a GPU.
    """
    base = KernelConfig(interpret=interpret)
    block_q = max(1, min(8, 128 // max(next_pow2(q_len), 16)))
    if n_q >= 2 and block_q > 1:
        base = dataclasses.replace(base, block_q=min(block_q, next_pow2(n_q)), num_warps=8)
    # Wider operands (float32, large dims) get fewer pipeline stages, then smaller token
    # chunks, then fewer queries per program, until the staged operands fit
    # SHARED_MEMORY_BUDGET; bf16 at dim <= 128 keeps the defaults.
    while staged_operand_bytes(base, q_len, dim, itemsize) > SHARED_MEMORY_BUDGET:
        if base.num_stages > 1:
            base = dataclasses.replace(base, num_stages=base.num_stages - 1)
        elif base.block_d * base.block_t > MIN_DOT:
            base = dataclasses.replace(base, block_t=base.block_t // 2)
        elif base.block_q > 1:
            base = dataclasses.replace(base, block_q=base.block_q // 2)
        else:
            break  # the smallest legal tiles; Triton reports it if even these do not fit
    return dataclasses.replace(base, **overrides)


def pad_queries(queries: jax.Array, q_weights: jax.Array, block_q: int):
    """queries [n_q, q_len, dim], q_weights [n_q, q_len] -> both padded to the contract."""
    n_q, q_len, dim = queries.shape
    q_len_p, n_q_p = padded_q_len(q_len, block_q), round_up(n_q, block_q)
    q = pad_axis(pad_axis(pad_axis(queries, 1, q_len_p), 2, padded_dim(dim)), 0, n_q_p)
    w = pad_axis(pad_axis(q_weights, 1, q_len_p), 0, n_q_p)
    return q, w


def pad_docs(docs: jax.Array, d_side: jax.Array, cfg: KernelConfig):
    """docs [n_d, d_len, dim], d_side [n_d, d_len] (mask or modality ids) -> (docs, int8 side,
    token block) padded to the contract; no copy when already aligned."""
    n_d, d_len, dim = docs.shape
    block_t = token_block(d_len, cfg.block_t, cfg.block_d)
    d_len_p, n_d_p = round_up(d_len, block_t), padded_doc_count(n_d, cfg.block_d)
    d = pad_axis(pad_axis(pad_axis(docs, 1, d_len_p), 2, padded_dim(dim)), 0, n_d_p)
    side = pad_axis(pad_axis(d_side.astype(jnp.int8), 1, d_len_p), 0, n_d_p)
    return d, side, block_t


def pad_packed(doc_tokens: jax.Array, doc_offsets: jax.Array, doc_modality: jax.Array, *,
               block_d: int, block_t: int):  # fmt: skip
    """Packed docs (tokens [T, dim], offsets [n_d + 1], int modality [T]) -> the packed
    kernel's contract: dim padded, at least block_t token rows, n_d a multiple of block_d
    (extra documents are empty: their offsets repeat the last one)."""
    n_d = doc_offsets.shape[0] - 1
    total_p = max(doc_tokens.shape[0], block_t)
    tokens = pad_axis(pad_axis(doc_tokens, 1, padded_dim(doc_tokens.shape[1])), 0, total_p)
    mod = pad_axis(doc_modality.astype(jnp.int8), 0, total_p)
    offsets = doc_offsets.astype(jnp.int32)
    extra = round_up(n_d, block_d) - n_d
    offsets = jnp.concatenate([offsets, jnp.full((extra,), offsets[-1], jnp.int32)])
    return tokens, offsets, mod


def scan_plan(d_len: int, tile: int) -> tuple[int, int]:
    """The persistent schedule's (doc_len, tile rows) for documents of `d_len` tokens.

    Documents are rows of one 2-D array [n_d * doc_len, dim] and every load is a contiguous
    [tile, dim] block of it, so a tile must hold whole documents (doc_len divides tile: short
    documents, `tile // doc_len` per tile) or a whole share of one (tile divides doc_len).
    Candidates: doc_len = next_pow2(d_len) with the full `tile` (whole documents per tile),
    and doc_len = round_up(d_len, t) for every power of two t in [MIN_DOT, tile]. Among the
    plans within PLAN_SLACK of the least padding, the largest tile wins (fewer loop steps).
    """
    tile = max(next_pow2(tile), MIN_DOT)
    plans = []
    if next_pow2(d_len) <= tile:
        plans.append((next_pow2(d_len), tile))
    t = tile
    while t >= MIN_DOT:
        plans.append((round_up(d_len, t), t))
        t //= 2
    least = min(doc_len for doc_len, _ in plans)
    return next(p for p in plans if p[0] <= least * (1 + PLAN_SLACK))


def scan_programs(n_q_blocks: int, n_groups: int, num_programs: int = 0) -> int:
    """Programs along the persistent grid's document axis: `num_programs` when given, else
    PROGRAMS_PER_SM x the device's SM count shared among the query blocks; never more than
    there are document groups."""
    if not num_programs:
        sms = getattr(jax.devices()[0], "core_count", None) or FALLBACK_SM_COUNT
        num_programs = max(1, PROGRAMS_PER_SM * sms // max(n_q_blocks, 1))
    return max(1, min(num_programs, n_groups))


def pad_docs_2d(docs: jax.Array, d_side: jax.Array, cfg: KernelConfig):
    """docs [n_d, d_len, dim], d_side [n_d, d_len] -> the persistent schedule's operands:
    (tokens [n_d_p * doc_len, dim], int8 side [n_d_p * doc_len], doc_len, tile) with doc_len
    and tile from `scan_plan(d_len, block_d * block_t)` and n_d_p a multiple of the documents
    per tile. The 2-D view is a free reshape of the padded 3-D array."""
    n_d, d_len, dim = docs.shape
    doc_len, tile = scan_plan(d_len, cfg.block_d * cfg.block_t)
    n_d_p = round_up(n_d, max(1, tile // doc_len))
    d = pad_axis(pad_axis(pad_axis(docs, 1, doc_len), 2, padded_dim(dim)), 0, n_d_p)
    side = pad_axis(pad_axis(d_side.astype(jnp.int8), 1, doc_len), 0, n_d_p)
    return d.reshape(n_d_p * doc_len, d.shape[-1]), side.reshape(-1), doc_len, tile


def dot_shapes(q_len: int, d_len: int, dim: int, cfg: KernelConfig) -> tuple[int, int, int]:
    """(M, K, N) of the `tl.dot` in the padded and top-k kernels for these unpadded sizes."""
    m = cfg.block_q * padded_q_len(q_len, cfg.block_q)
    if cfg.schedule == "persistent":  # N = the contiguous token tile
        return m, padded_dim(dim), scan_plan(d_len, cfg.block_d * cfg.block_t)[1]
    return m, padded_dim(dim), cfg.block_d * token_block(d_len, cfg.block_t, cfg.block_d)
