"""The pipeline runtime: in-order resumable output, no repeated model call (also across a
SIGKILL of `launch/pipeline.py`), bad input records reported with file:line and field."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from jaxmm import pipelines
from jaxmm.generate.backend_spec import backend_from_spec
from jaxmm.generate.openai_backend import OpenAIBackend
from jaxmm.generate.params import GenerationParams
from jaxmm.pipelines.runtime import run_pipeline
from tests.generate.scripted import ScriptedBackend, scripted_openai_server

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PARAMS = GenerationParams(max_tokens=16)


def _write_input(path, n=30):
    with open(path, "w") as f:
        for i in range(n):
            rec = {"id": f"r{i}", "prompt": f"prompt number {i}"}
            if i % 3 == 1:
                rec = {"id": f"r{i}", "messages": [{"role": "user", "content": f"chat {i}"}]}
            f.write(json.dumps(rec) + "\n")
    return path


def _expected(n=30):
    out = []
    for i in range(n):
        text = f"chat {i}" if i % 3 == 1 else f"prompt number {i}"
        out.append({"id": f"r{i}", "output": text[::-1]})
    return out


def _lines(path):
    return len(path.read_bytes().splitlines()) if path.exists() else 0


def _read(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


def test_runs_in_input_order_and_a_rerun_calls_nothing(tmp_path):
    src = _write_input(tmp_path / "in.jsonl")
    backend = ScriptedBackend(lambda p: p[::-1])
    out = tmp_path / "out.jsonl"
    first = run_pipeline(
        pipelines.get("prompt"), src, out, backend, params=PARAMS, concurrency=4, progress=False
    )
    assert _read(out) == _expected()
    assert (first.written, first.calls, first.cache_hits) == (30, 30, 0)
    assert len(backend.calls) == 30
    again = run_pipeline(pipelines.get("prompt"), src, out, backend, params=PARAMS, progress=False)
    assert (again.done_before, again.written, again.calls) == (30, 0, 0)
    assert len(backend.calls) == 30 and _read(out) == _expected()
    manifest = json.load(open(str(out) + ".manifest.json"))
    assert manifest["pipeline"] == "prompt" and manifest["status"] == "finished"
    assert manifest["params"]["max_tokens"] == 16 and manifest["backend"] == "scripted"


def test_a_torn_last_line_is_cut_and_its_record_redone_from_the_cache(tmp_path):
    src = _write_input(tmp_path / "in.jsonl", n=5)
    backend = ScriptedBackend(lambda p: p[::-1])
    out = tmp_path / "out.jsonl"
    run_pipeline(pipelines.get("prompt"), src, out, backend, params=PARAMS, progress=False)
    data = open(out, "rb").read()
    open(out, "wb").write(data[: data.rfind(b"\n", 0, -1) + 10])  # kill mid-write of line 5
    report = run_pipeline(pipelines.get("prompt"), src, out, backend, params=PARAMS, progress=False)
    assert (report.done_before, report.written, report.calls, report.cache_hits) == (4, 1, 0, 1)
    assert _read(out) == _expected(5) and len(backend.calls) == 5


def test_bad_records_are_reported_with_file_line_and_field(tmp_path):
    src = tmp_path / "in.jsonl"
    lines = [
        {"id": "a", "prompt": "fine"},
        {"prompt": "no id"},
        {"id": "b"},
        {"id": "a", "prompt": "duplicate"},
        {"id": "c", "messages": [{"role": "user"}]},
    ]
    src.write_text("\n".join(json.dumps(x) for x in lines) + "\n{not json\n")
    report = run_pipeline(
        pipelines.get("prompt"), src, tmp_path / "out.jsonl", ScriptedBackend(str), progress=False
    )
    assert report.written == 1 and _read(tmp_path / "out.jsonl") == [{"id": "a", "output": "fine"}]
    errors = {e["where"].rsplit(":", 1)[1]: e["error"] for e in report.bad_records}
    assert set(errors) == {"2", "3", "4", "5", "6"}
    assert "'id'" in errors["2"] and "'prompt' or 'messages'" in errors["3"]
    assert "duplicate id 'a'" in errors["4"] and "'messages'" in errors["5"]
    assert all(str(src) in e["where"] for e in report.bad_records)
    assert _read(str(tmp_path / "out.jsonl") + ".errors.jsonl") == report.bad_records


def test_backend_specs_and_unknown_pipeline_fail_clearly():
    b = backend_from_spec("openai:http://127.0.0.1:9/v1,model=m")
    assert isinstance(b, OpenAIBackend) and b.model == "m" and b.base_url.endswith(":9/v1")
    for bad in ("vllm:x", "openai:", "openai:http://h/v1,modle=m", "engine:"):
        with pytest.raises(ValueError, match="backend spec"):
            backend_from_spec(bad)
    with pytest.raises(ValueError, match="unknown pipeline 'nope'; known: .*'prompt'"):
        pipelines.get("nope")


def _prompt(body):
    return body.get("prompt") or body["messages"][-1]["content"]


def _cached_prompts(cache_dir):
    with sqlite3.connect(os.path.join(cache_dir, "calls.sqlite")) as db:
        requests = [json.loads(r) for (r,) in db.execute("SELECT request FROM calls")]
    return {
        r["prompt"] if isinstance(r["prompt"], str) else r["prompt"][-1]["content"]
        for r in requests
    }


def _launch(src, out, url, *extra):
    cmd = [
        sys.executable,
        os.path.join(ROOT, "launch", "pipeline.py"),
        "--pipeline=prompt",
        f"--input={src}",
        f"--out={out}",
        f"--backend=openai:{url},model=m",
        "--concurrency=2",
        "--max_tokens=16",
        "--noprogress",
        *extra,
    ]
    return subprocess.Popen(
        cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def test_sigkill_then_restart_gives_the_uninterrupted_file_and_repeats_no_call(tmp_path):
    src = _write_input(tmp_path / "in.jsonl", n=40)
    with scripted_openai_server(delay_s=0.05) as (url, seen):
        whole = _launch(src, tmp_path / "whole.jsonl", url)
        assert whole.wait(timeout=120) == 0, whole.stderr.read()[-2000:]
        assert len(seen) == 40
    with scripted_openai_server(delay_s=0.05) as (url, seen):
        out = tmp_path / "killed.jsonl"
        proc = _launch(src, out, url)
        deadline = time.time() + 60
        while time.time() < deadline and (
            not out.exists() or len(out.read_bytes().splitlines()) < 8
        ):
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        time.sleep(0.5)  # requests already sent reach the server's log
        written_before = len(out.read_bytes().splitlines())
        assert 8 <= written_before < 40  # killed mid-run
        finished = _cached_prompts(str(out) + ".cache")  # calls whose answer the run received
        calls_before = len(seen)
        rerun = _launch(src, out, url)
        stdout, stderr = rerun.communicate(timeout=120)
        assert rerun.returncode == 0, stderr[-2000:]
        again = [_prompt(b) for b in seen[calls_before:]]
        # No finished call is repeated; only the <= 2 calls in flight at the kill are redone.
        assert not set(again) & finished and len(again) == len(set(again))
        assert set(again) | finished == {_prompt(b) for b in seen} and len(finished) >= 8
        summary = json.loads(stdout.strip().splitlines()[-1])
        assert summary["calls"] == len(again) and summary["done_before"] >= written_before
    assert out.read_bytes() == (tmp_path / "whole.jsonl").read_bytes()


def test_metrics_cover_every_record_in_the_file_and_are_written(tmp_path):
    import dataclasses

    src = _write_input(tmp_path / "in.jsonl", n=6)

    def metrics(inputs, outputs):
        assert [r["id"] for r in inputs] == [o["id"] for o in outputs]
        return {
            "n": len(outputs),
            "mean_len": sum(len(o["output"]) for o in outputs) / len(outputs),
        }

    pipe = dataclasses.replace(pipelines.get("prompt"), metrics=metrics)
    out = tmp_path / "out.jsonl"
    run_pipeline(pipe, src, out, ScriptedBackend(lambda p: p[::-1]), limit=3, progress=False)
    report = run_pipeline(pipe, src, out, ScriptedBackend(lambda p: p[::-1]), progress=False)
    want = sum(len(o["output"]) for o in _expected(6)) / 6
    assert report.metrics == {"n": 6.0, "mean_len": want}
    assert json.load(open(str(out) + ".metrics.json")) == report.metrics


def test_engine_spec_options_are_checked_before_loading():
    for bad in ("engine:m.gguf,max_seq_len=abc", "engine:m.gguf,maxlen=5", "openai:http://h/v1,x"):
        with pytest.raises(ValueError, match="backend spec"):
            backend_from_spec(bad)
    assert "genprog_program" not in pipelines.names() and "runtime" not in pipelines.names()
    assert {"prompt", "genprog", "openthoughts"} <= set(pipelines.names())


def test_output_folder_is_created(tmp_path):
    src = _write_input(tmp_path / "in.jsonl", n=2)
    out = tmp_path / "new" / "deeper" / "out.jsonl"
    run_pipeline(
        pipelines.get("prompt"), src, out, ScriptedBackend(lambda p: p[::-1]), progress=False
    )
    assert (
        _read(out) == _expected(2)
        and (tmp_path / "new" / "deeper" / "out.jsonl.errors.jsonl").exists()
    )
