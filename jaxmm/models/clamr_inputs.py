"""CLaMR input builder: query and document token sequences with per-token modality ids.

Why fixed shapes: every query is padded to `query_len` and every document to one length fixed
by the token budgets, so the jitted encoder and the [B, B, M] score matrix compile once.

Query: `[CLS] "Query: " q [MASK]*n_buffer [SEP]` (ColBERT-style buffer tokens; too long ->
`QueryTooLongError`). Document, joint (contextualised) setting, one sequence per video:

    [CLS] [VIS]*n_vis  "OCR:" ocr…  "ASR:" asr…  "Description:" description…  [SEP] [PAD]…
    mod:0   1 … 1      0 0  2 …     0 0  3 …     0 0        4 …            0     0

Frame tokens come first (the backbone splices frame embeddings in where the id is 1); each
text modality is truncated to its own token budget; the field labels and special tokens carry
modality 0, so they give context but are never scored. The non-contextualised ablation builds
one sequence per modality (`separate=True`): [n_docs, 4, L_pass], same modality ids.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np

VIDEO, OCR, ASR, DESCRIPTION = 1, 2, 3, 4  # = jaxmm.data.multivent modality ids
TEXT_MODALITIES = (
    ("ocr", OCR, "OCR:"),
    ("asr", ASR, "ASR:"),
    ("description", DESCRIPTION, "Description:"),
)
NUM_MODALITIES = 4


class QueryTooLongError(ValueError):
    """A query does not fit the fixed query length with its buffer tokens."""


class EmptyDocumentError(ValueError):
    """A document has no frames and no text in any modality."""


@dataclasses.dataclass(frozen=True)
class InputConfig:
    query_len: int = 64
    num_buffer_tokens: int = 10
    num_visual_tokens: int = 16  # frames x patches per frame
    budgets: tuple[tuple[str, int], ...] = (("ocr", 512), ("asr", 512), ("description", 512))
    max_doc_len: int = 2048


@dataclasses.dataclass
class DocBatch:
    """Token ids, attention mask and modality ids, [n, L] (joint) or [n, 4, L] (separate)."""

    ids: np.ndarray
    mask: np.ndarray
    modality: np.ndarray


class ClamrInputs:
    """Turns query / document text into fixed-shape id arrays with a `tokenizers.Tokenizer`."""

    def __init__(self, tokenizer, config: InputConfig):
        self.tokenizer = tokenizer
        self.config = config
        tokenizer.no_truncation()
        tokenizer.no_padding()
        vocab = tokenizer.get_vocab()
        for name in ("[CLS]", "[SEP]", "[MASK]", "[PAD]"):
            if name not in vocab:
                raise ValueError(f"tokenizer has no {name} token (CLaMR inputs need a BERT vocab)")
        self.cls, self.sep, self.mask_id, self.pad = (
            vocab[n] for n in ("[CLS]", "[SEP]", "[MASK]", "[PAD]")
        )
        self.vis = vocab.get("[unused0]", vocab.get("[UNK]", self.pad))
        budgets = dict(config.budgets)
        unknown = set(budgets) - {name for name, _, _ in TEXT_MODALITIES}
        if unknown:
            raise ValueError(f"budgets name unknown modalities {sorted(unknown)}")
        self.budgets = {name: int(budgets.get(name, 0)) for name, _, _ in TEXT_MODALITIES}
        self.labels = {name: self._encode(label) for name, _, label in TEXT_MODALITIES}
        self.doc_len = (
            2
            + config.num_visual_tokens
            + sum(len(self.labels[n]) + b for n, b in self.budgets.items() if b > 0)
        )
        if self.doc_len > config.max_doc_len:
            raise ValueError(
                f"document length {self.doc_len} (frames {config.num_visual_tokens} + text "
                f"budgets {self.budgets}) exceeds max_doc_len {config.max_doc_len}"
            )
        self.pass_len = 2 + max(
            [config.num_visual_tokens]
            + [len(self.labels[n]) + b for n, b in self.budgets.items() if b > 0]
        )

    def _encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False).ids) if text else []

    # ------------------------------------------------------------------ queries
    def queries(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """ids, mask [n, query_len] int32; mask covers [CLS], text, buffer and [SEP]."""
        c = self.config
        ids = np.full((len(texts), c.query_len), self.pad, np.int32)
        mask = np.zeros((len(texts), c.query_len), np.int32)
        for i, text in enumerate(texts):
            body = self._encode("Query: " + text)
            seq = [self.cls, *body, *[self.mask_id] * c.num_buffer_tokens, self.sep]
            if len(seq) > c.query_len:
                raise QueryTooLongError(
                    f"query {i} ({text[:60]!r}) needs {len(seq)} tokens with its "
                    f"{c.num_buffer_tokens} buffer tokens; query_len is {c.query_len}"
                )
            ids[i, : len(seq)] = seq
            mask[i, : len(seq)] = 1
        return ids, mask

    # ---------------------------------------------------------------- documents
    def _segments(self, texts: Mapping[str, str], has_frames: bool, where: str):
        """[(ids, modality ids)] per modality in order video, ocr, asr, description."""
        n_vis = self.config.num_visual_tokens if has_frames else 0
        segs = [([self.vis] * n_vis, [VIDEO] * n_vis)]
        for name, mid, _ in TEXT_MODALITIES:
            budget = self.budgets[name]
            content = self._encode(texts.get(name, "").strip())[:budget] if budget else []
            label = self.labels[name] if budget else []
            segs.append(([*label, *content], [0] * len(label) + [mid] * len(content)))
        if not any(m for _, mods in segs for m in mods):
            raise EmptyDocumentError(f"{where}: no frames and no text in any modality")
        return segs

    def documents(
        self,
        docs: Sequence[Mapping[str, str]],
        has_frames: Sequence[bool] | None = None,
        *,
        separate: bool = False,
        names: Sequence[str] | None = None,
    ) -> DocBatch:
        """`docs`: per video {"ocr", "asr", "description"} text; frames are spliced in later."""
        has_frames = [True] * len(docs) if has_frames is None else list(has_frames)
        n = len(docs)
        shape = (n, NUM_MODALITIES, self.pass_len) if separate else (n, self.doc_len)
        ids = np.full(shape, self.pad, np.int32)
        mask = np.zeros(shape, np.int32)
        modality = np.zeros(shape, np.int32)
        for i, (texts, frames) in enumerate(zip(docs, has_frames, strict=True)):
            where = f"document {names[i] if names else i}"
            segs = self._segments(texts, frames, where)
            if separate:
                for k, (s_ids, s_mod) in enumerate(segs):
                    if not any(s_mod):
                        continue  # an empty modality is an empty (all-padding) pass
                    seq = [self.cls, *s_ids, self.sep]
                    ids[i, k, : len(seq)] = seq
                    mask[i, k, : len(seq)] = 1
                    modality[i, k, 1 : 1 + len(s_mod)] = s_mod
            else:
                seq_ids = [self.cls] + [t for s, _ in segs for t in s] + [self.sep]
                seq_mod = [0] + [m for _, mods in segs for m in mods] + [0]
                ids[i, : len(seq_ids)] = seq_ids
                mask[i, : len(seq_ids)] = 1
                modality[i, : len(seq_mod)] = seq_mod
        return DocBatch(ids, mask, modality)
