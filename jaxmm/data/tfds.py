"""`tensorflow-datasets` as a grain source for datasets a user has prepared (no TensorFlow).

`tfds.data_source` gives random access to prepared ArrayRecord files, which grain can shard
and shuffle like any other source.
"""

from __future__ import annotations

from typing import Any


def tfds_source(
    name: str, split: str, *, data_dir: str | None = None, decoders: Any | None = None
) -> Any:
    """Random-access source for `name`/`split` (the dataset must already be prepared)."""
    try:
        import tensorflow_datasets as tfds
    except ImportError as e:
        raise ImportError("tfds sources need the [tfds] extra: pip install 'jaxmm[tfds]'") from e
    try:
        return tfds.data_source(name, split=split, data_dir=data_dir, decoders=decoders)
    except Exception as e:  # tfds raises several types for an unprepared dataset
        raise FileNotFoundError(
            f"tfds dataset {name!r} split {split!r} is not prepared"
            f"{' in ' + data_dir if data_dir else ''}: {type(e).__name__}: {e}"
        ) from e
