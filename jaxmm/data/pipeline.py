"""Grain pipelines: MapDataset -> shard by process -> shuffle -> repeat -> batch -> iterator.

Everything is a deterministic function of (seed, index), so the iterator state that the
trainer stores in each checkpoint resumes the exact same stream of batches.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import grain
import jax
import numpy as np


@dataclasses.dataclass(frozen=True)
class DataShard:
    """Which slice of the data this JAX process reads (grain shards by process)."""

    index: int
    count: int
    per_process_batch: int
    seed: int


def batched(
    source: grain.MapDataset | Any,
    shard: DataShard,
    *,
    shuffle: bool = True,
    drop_remainder: bool = True,
    num_epochs: int | None = None,
    read_options: grain.ReadOptions | None = None,
) -> grain.IterDataset:
    """Standard training pipeline over a MapDataset (or any random-access source).

    Each process reads a disjoint slice (`index::count`), shuffles it with a seed that
    changes every epoch, repeats (forever by default) and batches `per_process_batch` records.
    Batches are made ahead by one thread per core (at most 16), a few batches per thread:
    grain's default (16 threads, 500 batches ahead) keeps a 2-core machine busy making
    batches the run never reads, competing with the train step.
    """
    ds = source if isinstance(source, grain.MapDataset) else grain.MapDataset.source(source)
    if len(ds) < shard.count:
        raise ValueError(f"dataset has {len(ds)} records, fewer than {shard.count} processes")
    ds = ds[shard.index :: shard.count]
    if shuffle:
        ds = ds.shuffle(seed=shard.seed)
    ds = ds.repeat(num_epochs)
    ds = ds.batch(shard.per_process_batch, drop_remainder=drop_remainder, batch_fn=stack)
    if read_options is None:
        threads = min(16, os.cpu_count() or 1)
        read_options = grain.ReadOptions(num_threads=threads, prefetch_buffer_size=2 * threads)
    return ds.to_iter_dataset(read_options)


def stack(records: list[Any]) -> Any:
    """Stacks a list of dict-of-array records into one dict of arrays (leading dim = batch)."""
    return jax.tree.map(lambda *xs: np.stack(xs), *records)
