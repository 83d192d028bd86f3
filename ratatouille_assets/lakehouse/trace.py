"""Opt-in timing spans, for benchmarks and profiling: ``RATATOUILLE_TRACE_FILE=<path>``.

When the variable is set, each :func:`span` appends one JSON line ``{"span", "seconds", ...}`` to
that file. Every process of a run (the Dagster run worker, the dbt subprocess) writes to the same
file, so a benchmark can split a run's wall time into Iceberg commits, file reads, quality scans
and the rest. Unset (the default), a span costs one environment lookup.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator

TRACE_ENV = "RATATOUILLE_TRACE_FILE"


@contextlib.contextmanager
def span(name: str, **fields: object) -> Iterator[dict]:
    """Time the block; ``fields`` (and whatever the block adds to the yielded dict) go with it."""
    path = os.environ.get(TRACE_ENV)
    extra: dict = dict(fields)
    start = time.perf_counter()
    try:
        yield extra
    finally:
        if path:
            # A span that consumes a stream excludes the time spent producing it (``input_seconds``):
            # that time belongs to the producer's own span.
            record(name, time.perf_counter() - start - extra.pop("input_seconds", 0.0), **extra)


def record(name: str, seconds: float, **fields: object) -> None:
    """Record a span measured by the caller (e.g. time spent producing a stream, in pieces)."""
    path = os.environ.get(TRACE_ENV)
    if path:
        line = {"span": name, "seconds": round(seconds, 6), "pid": os.getpid(), **fields}
        # One short write with O_APPEND: lines from concurrent processes do not interleave.
        with open(path, "a", encoding="utf-8") as out:
            out.write(json.dumps(line, default=str) + "\n")


def read(path: str) -> list[dict]:
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
