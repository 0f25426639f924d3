"""benchmarks/maxsim.py --smoke runs (CPU: kernel in interpret mode); no timing asserted."""

import importlib.util
import sys
from pathlib import Path

import jax
import pytest

ROOT = Path(__file__).resolve().parents[3]


def test_benchmark_smoke_runs(capsys):
    if jax.default_backend() == "gpu":
        pytest.skip("on GPU run the full benchmark instead")
    spec = importlib.util.spec_from_file_location("bench_maxsim", ROOT / "benchmarks/maxsim.py")
    bench = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = bench  # dataclasses look their module up
    spec.loader.exec_module(bench)
    bench.main(["--smoke", "--only", "a", "--iters", "1"])
    out = capsys.readouterr().out
    assert "a: 1 query" in out and "ratio" in out and "max|diff|" in out
    diff = float(out.split("max|diff|")[1].split()[0])
    assert diff < 1e-4  # the kernel and the reference agree in the same run
