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

The special tokens around the text are a `TokenLayout`: `bert_layout` (above) or
`qwen_layout`, the Qwen2.5-VL layout on the checkpoint's own tokenizer (no [CLS]/[SEP]):

    query:    "Query: " q  <|endoftext|>*n_buffer  <|endoftext|>(pad)…
    document: <|vision_start|> <|video_pad|>*n_vis <|vision_end|> " OCR:" " "ocr… " ASR:" …
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

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
class TokenLayout:
    """Special token ids around queries, documents and the frame run; field labels.

    `text_prefix` goes before each field's text (" " for byte-level BPE, so the first word is
    tokenized as it is mid-sentence)."""

    pad: int
    buffer: int  # query buffer token (ColBERT / ColPali query augmentation)
    visual: int  # frame placeholder (the backbone overwrites these positions)
    query_open: tuple[int, ...] = ()
    query_close: tuple[int, ...] = ()
    doc_open: tuple[int, ...] = ()
    doc_close: tuple[int, ...] = ()
    visual_open: tuple[int, ...] = ()
    visual_close: tuple[int, ...] = ()
    labels: tuple[str, str, str] = ("OCR:", "ASR:", "Description:")
    text_prefix: str = ""


def _vocab_ids(tokenizer, names: Sequence[str], what: str) -> list[int]:
    vocab = tokenizer.get_vocab(with_added_tokens=True)
    missing = [n for n in names if n not in vocab]
    if missing:
        raise ValueError(f"tokenizer has no {missing} token(s) ({what})")
    return [vocab[n] for n in names]


def bert_layout(tokenizer) -> TokenLayout:
    """`[CLS] … [SEP]`, `[MASK]` buffer tokens, `[unused0]` (else `[UNK]`) frame slots."""
    cls, sep, mask, pad = _vocab_ids(
        tokenizer, ("[CLS]", "[SEP]", "[MASK]", "[PAD]"), "CLaMR inputs need a BERT vocab"
    )
    vocab = tokenizer.get_vocab()
    vis = vocab.get("[unused0]", vocab.get("[UNK]", pad))
    return TokenLayout(
        pad=pad,
        buffer=mask,
        visual=vis,
        query_open=(cls,),
        query_close=(sep,),
        doc_open=(cls,),
        doc_close=(sep,),
    )


QWEN_TOKENS = ("<|endoftext|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>")


def qwen_layout(tokenizer, expect: Mapping[str, int] | None = None) -> TokenLayout:
    """Qwen2.5-VL: `<|endoftext|>` pads and buffers (as ColQwen2.5), the video run inside
    `<|vision_start|>` … `<|vision_end|>`, labels " OCR:" / " ASR:" / " Description:".

    `expect`: token name -> id from the model's config.json (e.g. `video_token_id`); a
    tokenizer that disagrees belongs to another checkpoint and is refused."""
    pad, video, start, end = _vocab_ids(tokenizer, QWEN_TOKENS, "need a Qwen2.5-VL tokenizer")
    got = dict(zip(QWEN_TOKENS, (pad, video, start, end), strict=True))
    for name, want in (expect or {}).items():
        if got[name] != want:
            raise ValueError(
                f"tokenizer: {name} is id {got[name]}, the model config says {want} "
                "(tokenizer.json and config.json are from different checkpoints)"
            )
    return TokenLayout(
        pad=pad,
        buffer=pad,
        visual=video,
        visual_open=(start,),
        visual_close=(end,),
        labels=(" OCR:", " ASR:", " Description:"),
        text_prefix=" ",
    )


def model_folder(model_dir: str | os.PathLike) -> Path:
    """A HF folder, given as the folder or as its config.json."""
    folder = Path(model_dir)
    return folder.parent if folder.suffix == ".json" else folder


def load_tokenizer(model_dir: str | os.PathLike):
    """`tokenizers.Tokenizer` from a HF folder's tokenizer.json (`model_dir` may also be the
    folder's config.json)."""
    from tokenizers import Tokenizer

    path = model_folder(model_dir) / "tokenizer.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} missing: the model folder needs its tokenizer.json")
    return Tokenizer.from_file(str(path))


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

    def __init__(self, tokenizer, config: InputConfig, layout: TokenLayout | None = None):
        self.tokenizer = tokenizer
        self.config = config
        tokenizer.no_truncation()
        tokenizer.no_padding()
        self.layout = lay = layout or bert_layout(tokenizer)
        self.pad, self.vis = lay.pad, lay.visual
        budgets = dict(config.budgets)
        unknown = set(budgets) - {name for name, _, _ in TEXT_MODALITIES}
        if unknown:
            raise ValueError(f"budgets name unknown modalities {sorted(unknown)}")
        self.budgets = {name: int(budgets.get(name, 0)) for name, _, _ in TEXT_MODALITIES}
        self.labels = {
            name: self._encode(label)
            for (name, _, _), label in zip(TEXT_MODALITIES, lay.labels, strict=True)
        }
        ends = len(lay.doc_open) + len(lay.doc_close)
        n_video = len(lay.visual_open) + config.num_visual_tokens + len(lay.visual_close)
        texts = [len(self.labels[n]) + b for n, b in self.budgets.items() if b > 0]
        self.doc_len = ends + n_video + sum(texts)
        if self.doc_len > config.max_doc_len:
            raise ValueError(
                f"document length {self.doc_len} (frames {config.num_visual_tokens} + text "
                f"budgets {self.budgets}) exceeds max_doc_len {config.max_doc_len}"
            )
        self.pass_len = ends + max([n_video, *texts])

    def _encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False).ids) if text else []

    # ------------------------------------------------------------------ queries
    def queries(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """ids, mask [n, query_len] int32; mask covers the specials, text and buffer tokens."""
        c, lay = self.config, self.layout
        ids = np.full((len(texts), c.query_len), self.pad, np.int32)
        mask = np.zeros((len(texts), c.query_len), np.int32)
        for i, text in enumerate(texts):
            body = self._encode("Query: " + text)
            buffer = [lay.buffer] * c.num_buffer_tokens
            seq = [*lay.query_open, *body, *buffer, *lay.query_close]
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
        lay = self.layout
        segs = [([], [])]
        if has_frames:
            n_vis = self.config.num_visual_tokens
            run = [*lay.visual_open, *[lay.visual] * n_vis, *lay.visual_close]
            mods = [0] * len(lay.visual_open) + [VIDEO] * n_vis + [0] * len(lay.visual_close)
            segs = [(run, mods)]
        for name, mid, _ in TEXT_MODALITIES:
            budget = self.budgets[name]
            text = texts.get(name, "").strip()
            content = self._encode(lay.text_prefix + text)[:budget] if budget and text else []
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
        n, lay = len(docs), self.layout
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
                    seq = [*lay.doc_open, *s_ids, *lay.doc_close]
                    ids[i, k, : len(seq)] = seq
                    mask[i, k, : len(seq)] = 1
                    start = len(lay.doc_open)
                    modality[i, k, start : start + len(s_mod)] = s_mod
            else:
                seq_ids = [*lay.doc_open, *(t for s, _ in segs for t in s), *lay.doc_close]
                seq_mod = [0] * len(lay.doc_open) + [m for _, mods in segs for m in mods]
                seq_mod += [0] * len(lay.doc_close)
                ids[i, : len(seq_ids)] = seq_ids
                mask[i, : len(seq_ids)] = 1
                modality[i, : len(seq_mod)] = seq_mod
        return DocBatch(ids, mask, modality)
