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
    assert "a: 1 query" in out and "a: 1 query, 2 shards" in out
    # Every case timed under both scan schedules, each with its ratio to the reference and
    # its agreement with it in the same run (the sharded row, the top-k search included).
    for schedule in ("blocked", "persistent"):
        rows = [ln for ln in out.splitlines() if ln.strip().startswith(f"{schedule} ")]
        assert len(rows) == 3, out
        for ln in rows:
            assert "ratio to reference" in ln and "max|diff|" in ln
            assert float(ln.split("max|diff|")[1].split()[0]) < 1e-4
