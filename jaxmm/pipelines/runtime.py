"""The pipeline runtime: map a pipeline over a JSONL file, resumably, repeating no model call.

A pipeline is a function of one input record that calls a `Backend` and returns a dict
(`Pipeline`). `run_pipeline` maps it over an input JSONL with a concurrency limit and writes
one output line per record, keyed by the record's id, in input order (completed results wait in
a reorder buffer), appended and fsync'ed line by line. A killed run restarted with the same
command skips the ids already written and produces the same file as an uninterrupted run. Every
model call goes through the on-disk call cache (`CachedBackend`), so calls that finished before
a kill (or in an earlier run) are never repeated. Input records are all checked before the
first call: a bad one is reported with its `file:line` and field in `<out>.errors.jsonl` and in
the report, never silently dropped. `<out>.manifest.json` records what produced the file, and
`<out>.metrics.json` the pipeline's metrics over every record in the file (`Pipeline.metrics`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from importlib import metadata
from typing import Any

from tqdm.auto import tqdm

from jaxmm.generate.backends import Backend
from jaxmm.generate.call_cache import CachedBackend
from jaxmm.generate.params import GenerationParams
from jaxmm.io.jsonl import JsonlWriter, parse_record, read_jsonl, write_jsonl

Record = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Pipeline:
    """One system's per-record function and what its input records must carry.

    `run(record, backend, params)` returns the output fields for that record (JSON-able).
    `version` names the prompt/program version; it is written into the run manifest, so a
    changed prompt is visible next to the outputs it produced.
    """

    name: str
    version: str
    run: Callable[[Record, Backend, GenerationParams], Mapping[str, Any]]
    required_fields: tuple[str, ...] = ()
    validate: Callable[[Record], None] | None = None  # raise ValueError naming the bad field
    id_field: str = "id"
    # (input records, their output records, same order) -> scalar metrics of the whole run
    metrics: Callable[[Sequence[Record], Sequence[Record]], Mapping[str, float]] | None = None


@dataclasses.dataclass
class RunReport:
    """What one `run_pipeline` call did."""

    out_path: str
    total: int  # valid input records (after --limit)
    done_before: int  # already in the output file when this run started
    written: int  # written by this run
    bad_records: list[dict[str, Any]]  # {"where": "file:line", "error": ...}
    calls: int  # model calls that reached the backend
    cache_hits: int
    seconds: float
    metrics: dict[str, float] = dataclasses.field(default_factory=dict)


def read_input(
    path: str | os.PathLike, pipeline: Pipeline, limit: int | None = None
) -> tuple[list[Record], list[dict[str, Any]]]:
    """(valid records in file order, bad ones as {"where", "error"}); ids must be unique."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"pipeline input {path!r} does not exist")
    good: list[Record] = []
    bad: list[dict[str, Any]] = []
    seen: dict[str, str] = {}
    required = (pipeline.id_field, *pipeline.required_fields)
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                record = parse_record(line, where, required_keys=required)
                rid = record[pipeline.id_field]
                if not isinstance(rid, str | int) or isinstance(rid, bool):
                    raise ValueError(
                        f"{where}: field {pipeline.id_field!r} must be a string or int"
                    )
                if str(rid) in seen:
                    first = seen[str(rid)]
                    raise ValueError(
                        f"{where}: duplicate {pipeline.id_field} {rid!r} (first: {first})"
                    )
                if pipeline.validate is not None:
                    try:
                        pipeline.validate(record)
                    except ValueError as e:
                        raise ValueError(f"{where}: {e}") from None
            except ValueError as e:
                bad.append({"where": where, "error": str(e)})
                continue
            seen[str(rid)] = where
            good.append(record)
    return (good[:limit] if limit is not None else good), bad


def _finished_ids(out_path: str, id_field: str) -> list[str]:
    """Ids already in the output; a torn last line (a kill mid-write) is cut off first."""
    if not os.path.exists(out_path):
        return []
    with open(out_path, "rb+") as f:
        data = f.read()
        end = data.rfind(b"\n") + 1
        if end != len(data):
            f.truncate(end)
    ids = []
    for lineno, line in enumerate(data[:end].decode("utf-8").splitlines(), start=1):
        if line.strip():
            ids.append(
                str(parse_record(line, f"{out_path}:{lineno}", required_keys=[id_field])[id_field])
            )
    return ids


def _version() -> str:
    try:
        return metadata.version("jaxmm")
    except metadata.PackageNotFoundError:
        return "unknown"


def run_pipeline(
    pipeline: Pipeline,
    input_path: str | os.PathLike,
    out_path: str | os.PathLike,
    backend: Backend,
    *,
    params: GenerationParams = GenerationParams(),
    cache_dir: str | os.PathLike | None = None,
    concurrency: int = 4,
    limit: int | None = None,
    progress: bool = True,
) -> RunReport:
    """Runs `pipeline` over every valid record of `input_path` not yet in `out_path`.

    `cache_dir` (default `<out_path>.cache/`) holds the call cache; pass the same folder to
    share it between runs or pipelines.
    """
    t0 = time.perf_counter()
    out_path = os.fspath(out_path)
    if concurrency < 1:
        raise ValueError(f"concurrency must be >= 1, got {concurrency}")
    records, bad = read_input(input_path, pipeline, limit)
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    write_jsonl(out_path + ".errors.jsonl", bad)  # rewritten each run: the current input's
    done = set(_finished_ids(out_path, pipeline.id_field))
    todo = [r for r in records if str(r[pipeline.id_field]) not in done]
    cached = CachedBackend(backend, cache_dir or out_path + ".cache")
    manifest = {
        "pipeline": pipeline.name,
        "pipeline_version": pipeline.version,
        "backend": backend.name,
        "model": backend.model,
        "params": params.to_dict(),
        "jaxmm_version": _version(),
        "input": os.path.abspath(os.fspath(input_path)),
        "records": len(records),
        "bad_records": len(bad),
    }
    _write_manifest(out_path, manifest | {"status": "running"})
    written = _map_in_order(pipeline, todo, cached, params, out_path, concurrency, progress)
    metrics = {}
    if pipeline.metrics is not None:
        outputs = {str(r[pipeline.id_field]): r for r in read_jsonl(out_path)}
        inputs = [r for r in records if str(r[pipeline.id_field]) in outputs]
        done_outputs = [outputs[str(r[pipeline.id_field])] for r in inputs]
        metrics = {k: float(v) for k, v in pipeline.metrics(inputs, done_outputs).items()}
        with open(out_path + ".metrics.json", "w") as f:
            json.dump(metrics, f, indent=2, sort_keys=True)
    report = RunReport(
        out_path=out_path,
        total=len(records),
        done_before=len(records) - len(todo),
        written=written,
        bad_records=bad,
        calls=cached.misses,
        cache_hits=cached.hits,
        seconds=time.perf_counter() - t0,
        metrics=metrics,
    )
    summary = {k: v for k, v in dataclasses.asdict(report).items() if k != "bad_records"}
    _write_manifest(out_path, manifest | {"status": "finished", **summary})
    return report


def _map_in_order(
    pipeline: Pipeline,
    todo: Sequence[Record],
    backend: CachedBackend,
    params: GenerationParams,
    out_path: str,
    concurrency: int,
    progress: bool,
) -> int:
    """Runs records `concurrency` at a time; writes each result as soon as every earlier
    record's result is written (input order), so the file is the same however calls interleave."""
    bar = None
    if progress and todo:
        bar = tqdm(total=len(todo), desc=pipeline.name, unit="rec", dynamic_ncols=True)
    t0 = time.perf_counter()
    pending: dict[int, Future] = {}
    ready: dict[int, Record] = {}
    next_to_write = 0
    with JsonlWriter(out_path, fsync=True) as out, ThreadPoolExecutor(concurrency) as pool:
        submitted = 0
        while next_to_write < len(todo):
            while submitted < len(todo) and len(pending) + len(ready) < 2 * concurrency:
                rec = todo[submitted]
                pending[submitted] = pool.submit(pipeline.run, rec, backend, params)
                submitted += 1
            finished, _ = wait(pending.values(), return_when=FIRST_COMPLETED)
            for i, fut in list(pending.items()):
                if fut in finished:
                    rid = todo[i][pipeline.id_field]
                    try:
                        ready[i] = {pipeline.id_field: rid, **fut.result()}
                    except Exception as e:  # the earlier records are written; rerun resumes
                        raise RuntimeError(f"{pipeline.name}: record {rid!r} failed: {e}") from e
                    del pending[i]
            while next_to_write in ready:
                out.write(ready.pop(next_to_write))
                next_to_write += 1
                if bar is not None:
                    rate = backend.misses / max(time.perf_counter() - t0, 1e-9)
                    bar.set_postfix(calls_per_s=f"{rate:.2f}", cache_hits=backend.hits)
                    bar.update(1)
    if bar is not None:
        bar.close()
    return next_to_write


def _write_manifest(out_path: str, manifest: dict[str, Any]) -> None:
    tmp = f"{out_path}.manifest.json.tmp"
    with open(tmp, "w") as f:
        json.dump(manifest, f, indent=2, sort_keys=True)
    os.replace(tmp, out_path + ".manifest.json")
