"""ReAgent-V frame selection (ECRS, arXiv 2506.01300): keep the frames that are both relevant
to the question and visually informative, before any model call.

    score_i = minmax(sim_i) * minmax(entropy_i), renormalised by min-max
    round m: keep the frames with score > base * growth**m, rescored over the kept frames only
    stop after `max_rounds`, when nothing passes, or when nothing was dropped
    top up: if fewer than `min_frames` remain, add the best `min_frames` frames by the
            whole-clip product minmax(sim) * minmax(entropy) (so >= min_frames, or all frames)

These are the rules of the authors' released code (ECRS_frame_selection.py), re-derived here:
the scores of each round are min-max normalised over the frames still kept, the comparison is
strict, and the entropy is the mean over R, G, B of the Shannon entropy (bits) of a 256-bin
histogram. Ties in the top-up go to the earlier frame (a stable sort; the released code's
order among ties is unspecified). `similarity=None` selects on entropy alone (score =
minmax(entropy)): the entropy-only ablation, and what a caller without an image-text encoder
gets.
"""

from __future__ import annotations

import dataclasses

import numpy as np

BASE_THRESHOLD = 0.03
GROWTH = 1.01
MAX_ROUNDS = 10
MIN_FRAMES = 32
_EPS = 1e-9


def colour_entropy(frames: np.ndarray) -> np.ndarray:
    """uint8 [F, H, W, 3] -> [F]: mean over channels of the entropy (bits) of a 256-bin
    histogram of that channel's values. A uniform frame scores ~0, noise up to 8."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be [F, H, W, 3], got shape {frames.shape}")
    out = np.zeros(len(frames))
    for i, frame in enumerate(frames):
        total = 0.0
        for c in range(3):
            counts = np.bincount(frame[..., c].ravel().astype(np.int64), minlength=256)[:256]
            p = counts / max(counts.sum(), 1) + _EPS
            total += float(-(p * np.log2(p)).sum())
        out[i] = total / 3.0
    return out


def minmax(x: np.ndarray) -> np.ndarray:
    """(x - min) / (max - min + 1e-9): a constant array maps to zeros."""
    x = np.asarray(x, np.float64)
    return (x - x.min()) / (x.max() - x.min() + _EPS)


def ecrs_scores(entropy: np.ndarray, similarity: np.ndarray | None) -> np.ndarray:
    """minmax(minmax(sim) * minmax(entropy)) (or minmax(entropy) without a similarity)."""
    if similarity is None:
        return minmax(entropy)
    return minmax(minmax(similarity) * minmax(entropy))


@dataclasses.dataclass(frozen=True)
class Selection:
    indices: tuple[int, ...]  # selected frame indices, ascending
    rounds: int  # threshold rounds run
    thresholds: tuple[float, ...]  # the threshold of each round run
    kept_per_round: tuple[int, ...]  # frames passing each round's threshold
    topped_up: int  # frames added by the top-up


def select_frames(
    entropy: np.ndarray,
    similarity: np.ndarray | None = None,
    *,
    base_threshold: float = BASE_THRESHOLD,
    growth: float = GROWTH,
    max_rounds: int = MAX_ROUNDS,
    min_frames: int = MIN_FRAMES,
) -> Selection:
    """ECRS over one clip's per-frame entropies (and image–question similarities)."""
    entropy = np.asarray(entropy, np.float64)
    if entropy.ndim != 1 or not len(entropy):
        raise ValueError(f"entropy must be a non-empty 1-D array, got shape {entropy.shape}")
    if similarity is not None:
        similarity = np.asarray(similarity, np.float64)
        if similarity.shape != entropy.shape:
            raise ValueError(
                f"similarity shape {similarity.shape} != entropy shape {entropy.shape}"
            )
    if min(base_threshold, growth - 1.0, max_rounds, min_frames) < 0:
        raise ValueError("base_threshold, max_rounds, min_frames must be >= 0 and growth >= 1")
    kept = np.arange(len(entropy))
    thresholds, kept_counts = [], []
    for m in range(max_rounds):
        sim = None if similarity is None else similarity[kept]
        scores = ecrs_scores(entropy[kept], sim)
        threshold = base_threshold * growth**m
        thresholds.append(threshold)
        passing = kept[scores > threshold]
        kept_counts.append(len(passing))
        if not len(passing) or len(passing) == len(kept):
            break
        kept = passing
    added = 0
    if len(kept) < min_frames:
        whole = minmax(entropy) if similarity is None else minmax(similarity) * minmax(entropy)
        best = np.argsort(-whole, kind="stable")[:min_frames]
        merged = np.union1d(kept, best)
        added = len(merged) - len(kept)
        kept = merged
    return Selection(
        indices=tuple(int(i) for i in np.sort(kept)),
        rounds=len(thresholds),
        thresholds=tuple(thresholds),
        kept_per_round=tuple(kept_counts),
        topped_up=added,
    )


def cosine_similarity(frame_embeddings: np.ndarray, query_embedding: np.ndarray) -> np.ndarray:
    """[F, D] x [D] -> [F] cosine: the CLIP-style image–question similarity, for any pair of
    encoders that share an embedding space."""
    f = np.asarray(frame_embeddings, np.float64)
    q = np.asarray(query_embedding, np.float64)
    if f.ndim != 2 or q.shape != (f.shape[1],):
        raise ValueError(f"need [F, D] and [D] embeddings, got {f.shape} and {q.shape}")
    f = f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)
    return f @ (q / max(np.linalg.norm(q), 1e-12))
