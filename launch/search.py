"""Searches a multi-vector index with the queries of a BEIR split; writes a TREC run and
prints nDCG@10, Recall@10/100, MRR@10 and MAP (trec_eval conventions).

  python launch/search.py --beir_dir data/scifact --index_dir runs/scifact_index \
      --run_out runs/scifact.trec

CLaMR (an index from `launch/index.py --multivent_dir ... --clamr_workdir ...`): prints
nDCG@10, R@1/5/10 overall and per query type.

  python launch/search.py --multivent_dir runs/clamr/data --clamr_workdir runs/clamr \
      --index_dir runs/clamr_index --run_out runs/clamr.trec
"""

from __future__ import annotations

import json
import time

import numpy as np
from absl import flags, logging

from jaxmm import cli
from jaxmm.data.retrieval import load_beir
from jaxmm.eval.retrieval_metrics import evaluate
from jaxmm.models.text_encoder import TextEncoder, minilm_model_dir
from jaxmm.retrieval import MultiVectorIndex, write_run
from jaxmm.tasks import clamr_eval
from jaxmm.tasks.clamr import load_trained

_BEIR_DIR = flags.DEFINE_string("beir_dir", None, "BEIR folder.")
_MULTIVENT_DIR = flags.DEFINE_string("multivent_dir", None, "MultiVENT-layout folder (CLaMR).")
_CLAMR_WORKDIR = flags.DEFINE_string("clamr_workdir", None, "Trained CLaMR workdir.")
_INDEX_DIR = flags.DEFINE_string(
    "index_dir", None, "Index built by launch/index.py.", required=True
)
_RUN_OUT = flags.DEFINE_string("run_out", None, "Output TREC run file.", required=True)
_SPLIT = flags.DEFINE_string("split", "test", "qrels/<split>.tsv (BEIR) or MultiVENT split.")
_MODEL_DIR = flags.DEFINE_string("model_dir", "", "Query encoder folder; default all-MiniLM-L6-v2.")
_K = flags.DEFINE_integer("k", 100, "Documents retrieved per query.")
_MAX_QUERY_LEN = flags.DEFINE_integer("max_query_len", 32, "Max tokens per query.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 64, "Queries per search call.")
_METRICS_OUT = flags.DEFINE_string("metrics_out", "", "Optional JSON file for the metrics.")

METRICS = ("ndcg@10", "recall@10", "recall@100", "mrr@10", "map")


def encode_queries(encoder: TextEncoder, texts: list[str], max_len: int, batch: int):
    """Token embeddings padded to a fixed [batch, max_len] so search compiles once."""
    emb, mask = encoder.token_embeddings(texts, max_len)
    n, length, dim = emb.shape
    emb = np.pad(emb, ((0, -n % batch), (0, max_len - length), (0, 0)))
    mask = np.pad(mask, ((0, -n % batch), (0, max_len - length)))
    return emb, mask


def clamr_search(index: MultiVectorIndex) -> dict[str, float]:
    """Encodes the split's queries with the CLaMR workdir's model and searches the index."""
    task, params = load_trained(_CLAMR_WORKDIR.value, _MULTIVENT_DIR.value)
    split = task.split(_SPLIT.value)
    qids = list(split.queries)
    queries = task.query_arrays(split, qids)
    encode_q, _ = task.encoders
    q_emb, q_keep = encode_q(params, queries["q_ids"], queries["q_mask"])
    if q_emb.shape[-1] != index.dim:
        raise ValueError(f"CLaMR embedding dim {q_emb.shape[-1]} != index dim {index.dim}")
    metrics, _ = clamr_eval.search_and_score(
        split, qids, np.asarray(q_emb), np.asarray(q_keep), index, run_out=_RUN_OUT.value
    )
    return metrics


def main(argv) -> None:
    del argv
    t0 = time.time()
    if bool(_BEIR_DIR.value) == bool(_MULTIVENT_DIR.value):
        raise ValueError("give exactly one of --beir_dir and --multivent_dir")
    if _MULTIVENT_DIR.value:
        if not _CLAMR_WORKDIR.value:
            raise ValueError("--multivent_dir needs --clamr_workdir (a trained CLaMR workdir)")
        metrics = clamr_search(MultiVectorIndex.load(_INDEX_DIR.value))
        print(json.dumps({"split": _SPLIT.value, **metrics}))
        if _METRICS_OUT.value:
            with open(_METRICS_OUT.value, "w") as f:
                json.dump(metrics, f, indent=2)
        return
    data = load_beir(_BEIR_DIR.value, _SPLIT.value)
    index = MultiVectorIndex.load(_INDEX_DIR.value)
    encoder = TextEncoder.from_pretrained(_MODEL_DIR.value or minilm_model_dir())
    if encoder.config.hidden_size != index.dim:
        raise ValueError(
            f"encoder hidden size {encoder.config.hidden_size} != index dim {index.dim}"
        )
    k = min(_K.value, index.num_docs)
    qids = list(data.queries)
    run: dict[str, dict[str, float]] = {}
    bs = _BATCH_SIZE.value
    for start in range(0, len(qids), bs):
        batch_ids = qids[start : start + bs]
        emb, mask = encode_queries(
            encoder, [data.queries[q] for q in batch_ids], _MAX_QUERY_LEN.value, bs
        )
        scores, doc_ids = index.search(emb, k, mask)
        for i, qid in enumerate(batch_ids):
            run[qid] = dict(zip(doc_ids[i], scores[i].tolist(), strict=True))
    write_run(_RUN_OUT.value, run, tag="jaxmm-maxsim")
    metrics = evaluate(run, data.qrels, METRICS)
    logging.info("searched %d queries in %.1fs", len(qids), time.time() - t0)
    print(json.dumps({"split": _SPLIT.value, "num_queries": len(qids), **metrics}))
    if _METRICS_OUT.value:
        with open(_METRICS_OUT.value, "w") as f:
            json.dump(metrics, f, indent=2)


if __name__ == "__main__":
    # A bad folder, file or shape exits 1 with its message, no traceback.
    cli.run(main, config=False, errors=(FileNotFoundError, ValueError))
