"""The persistent MaxSim scan (`schedule="persistent"`, kernels_pallas/maxsim/pallas_persistent.py)
in interpret mode on CPU against the pure-jnp reference: odd shapes (d_len not a multiple of
the tile, 1-token documents, document counts that do not fill programs x documents per tile),
modality layouts that take each fold path (mixed tiles: M passes; modality-uniform tiles: one
pass), absent modalities, argmax and top-k ids compared exactly. fp32 on CPU: VALUE_TOL and
GRAD_TOL (docs/testing.md). The padding-outranks-real top-k cases for this schedule are in
test_topk_padding_cases.py, the CUDA lowering in test_maxsim_triton_lowering.py.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from maxsim_inputs import GRAD_TOL, PALLAS_INTERPRET, VALUE_TOL
from maxsim_inputs import make_inputs as _inputs

from kernels_pallas.maxsim import api, padding, pallas_persistent
from kernels_pallas.maxsim import reference as ref

PERSISTENT = dict(PALLAS_INTERPRET, schedule="persistent")


def _kernel_names(fn, *args) -> str:
    return str(jax.make_jaxpr(fn)(*args))


def test_schedule_selects_the_kernel():
    """The schedule option reaches the kernel (else every parity test below would be testing
    the blocked kernel), and an unknown schedule is rejected."""
    q, q_mask, d, d_mod = _inputs()
    jaxpr = _kernel_names(lambda *a: api.maxsim(*a, **PERSISTENT), q, q_mask, d, d_mod > 0)
    assert "maxsim_persistent_m1" in jaxpr and "maxsim_padded" not in jaxpr
    jaxpr = _kernel_names(lambda *a: api.maxsim_topk(*a, 2, **PERSISTENT), q, q_mask, d, d_mod > 0)
    assert "maxsim_persistent_topk" in jaxpr
    blocked = _kernel_names(lambda *a: api.maxsim(*a, **PALLAS_INTERPRET), q, q_mask, d, d_mod > 0)
    assert padding.DEFAULT_SCHEDULE == "blocked" and "maxsim_padded_m1" in blocked
    with pytest.raises(ValueError, match="schedule must be one of"):
        api.maxsim(q, q_mask, d, d_mod > 0, **PALLAS_INTERPRET, schedule="ring")


def test_scan_plan_tiles_hold_whole_documents_or_whole_shares():
    for d_len in (1, 2, 7, 20, 37, 64, 100, 128, 129, 300, 2000, 2048):
        for tile_in in (16, 128):
            doc_len, tile = padding.scan_plan(d_len, tile_in)
            assert doc_len >= d_len and tile >= padding.MIN_DOT
            assert tile % doc_len == 0 or doc_len % tile == 0, (d_len, doc_len, tile)
    assert padding.scan_plan(128, 128) == (128, 128)  # case (a): one document per tile
    assert padding.scan_plan(1, 128) == (1, 128)  # 1-token documents: 128 per tile
    assert padding.scan_plan(2000, 128) == (2048, 128)  # 2.4 % padding for a 128-row tile
    assert padding.scan_plan(100, 128) == (112, 16)  # 128 would pad 28 %


@pytest.mark.parametrize(
    "d_len,n_d,blocks",
    [
        (20, 7, {}),  # 4 documents (padded to 32 tokens) per 128-row tile; 7 docs -> 8
        (1, 7, dict(block_q=1)),  # 1-token documents, 128 per tile, one program per query
        (37, 7, dict(block_d=1, block_t=16, num_programs=3)),  # 3 tiles per doc; 7 over 3
        (64, 5, dict(block_d=2, block_t=16, num_programs=2, block_q=1)),  # 2 tiles per doc
    ],
    ids=["4-docs-per-tile", "1-token-docs", "3-tiles-per-doc-3-programs", "2-tiles-per-doc"],
)
@pytest.mark.parametrize("normalize", [False, True])
def test_plain_matches_reference(d_len, n_d, blocks, normalize):
    q, q_mask, d, d_mod = _inputs(seed=d_len, n_d=n_d, d_len=d_len)
    d_mask = (d_mod > 0).at[0].set(True)  # a non-empty doc even at d_len = 1
    got = api.maxsim(q, q_mask, d, d_mask, normalize, **PERSISTENT, **blocks)
    want = ref.maxsim(q, q_mask, d, d_mask, normalize)
    assert got.shape == (3, n_d)
    np.testing.assert_allclose(got, want, **VALUE_TOL)


def test_bf16_inputs_accumulate_in_fp32():
    q, q_mask, d, d_mod = _inputs(seed=2)
    q16, d16 = q.astype(jnp.bfloat16), d.astype(jnp.bfloat16)
    got = api.maxsim(q16, q_mask, d16, d_mod > 0, **PERSISTENT)
    # bf16 x bf16 products are exact in fp32: only the fp32 summation order differs.
    want = ref.maxsim(q16.astype(jnp.float32), q_mask, d16.astype(jnp.float32), d_mod > 0)
    np.testing.assert_allclose(got, want, **VALUE_TOL)


def test_tile_modality_flags_only_modality_uniform_tiles():
    mod = jnp.asarray([[2, 2, 0, 2], [0, 0, 0, 0], [1, 0, 1, 1]])
    hi, uniform = pallas_persistent.tile_modality(mod)
    np.testing.assert_array_equal(hi, [2, 0, 1])
    assert bool(uniform)
    _, uniform = pallas_persistent.tile_modality(mod.at[2, 1].set(3))  # one stray token
    assert not bool(uniform)


def _segmented(seed, n_d, d_len, seg, num_modalities, absent=None):
    """Documents made of `seg`-token single-modality segments (CLaMR's frames | OCR | ASR |
    description layout, tile-aligned), a few padding tokens inside segments, and padding
    tokens that are 10x a query token (they would win every max if counted)."""
    rng = np.random.default_rng(seed)
    q, q_mask, d, _ = _inputs(seed, n_d=n_d, d_len=d_len)
    seg_mod = rng.integers(1, num_modalities + 1, size=(n_d, d_len // seg))
    if absent is not None:
        seg_mod = np.where(seg_mod == absent, 1 + absent % num_modalities, seg_mod)
    mod = np.repeat(seg_mod, seg, axis=1)
    mod[rng.random(mod.shape) < 0.2] = 0
    d = np.where((mod == 0)[..., None], 10 * np.asarray(q)[0, 0], np.asarray(d))
    return q, q_mask, jnp.asarray(d, jnp.float32), jnp.asarray(mod, jnp.int32)


@pytest.mark.parametrize(
    "layout",
    ["mixed-tiles", "uniform-segments", "single-modality-short-docs", "half-and-half"],
)
def test_modality_scores_and_argmax_match_reference(layout):
    m = 3
    if layout == "mixed-tiles":  # random id per token: every tile takes the M-pass fold
        q, q_mask, d, mod = _inputs(seed=3, d_len=37)  # doc 2 lacks modality 2, doc 1 empty
        blocks = dict(block_d=1, block_t=16, num_programs=2)
    elif layout == "uniform-segments":  # 16-token segments = 16-row tiles: the one-pass fold
        q, q_mask, d, mod = _segmented(4, n_d=7, d_len=64, seg=16, num_modalities=m, absent=2)
        blocks = dict(block_d=1, block_t=16, num_programs=3)
    elif layout == "single-modality-short-docs":  # 16 docs per tile, each one modality
        q, q_mask, d, mod = _segmented(5, n_d=20, d_len=8, seg=8, num_modalities=m)
        blocks = {}
    else:  # uniform and mixed tiles in one call: both branches of the fold's cond
        q, q_mask, d, mod = _segmented(6, n_d=6, d_len=32, seg=16, num_modalities=m)
        mixed = np.random.default_rng(6).integers(0, m + 1, size=(3, 32))
        mod = mod.at[3:].set(jnp.asarray(mixed, jnp.int32))
        blocks = dict(block_d=1, block_t=16, num_programs=2)
    got, got_arg = api.maxsim_modality(q, q_mask, d, mod, m, return_argmax=True, **PERSISTENT,
                                       **blocks)  # fmt: skip
    want, want_arg = ref.maxsim_modality(q, q_mask, d, mod, m, return_argmax=True)
    np.testing.assert_allclose(got, want, **VALUE_TOL)
    np.testing.assert_array_equal(got_arg, want_arg)
    absent = ~np.any(np.asarray(mod)[:, :, None] == np.arange(1, m + 1), axis=1)  # [n_d, M]
    assert absent.any()  # some document lacks a modality: its score there is exactly 0
    assert np.all(np.asarray(got)[:, absent] == 0.0)


def test_modality_topk_ids_match_reference():
    q, q_mask, d, mod = _segmented(7, n_d=11, d_len=32, seg=16, num_modalities=3)
    valid = jnp.arange(11) % 5 != 2
    got_s, got_i = api.maxsim_topk(
        q, q_mask, d, mod > 0, 4, d_modality=mod, num_modalities=3, doc_valid=valid,
        **PERSISTENT, block_d=1, block_t=16, num_splits=3,
    )  # fmt: skip
    scores = ref.maxsim_modality(q, q_mask, d, mod, 3).max(-1)
    want_s, want_i = jax.lax.top_k(jnp.where(valid[None], scores, -jnp.inf), 4)
    np.testing.assert_array_equal(got_i, want_i)
    np.testing.assert_allclose(got_s, want_s, **VALUE_TOL)


def test_modality_gradients_match_reference():
    """The training forward (argmax recorded for the custom_vjp) runs the persistent kernel."""
    q, q_mask, d, mod = _segmented(8, n_d=5, d_len=32, seg=16, num_modalities=3)
    g = jnp.asarray(np.random.default_rng(8).normal(size=(3, 5, 3)).astype(np.float32))

    def loss(q, d, **kw):
        return jnp.sum(api.maxsim_modality(q, q_mask, d, mod, 3, **kw) * g)

    got = jax.grad(lambda q, d: loss(q, d, **PERSISTENT, block_d=1, block_t=16), (0, 1))(q, d)
    want = jax.grad(lambda q, d: loss(q, d, impl="reference"), (0, 1))(q, d)
    for a, b in zip(got, want, strict=True):
        scale = float(jnp.max(jnp.abs(b)))
        np.testing.assert_allclose(a, b, atol=GRAD_TOL["atol"] * scale, rtol=GRAD_TOL["rtol"])


def _tile_ops(jaxpr, size, branch="", counts=None, in_kernel=False):
    """Ops inside the pallas_call whose output has >= `size` elements (the [rows, tile] score
    tile and the [tile, dim] document tile), counted per lax.cond branch ("" = outside)."""
    counts = {} if counts is None else counts
    for eqn in jaxpr.eqns:
        big = any(np.prod(v.aval.shape) >= size for v in eqn.outvars if hasattr(v.aval, "shape"))
        if in_kernel and big:
            counts[branch] = counts.get(branch, 0) + 1
        for k, v in enumerate(x for p in eqn.params.values() for x in _as_seq(p)):
            sub = getattr(v, "jaxpr", v)
            if hasattr(sub, "eqns"):
                name = f"{branch}/branch{k}" if eqn.primitive.name == "cond" else branch
                _tile_ops(sub, size, name, counts, in_kernel or eqn.primitive.name == "pallas_call")
    return counts


def _as_seq(p):
    return p if isinstance(p, (tuple, list)) else (p,)


def test_uniform_tiles_fold_with_the_plain_kernels_tile_work():
    """Issue 13's modality target (modality-max <= 1.2x plain) rests on this: on a
    modality-uniform tile the 4-modality fold does as many ops on the [rows, tile] score tile
    as plain MaxSim (one masked max; its M selects act on the reduced [rows, docs] tile),
    where the blocked kernel's fold, and the mixed-tile branch, do M masked passes."""
    S = jax.ShapeDtypeStruct
    q, qm = S((2, 64, 128), jnp.bfloat16), S((2, 64), jnp.bool_)
    d, mod = S((8, 512, 128), jnp.bfloat16), S((8, 512), jnp.int32)
    size = 128 * 128  # rows = 2 queries x 64 tokens; tile = 128 document rows

    def count(m, schedule):
        fn = lambda *a: api.maxsim_modality(  # noqa: E731
            *a, m, impl="pallas", interpret=False, schedule=schedule
        )
        return _tile_ops(jax.make_jaxpr(fn)(q, qm, d, mod).jaxpr, size)

    plain = count(1, "persistent")[""]
    four = count(4, "persistent")
    branches = sorted(v for k, v in four.items() if k)
    assert len(branches) == 2  # the one-pass and the M-pass folds
    assert four[""] + branches[0] == plain
    assert four[""] + branches[1] > plain + 8  # M = 4 masked passes: 3 more of each op
    blocked = count(4, "blocked")[""]
    assert blocked > count(1, "blocked")[""] + 8


@pytest.mark.parametrize("schedule", padding.SCHEDULES)
def test_fused_topk_breaks_exact_ties_by_lower_doc_id(schedule):
    """Duplicate documents (common in real corpora) score exactly the same. The reference,
    lax.top_k over all scores, returns the lower doc id first; so must the fused search,
    whichever program scanned each copy (with 3 programs, docs 2 and 6 are scanned by
    different programs in both schedules; k = n_d orders every tie)."""
    q, q_mask, d, d_mod = _inputs(seed=9, n_d=9, d_len=16)
    d_mask = d_mod > 0
    for src, dst in ((2, 6), (2, 7), (4, 3), (0, 8)):
        d, d_mask = d.at[dst].set(d[src]), d_mask.at[dst].set(d_mask[src])
    got_s, got_i = api.maxsim_topk(
        q, q_mask, d, d_mask, 9, **PALLAS_INTERPRET, schedule=schedule, num_splits=3,
        block_d=1, block_t=16,
    )  # fmt: skip
    want_s, want_i = ref.maxsim_topk(q, q_mask, d, d_mask, 9)
    np.testing.assert_array_equal(got_i, want_i)
    np.testing.assert_allclose(got_s, want_s, **VALUE_TOL)
