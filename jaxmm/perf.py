"""Device peaks the benchmarks report MFU and bandwidth against: one table for all of them.

Vendor datasheet figures (dense bf16 FLOP/s, no sparsity; HBM bytes/s), SXM parts unless the
name says otherwise. Matched against `jax.Device.device_kind` by substring, first match wins,
so the more specific names come first.
"""

from __future__ import annotations

from typing import Any

# (device_kind substring, HBM bytes/s, dense bf16 FLOP/s)
DEVICE_PEAKS: tuple[tuple[str, float, float], ...] = (
    ("H200", 4.8e12, 989e12),
    ("H100 PCIe", 2.0e12, 756e12),
    ("H100", 3.35e12, 989e12),
    ("B200", 8.0e12, 2250e12),
    ("A100-SXM4-80GB", 2.04e12, 312e12),
    ("A100", 1.56e12, 312e12),
    ("L4", 0.3e12, 121e12),
)


def device_peaks(device: Any = None) -> tuple[str, float | None, float | None]:
    """(device_kind, HBM bytes/s, bf16 FLOP/s) of `device` (default: the first device); the
    peaks are None for a device not in the table (a CPU, say)."""
    if device is None:
        import jax

        device = jax.devices()[0]
    kind = getattr(device, "device_kind", "")
    for key, bandwidth, flops in DEVICE_PEAKS:
        if key in kind:
            return kind, bandwidth, flops
    return kind, None, None


def peak_bf16_flops(device: Any = None, override_tflops: float | None = None) -> float | None:
    """Dense bf16 FLOP/s for MFU; `override_tflops` (TFLOP/s) wins when given."""
    if override_tflops:
        return override_tflops * 1e12
    return device_peaks(device)[2]
