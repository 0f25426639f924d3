"""benchmarks/clamr.py --smoke runs on CPU (tiny LLM, Pallas MaxSim in interpret mode): its
rows parse, and the kernel and reference losses (and gradients) agree in the same run."""

import importlib.util
import re
import sys
from pathlib import Path

import jax
import pytest

ROOT = Path(__file__).resolve().parents[2]


def _num(name: str, line: str) -> float:
    m = re.search(rf"{re.escape(name)}\s+(\S+)", line)
    assert m, f"{name!r} not in {line!r}"
    return float(m.group(1).rstrip("%x"))


def test_clamr_benchmark_smoke(capsys):
    if jax.default_backend() == "gpu":
        pytest.skip("on GPU run the full benchmark instead")
    spec = importlib.util.spec_from_file_location("bench_clamr", ROOT / "benchmarks/clamr.py")
    bench = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = bench
    spec.loader.exec_module(bench)
    bench.main(["--smoke", "--iters", "1"])
    lines = capsys.readouterr().out.splitlines()
    step = next(x for x in lines if x.startswith("step "))
    loss = next(x for x in lines if x.startswith("loss "))
    assert _num("step", step.split("|")[1]) > 0
    assert (
        re.search(r"([\d.]+) tokens/s", step)
        and float(re.search(r"([\d.]+) tokens/s", step).group(1)) > 0
    )
    k_ms, r_ms = _num("kernel", loss), _num("reference", loss)
    assert k_ms > 0 and r_ms > 0 and _num("ratio", loss) > 0
    share = loss.split("share of step:")[1]
    assert 0 < _num("kernel", share) and 0 < _num("reference", share)
    k_loss = float(re.search(r"loss kernel (\S+)", loss).group(1))
    r_loss = float(re.search(r"reference (\S+)\s+\|diff\|", loss).group(1))
    assert abs(k_loss - r_loss) < 1e-4 * max(1.0, abs(r_loss))
    assert _num("|diff|", loss) < 1e-4 and _num("max|dgrad|", loss) < 1e-4
    # the step's loss is the same modality-aware loss on the same batch's embeddings
    assert abs(_num("| loss", step) - r_loss) < 1e-3 * max(1.0, abs(r_loss))
