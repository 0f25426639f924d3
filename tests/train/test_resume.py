"""A run killed with SIGKILL (or stopped by SIGTERM) and restarted ends bit-for-bit equal to
an uninterrupted run: real subprocesses, real signals, CPU determinism."""

import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from jaxmm import config as config_lib
from jaxmm import tasks
from jaxmm.train import checkpoint as ckpt_lib
from jaxmm.train.trainer import Trainer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STEPS, EVERY = 300, 20
ARGS = [
    f"--config.num_steps={STEPS}",
    f"--config.checkpoint.every_steps={EVERY}",
    "--config.progress_bar=False",
    "--config.log_every_steps=10",
]


def _cmd(workdir):
    return [
        sys.executable,
        os.path.join(ROOT, "launch/train.py"),
        "--config=configs/toy.py:tiny",
        f"--workdir={workdir}",
        *ARGS,
    ]


def _final_params(workdir):
    c = config_lib.load_config_file("configs/toy.py:tiny")
    abstract = Trainer(c, str(workdir) + "_probe", tasks.build(c)).abstract_state.params
    step, params = ckpt_lib.load_params(str(workdir), abstract)
    assert step == STEPS
    return params


def _run_until_checkpoint_then(workdir, sig):
    proc = subprocess.Popen(
        _cmd(workdir), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    ckdir = os.path.join(workdir, "checkpoints")
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        steps = [int(d) for d in (os.listdir(ckdir) if os.path.isdir(ckdir) else []) if d.isdigit()]
        if steps and max(steps) >= 2 * EVERY:
            break
        time.sleep(0.005)
    assert proc.poll() is None, "run finished before it could be interrupted"
    proc.send_signal(sig)
    out = proc.communicate(timeout=120)[0].decode()
    return proc.returncode, out


@pytest.fixture(scope="module")
def reference_params(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("uninterrupted")
    subprocess.run(_cmd(workdir), cwd=ROOT, check=True, capture_output=True)
    return _final_params(workdir)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["sigkill", "sigterm"])
def test_interrupted_run_resumes_exactly(sig, tmp_path, reference_params):
    workdir = tmp_path / "run"
    code, out = _run_until_checkpoint_then(str(workdir), sig)
    if sig == signal.SIGKILL:
        assert code == -signal.SIGKILL
    else:
        assert code == 0, out  # SIGTERM: saves a checkpoint and exits cleanly
    steps = sorted(int(d) for d in os.listdir(workdir / "checkpoints") if d.isdigit())
    assert steps and steps[-1] < STEPS
    done = subprocess.run(_cmd(workdir), cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert '"resumed_from":' in done.stdout and '"resumed_from": null' not in done.stdout
    resumed = _final_params(workdir)
    for a, b in zip(jax.tree.leaves(reference_params), jax.tree.leaves(resumed), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))  # bit-for-bit
