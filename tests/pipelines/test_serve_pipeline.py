"""A pipeline end to end on the real instruct model over HTTP: `launch/serve.py` serving
SmolLM2-135M-Instruct from its GGUF file, `launch/pipeline.py` calling it through
`OpenAIBackend`; a rerun makes no model call."""

import json
import os
import subprocess
import sys

import pytest

from jaxmm.models.gguf import default_instruct_model

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _script(name, *args, env, **kw):
    cmd = [sys.executable, os.path.join(ROOT, "launch", name), *args]
    return subprocess.Popen(cmd, cwd=ROOT, env=env, text=True, **kw)


def test_prompt_pipeline_through_the_real_served_model(tmp_path):
    try:
        model = default_instruct_model()
    except FileNotFoundError as e:
        pytest.skip(str(e))
    env = {
        **os.environ,
        "JAX_PLATFORMS": "cpu",
        "XLA_FLAGS": "",
        "JAXMM_CACHE": str(tmp_path / "cache"),
    }
    server = _script(
        "serve.py",
        f"--model_dir={model}",
        "--port=0",
        "--max_seq_len=256",
        "--max_batch=4",
        "--model_name=smollm2",
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        line = server.stdout.readline()  # blocks until the model is converted and loaded
        assert line.startswith("serving 'smollm2' at http://127.0.0.1:"), server.stderr.read()
        url = line.split(" at ")[1].strip()
        src = tmp_path / "in.jsonl"
        questions = ["What is the capital of France?", "Name a primary colour.", "What is 2+2?"]
        src.write_text(
            "".join(
                json.dumps({"id": i, "messages": [{"role": "user", "content": q}]}) + "\n"
                for i, q in enumerate(questions)
            )
        )
        args = [
            "--pipeline=prompt",
            f"--input={src}",
            f"--out={tmp_path / 'out.jsonl'}",
            f"--backend=openai:{url},model=smollm2",
            "--max_tokens=12",
            "--noprogress",
        ]
        summaries = []
        for _ in range(2):
            run = _script(
                "pipeline.py", *args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
            )
            out, err = run.communicate(timeout=300)
            assert run.returncode == 0, err[-2000:]
            summaries.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        server.terminate()
        server.wait(timeout=60)
    rows = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == [0, 1, 2] and all(r["output"].strip() for r in rows)
    assert "Paris" in rows[0]["output"]  # the real model answers
    assert summaries[0]["calls"] == 3 and summaries[1] == {**summaries[1], "calls": 0, "written": 0}
