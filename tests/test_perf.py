"""The one device-peak table: first (most specific) match wins, unknown devices have no peak."""

import types

from jaxmm import perf


def _dev(kind: str):
    return types.SimpleNamespace(device_kind=kind)


def test_specific_names_win_over_their_family():
    assert perf.device_peaks(_dev("NVIDIA H100 PCIe"))[1:] == (2.0e12, 756e12)
    assert perf.device_peaks(_dev("NVIDIA H100 80GB HBM3"))[1:] == (3.35e12, 989e12)
    assert perf.device_peaks(_dev("NVIDIA H200"))[1:] == (4.8e12, 989e12)
    assert perf.device_peaks(_dev("NVIDIA A100-SXM4-80GB"))[1] == 2.04e12
    assert perf.device_peaks(_dev("NVIDIA A100-SXM4-40GB"))[1] == 1.56e12


def test_unknown_device_has_no_peak_and_override_wins():
    assert perf.device_peaks(_dev("cpu")) == ("cpu", None, None)
    assert perf.peak_bf16_flops(_dev("cpu")) is None
    assert perf.peak_bf16_flops(_dev("NVIDIA H200"), override_tflops=500) == 500e12
    assert perf.peak_bf16_flops(_dev("NVIDIA H200")) == 989e12
