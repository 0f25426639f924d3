"""launch/*.py as a user runs them: train twice resumes, profile prints, bad input exits 2."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run(script, *args, check=True):
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "launch", script), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _json_tail(stdout):
    return json.loads(stdout[stdout.index("{") :])


def test_train_twice_continues_then_eval(tmp_path):
    common = [
        "--config=configs/toy.py:runlocal",
        f"--workdir={tmp_path}",
        "--config.progress_bar=False",
        "--config.checkpoint.every_steps=10",
    ]
    first = _json_tail(run("train.py", *common).stdout)
    assert first["resumed_from"] is None
    second = _json_tail(run("train.py", *common, "--config.num_steps=30").stdout)
    assert second["resumed_from"] == 20
    ev = _json_tail(
        run(
            "eval.py",
            "--config=configs/toy.py:runlocal",
            f"--workdir={tmp_path}",
            f"--out={tmp_path / 'eval.json'}",
        ).stdout
    )
    assert ev["step"] == 30 and ev["mse"] >= 0
    assert json.load(open(tmp_path / "eval.json")) == ev


def test_profile_prints_compiled_cost(tmp_path):
    out = run(
        "profile_step.py", "--config=configs/toy.py:tiny", f"--dump_dir={tmp_path}", "--json"
    ).stdout
    stats = _json_tail(out)
    assert stats["flops"] > 0 and stats["bytes_accessed"] > 0
    assert stats["temp_size_in_bytes"] >= 0 and os.path.getsize(stats["hlo_path"]) > 0


@pytest.mark.parametrize(
    "args, message",
    [
        (["--config=configs/missing.py"], "configs/missing.py' does not exist"),
        (["--config=configs/toy.py:huge"], "unknown config variant 'huge'"),
        (
            ["--config=configs/toy.py", "--config.optimizer.lerning_rate=1"],
            "Closest valid keys: ['optimizer.learning_rate'",
        ),
        ([], "missing --config"),
    ],
)
def test_bad_input_exits_2_with_message(args, message, tmp_path):
    proc = run("train.py", *args, f"--workdir={tmp_path}", check=False)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert not os.path.exists(tmp_path / "checkpoints")  # failed before doing anything


def test_unwritable_workdir_exits_1(tmp_path):
    (tmp_path / "file").write_text("x")
    proc = run(
        "train.py",
        "--config=configs/toy.py:runlocal",
        f"--workdir={tmp_path}/file/run",
        check=False,
    )
    assert proc.returncode == 1 and "cannot be created" in proc.stderr


def test_lrm4d_goal_sizes_the_run_to_its_budget(tmp_path):
    shrink = {
        "data.image_size": 16,
        "data.num_input_views": 2,
        "data.num_target_views": 1,
        "data.points_per_primitive": 16,
        "model.width": 32,
        "model.num_layers": 1,
        "model.num_heads": 2,
        "model.render_capacity": 64,
        "batch_size": 8,
        "progress_bar": False,
        "checkpoint.async_save": False,
    }
    args = [f"--config.{k}={v}" for k, v in shrink.items()]
    proc = run(
        "lrm4d_goal.py",
        "--config=configs/lrm4d.py:runlocal",
        f"--workdir={tmp_path}",
        "--minutes=0.3",
        "--num_scenes=1",
        "--probe_steps=6",
        "--margin_db=-100",  # any trained model beats the nearest view by more than -100 dB
        *args,
    )
    goal = json.load(open(tmp_path / "goal.json"))
    assert goal["probe_steps_per_sec"] > 0 and goal["steps"] >= 1
    assert set(goal["psnr_margin_over_nearest_view"]) == {
        "alternating_canonical",
        "frame_interpolation",
        "two_rotating",
    }
    # Margins recomputed from the per-setup PSNRs the evaluation wrote, and the verdict from
    # those PSNRs with the --margin_db given (not the script's default of 3 dB, which a
    # 0.3-minute model does not reach): a script that ignored the flag or mis-subtracted fails.
    for setup, margin in goal["psnr_margin_over_nearest_view"].items():
        model, nearest = goal[setup]["model/psnr"], goal[setup]["nearest_view/psnr"]
        assert 0.0 < model < 100.0 and 0.0 < nearest < 100.0, (setup, model, nearest)
        assert margin == pytest.approx(model - nearest, abs=1e-9), setup
    assert goal["passes"] is True
    assert "need >= -100.0" in proc.stdout and "[goal] PASS" in proc.stdout
    assert (tmp_path / "turntable.gif").is_file()
    bad = run("lrm4d_goal.py", "--config=configs/toy.py:tiny", f"--workdir={tmp_path}", check=False)
    assert bad.returncode == 2 and "4D-LRM config" in bad.stderr
