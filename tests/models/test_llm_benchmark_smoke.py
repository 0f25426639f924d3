"""benchmarks/llm.py's packed-SFT section runs on CPU (smoke shapes); no timing asserted."""

import re
import subprocess
import sys
from pathlib import Path

import jax
import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow  # two tiny train steps compiled: ~55 s wall on the loaded 2-core CPU
def test_llm_benchmark_packed_sft_smoke_runs():
    if jax.default_backend() == "gpu":
        pytest.skip("on GPU run the full benchmark instead")
    out = subprocess.run(
        [
            sys.executable,
            "benchmarks/llm.py",
            "--smoke",
            "--skip-train",
            "--skip-decode",
            "--sft-seqs",
            "128",
        ],  # fmt: skip
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env={"PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu", "PATH": "/usr/bin:/bin"},
    )
    assert out.returncode == 0, out.stderr[-2000:]
    text = out.stdout
    assert re.search(r"sft seq 128: packing \d+ examples into \d+ rows, [\d.]+% of row", text)
    assert re.search(r"sft seq 128 chunk 48: batch 4, .* tokens/s \([\d,]+ real tokens/s\)", text)
    assert "sft seq 128 full logits: batch 4" in text
    assert re.search(r"step time chunk 48 / full logits = [\d.]+x", text)
    # Both losses are the same number: the chunked path computes the same cross-entropy.
    losses = re.findall(r"sft seq 128 (?:chunk 48|full logits): compile .* loss ([\d.]+)", text)
    assert len(losses) == 2 and losses[0] == losses[1], text
