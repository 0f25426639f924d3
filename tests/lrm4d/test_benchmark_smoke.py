"""benchmarks/lrm4d.py runs bare on CPU (its smoke shapes); no timing asserted."""

import subprocess
import sys
from pathlib import Path

import jax
import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_lrm4d_benchmark_smoke_runs():
    if jax.default_backend() == "gpu":
        pytest.skip("on GPU run the full benchmark instead")
    out = subprocess.run(
        [sys.executable, "benchmarks/lrm4d.py"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env={"PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu", "PATH": "/usr/bin:/bin"},
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "[smoke] forward" in out.stdout and "[smoke] train step" in out.stdout
