"""Test-wide setup: 8 fake CPU devices (set before JAX is imported) and GPU/torch markers."""

import importlib.util
import os

import pytest

_flag = "--xla_force_host_platform_device_count=8"
if _flag not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _flag).strip()
# Keep TF-style C++ logging and HF hubs quiet and offline in tests.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def _has_gpu() -> bool:
    import jax

    try:
        return any(d.platform == "gpu" for d in jax.devices())
    except RuntimeError:
        return False


def pytest_collection_modifyitems(config, items):
    has_gpu = _has_gpu()
    if has_gpu:
        # XLA and Pallas-Triton run float32 dots as TF32 on GPUs by default (~1e-3 relative),
        # so float32 references would miss docs/testing.md's float32 tolerances by rounding
        # alone. Tests compare full float32; bf16 tests state their own tolerance.
        import jax

        jax.config.update("jax_default_matmul_precision", "highest")
    has_torch = importlib.util.find_spec("torch") is not None and (
        importlib.util.find_spec("transformers") is not None
    )
    for item in items:
        if "gpu" in item.keywords and not has_gpu:
            item.add_marker(pytest.mark.skip(reason="needs a CUDA GPU"))
        if "torch" in item.keywords and not has_torch:
            item.add_marker(pytest.mark.skip(reason="needs the torch-parity extra"))
