"""One attention entry point: a reference path (einsum, float32 softmax, any backend) and fast
paths through `jax.nn.dot_product_attention` (XLA, or cuDNN flash attention on GPU).

Shapes: q [B, T, H, D]; k, v [B, S, Hkv, D] with H a multiple of Hkv (grouped-query attention,
the kv heads are never materialised H times). Masks combine with AND:
  * `causal`: query i sees key j iff j <= i + (S - T) (bottom-right aligned, so a query block
    that continues a longer key sequence is causal too);
  * `segment_ids` [B, T] (and `kv_segment_ids` [B, S], default = segment_ids): packed sequences,
    no attention across segments;
  * `mask`: boolean, True = may attend; [B, S] (key padding), [B, T, S] or [B, 1|H, T, S].
Rows with no visible key produce finite garbage (a uniform average), never NaN.

`impl` resolves through the shared kernel contract (`kernels_pallas.impl`): one vocabulary and
one interpret rule (the Pallas path compiles on GPU and interprets elsewhere). The `auto`
table: on GPU in half precision, packed segments -> pallas, plain causal -> cudnn, otherwise
xla; off GPU always xla, bit-identical to `jax.nn.dot_product_attention` when no scale is
given (jax then computes its own default scale).
"""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp

from kernels_pallas import impl as impl_lib

Impl = Literal["auto", "reference", "xla", "cudnn", "pallas"]
IMPLS = ("auto", "reference", "xla", "cudnn", "pallas")
SUPPORTED = IMPLS[1:]


def _check_shapes(q: jax.Array, k: jax.Array, v: jax.Array) -> None:
    if q.ndim != 4 or k.ndim != 4 or v.ndim != 4:
        raise ValueError(
            f"attention wants q [B,T,H,D], k/v [B,S,Hkv,D]; got q {q.shape}, k {k.shape}, "
            f"v {v.shape}"
        )
    if k.shape != v.shape:
        raise ValueError(f"attention: k {k.shape} and v {v.shape} must have the same shape")
    if q.shape[0] != k.shape[0] or q.shape[3] != k.shape[3]:
        raise ValueError(f"attention: batch/head_dim of q {q.shape} and k {k.shape} differ")
    if q.shape[2] % k.shape[2]:
        raise ValueError(
            f"attention: {q.shape[2]} query heads are not a multiple of {k.shape[2]} kv heads"
        )


def build_mask(
    batch: int,
    q_len: int,
    kv_len: int,
    *,
    causal: bool,
    segment_ids: jax.Array | None = None,
    kv_segment_ids: jax.Array | None = None,
    mask: jax.Array | None = None,
) -> jax.Array | None:
    """The combined boolean mask [B, 1, T, S] (True = attend), or None when nothing is masked."""
    out = None

    def _and(a, b):
        return b if a is None else jnp.logical_and(a, b)

    if causal:
        q_idx = jnp.arange(q_len)[:, None] + (kv_len - q_len)
        out = _and(out, (jnp.arange(kv_len)[None, :] <= q_idx)[None, None])
    if segment_ids is not None:
        kv_seg = segment_ids if kv_segment_ids is None else kv_segment_ids
        if segment_ids.shape != (batch, q_len) or kv_seg.shape != (batch, kv_len):
            raise ValueError(
                f"attention: segment_ids {segment_ids.shape} / kv_segment_ids {kv_seg.shape} "
                f"must be [B={batch}, T={q_len}] / [B, S={kv_len}]"
            )
        out = _and(out, (segment_ids[:, :, None] == kv_seg[:, None, :])[:, None])
    if mask is not None:
        mask = mask.astype(bool)
        if mask.ndim == 2:
            mask = mask[:, None, None, :]
        elif mask.ndim == 3:
            mask = mask[:, None]
        if mask.ndim != 4 or mask.shape[-1] != kv_len or mask.shape[-2] not in (1, q_len):
            raise ValueError(
                f"attention: mask of shape {mask.shape} does not broadcast to "
                f"[B={batch}, 1, T={q_len}, S={kv_len}]"
            )
        out = _and(out, mask)
    return out


def reference_attention(
    q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array | None, scale: float
) -> jax.Array:
    """Einsum attention with the softmax in float32; GQA by grouping query heads."""
    b, t, h, d = q.shape
    hkv = k.shape[2]
    qg = q.reshape(b, t, hkv, h // hkv, d)
    logits = jnp.einsum("btkgd,bskd->bkgts", qg, k, preferred_element_type=jnp.float32)
    logits = logits * scale
    if mask is not None:  # [B|1, 1|H, T|1, S] -> [B|1, 1|Hkv, 1|G, T|1, S]
        if mask.shape[1] == 1:
            mask = mask[:, :, None]
        else:
            mask = mask.reshape(mask.shape[0], hkv, h // hkv, *mask.shape[2:])
        logits = jnp.where(mask, logits, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(logits, axis=-1)
    out = jnp.einsum(
        "bkgts,bskd->btkgd", probs.astype(v.dtype), v, preferred_element_type=jnp.float32
    )
    return out.reshape(b, t, h, d).astype(q.dtype)


def _pallas_block(t: int, s: int) -> int | None:
    """The largest flash block (<= 128) dividing both sequence lengths, or None."""
    return next((b for b in (128, 64, 32, 16) if t % b == 0 and s % b == 0), None)


def pallas_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    *,
    causal: bool,
    segment_ids: jax.Array | None,
    scale: float,
    interpret: bool | None = None,
) -> jax.Array:
    """Flash attention with packed-segment support: jax's Pallas (Triton) kernel
    `jax.experimental.pallas.ops.gpu.attention.mha` (fused forward and backward). GQA repeats
    the kv heads. `interpret` follows the one rule of `kernels_pallas.impl` (None: compiled on
    GPU, interpreted elsewhere, e.g. the CPU tests)."""
    from jax.experimental.pallas.ops.gpu import attention as pallas_mha

    t, h = q.shape[1], q.shape[2]
    s, hkv = k.shape[1], k.shape[2]
    block = _pallas_block(t, s)
    if block is None or (causal and t != s):
        raise ValueError(
            f"pallas attention needs T={t} and S={s} to be multiples of 16 (and equal when causal)"
        )
    if segment_ids is not None and t != s:
        raise ValueError("pallas attention: segment_ids need T == S (self-attention)")
    if hkv != h:
        k = jnp.repeat(k, h // hkv, axis=2)
        v = jnp.repeat(v, h // hkv, axis=2)
    bwd = min(block, 32)
    sizes = pallas_mha.BlockSizes(
        block_q=block,
        block_k=block,
        block_q_dkv=bwd,
        block_kv_dkv=bwd,
        block_q_dq=bwd,
        block_kv_dq=bwd,
    )
    return pallas_mha.mha(
        q,
        k,
        v,
        segment_ids,
        sm_scale=scale,
        causal=causal,
        block_sizes=sizes,
        interpret=impl_lib.resolve(
            "pallas", op="attention", supported=SUPPORTED, interpret=interpret
        ).interpret,
    )


def _flash_ok(q: jax.Array, k: jax.Array) -> bool:
    """Flash kernels on a GPU (cuDNN, Pallas): half precision, head_dim a multiple of 8 up to
    128. The backend check is `kernels_pallas.impl.resolve`'s."""
    d = q.shape[-1]
    return q.dtype in (jnp.bfloat16, jnp.float16) and k.dtype == q.dtype and d % 8 == 0 and d <= 128


def _auto_on_gpu(q, k, segment_ids, kv_segment_ids, mask) -> str:
    """What `auto` runs on a GPU: packed segments -> pallas, plain causal -> cudnn (both in
    half precision, no extra mask), everything else -> xla."""
    t, s = q.shape[1], k.shape[1]
    if _flash_ok(q, k) and mask is None and kv_segment_ids is None:
        if segment_ids is not None and t == s and _pallas_block(t, s):
            return "pallas"
        if segment_ids is None:
            return "cudnn"
    return "xla"


def attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    *,
    causal: bool = False,
    segment_ids: jax.Array | None = None,
    kv_segment_ids: jax.Array | None = None,
    mask: jax.Array | None = None,
    scale: float | None = None,
    impl: Impl = "auto",
) -> jax.Array:
    """Scaled dot-product attention; returns [B, T, H, D] in q's dtype.

    impl: 'reference' (einsum, float32 softmax), 'xla' (`jax.nn.dot_product_attention`),
    'cudnn' (cuDNN flash attention; GPU, bf16/fp16), 'pallas' (flash attention with segment
    ids, jax's Triton kernel; interpret mode off GPU), 'auto': on GPU in half precision,
    packed segments -> pallas, plain causal -> cuDNN; everything else -> XLA. cuDNN gets the
    causal flag alone when no other mask is given, so it skips the masked blocks; other masks
    reach it (and XLA) as a dense [B, 1, T, S] mask. `scale` defaults to head_dim**-0.5; when
    it is not given, the xla/cudnn paths let jax compute its own default, so `auto` off GPU
    equals `jax.nn.dot_product_attention(q, k, v)` bit for bit.
    """
    _check_shapes(q, k, v)  # first: the auto table reads the shapes
    b, t, _, d = q.shape
    s = k.shape[1]
    impl, _ = impl_lib.resolve(
        impl,
        op="attention",
        supported=SUPPORTED,
        auto_gpu=_auto_on_gpu(q, k, segment_ids, kv_segment_ids, mask),
        auto_other="xla",
    )
    jax_scale = None if scale is None else float(scale)  # None: jax's own default
    scale = d**-0.5 if scale is None else float(scale)
    if impl == "pallas":
        if mask is not None or kv_segment_ids is not None:
            raise ValueError("pallas attention supports causal + segment_ids only, not mask")
        return pallas_attention(q, k, v, causal=causal, segment_ids=segment_ids, scale=scale)
    if impl == "cudnn" and causal and t == s and segment_ids is None and mask is None:
        return jax.nn.dot_product_attention(
            q, k, v, scale=jax_scale, is_causal=True, implementation="cudnn"
        )
    full_mask = build_mask(
        b, t, s, causal=causal, segment_ids=segment_ids, kv_segment_ids=kv_segment_ids, mask=mask
    )
    if impl == "reference":
        return reference_attention(q, k, v, full_mask, scale)
    return jax.nn.dot_product_attention(
        q, k, v, mask=full_mask, scale=jax_scale, implementation=impl
    )
