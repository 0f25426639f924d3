"""Video-SKoT's skill taxonomy: k-means over skill-phrase embeddings (arXiv 2506.03525).

Phrases are embedded with the sentence encoder (`jaxmm.models.text_encoder`, MiniLM: mean
pooled, L2-normalised) and clustered with scikit-learn's KMeans (k = 10 in the paper, fixed
seed). Each cluster is named by its member nearest the centroid (ties: the first such member),
so a name is always a phrase the model wrote. The same Euclidean rule that k-means assigns
with picks a question's top skills (`nearest`) and routes it to an expert (`route`).
Saved as JSON (`save` / `load`).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.cluster import KMeans


class TaxonomyError(ValueError):
    """Too few distinct phrases for k clusters, or a malformed taxonomy file."""


@dataclasses.dataclass(frozen=True)
class Taxonomy:
    names: list[str]  # cluster c's name: its member phrase nearest the centroid
    centroids: np.ndarray  # [k, dim] float32
    members: list[list[str]]  # ids of the training questions in each cluster
    seed: int

    @property
    def k(self) -> int:
        return len(self.names)

    def nearest(self, embedding: np.ndarray, n: int = 1) -> list[int]:
        """Cluster indices by increasing Euclidean distance to `embedding` [dim]; ties by
        index. The first is the k-means assignment."""
        d = np.linalg.norm(self.centroids - np.asarray(embedding, np.float32)[None], axis=-1)
        return [int(i) for i in np.argsort(d, kind="stable")[:n]]

    def route(self, embedding: np.ndarray) -> int:
        return self.nearest(embedding, 1)[0]

    def to_json(self) -> dict[str, Any]:
        clusters = [
            {"cluster": c, "name": self.names[c], "size": len(self.members[c]),
             "members": self.members[c], "centroid": self.centroids[c].tolist()}
            for c in range(self.k)
        ]  # fmt: skip
        return {"k": self.k, "seed": self.seed, "clusters": clusters}


def distinct_rows(embeddings: np.ndarray) -> int:
    """Distinct embeddings (to 6 decimals): the most clusters k-means can make."""
    return len(np.unique(np.asarray(embeddings, np.float32).round(6), axis=0))


def build_taxonomy(
    ids: Sequence[str],
    phrases: Sequence[str],
    embeddings: np.ndarray,
    k: int = 10,
    seed: int = 0,
) -> Taxonomy:
    """KMeans(k, random_state=seed, n_init=10) over `embeddings` [n, dim] of `phrases`."""
    embeddings = np.asarray(embeddings, np.float32)
    if not len(ids) == len(phrases) == embeddings.shape[0]:
        raise TaxonomyError(
            f"ids ({len(ids)}), phrases ({len(phrases)}) and embeddings "
            f"({embeddings.shape[0]}) must have the same length"
        )
    distinct = distinct_rows(embeddings)
    if k < 1 or distinct < k:
        raise TaxonomyError(f"k={k} clusters need at least {k} distinct phrases, got {distinct}")
    km = KMeans(n_clusters=k, random_state=seed, n_init=10).fit(embeddings)
    centroids = km.cluster_centers_.astype(np.float32)
    labels = km.labels_
    names, members = [], []
    for c in range(k):
        idx = np.flatnonzero(labels == c)
        d = np.linalg.norm(embeddings[idx] - centroids[c][None], axis=-1)
        names.append(phrases[int(idx[int(np.argmin(d))])])
        members.append([ids[int(i)] for i in idx])
    return Taxonomy(names, centroids, members, seed)


def save(taxonomy: Taxonomy, path: str | os.PathLike) -> None:
    """Atomic JSON write (a kill never leaves half a taxonomy)."""
    path = os.fspath(path)
    with open(path + ".tmp", "w") as f:
        json.dump(taxonomy.to_json(), f, indent=1)
    os.replace(path + ".tmp", path)


def load(path: str | os.PathLike) -> Taxonomy:
    with open(path) as f:
        data = json.load(f)
    try:
        clusters = sorted(data["clusters"], key=lambda c: c["cluster"])
        return Taxonomy(
            names=[c["name"] for c in clusters],
            centroids=np.asarray([c["centroid"] for c in clusters], np.float32),
            members=[list(c["members"]) for c in clusters],
            seed=int(data["seed"]),
        )
    except (KeyError, TypeError) as e:
        raise TaxonomyError(f"{path}: not a Video-SKoT taxonomy file (missing {e})") from None
