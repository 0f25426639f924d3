"""The multi-host path on one machine: 2 CPU processes (coordinator on localhost) train,
checkpoint together, and a second launch resumes from that checkpoint."""

import json
import os
import socket
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(workdir, steps):
    import sys

    env = dict(
        os.environ,
        NPROC="2",
        PORT=str(_free_port()),
        PYTHON=sys.executable,
        XLA_FLAGS="--xla_force_host_platform_device_count=2",
    )
    proc = subprocess.run(
        [
            "bash",
            "launch/local.sh",
            "configs/toy.py:runlocal",
            str(workdir),
            f"--config.num_steps={steps}",
            "--config.checkpoint.every_steps=5",
            "--config.progress_bar=False",
            "--config.log_every_steps=5",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    return json.loads(out[out.index("{") :])  # only process 0 prints


def test_two_processes_train_checkpoint_and_resume(tmp_path):
    first = _launch(tmp_path, 10)
    assert first["resumed_from"] is None
    assert {"5", "10"} <= set(os.listdir(tmp_path / "checkpoints"))
    second = _launch(tmp_path, 15)
    assert second["resumed_from"] == 10
    assert "15" in os.listdir(tmp_path / "checkpoints")
    rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    assert [r["step"] for r in rows if "train/loss" in r] == [5, 10, 15]
