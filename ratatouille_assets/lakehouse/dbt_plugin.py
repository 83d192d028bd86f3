"""The dbt-duckdb plugin that makes dbt read and write Iceberg through this package.

- ``configure_connection``: limits and offline extensions on dbt's DuckDB connection, then one
  view per Iceberg table (``<namespace>.<table>`` over ``iceberg_scan``), so ``source('bronze', …)``
  and ``ref(…)`` read Iceberg with partition pruning and nothing is copied.
- ``store``: called by the ``iceberg`` materialization with the model's staging view; streams it
  as Arrow batches into :func:`ratatouille_assets.lakehouse.write.write_window`, then calls the
  optional ``audit`` hook (``module:function`` in the plugin config) on the snapshot just written.
  A hook that raises fails the model, so dbt skips everything downstream of it. The storage layer
  knows nothing of the checks: the profile wires the quality package in.
"""

from __future__ import annotations

import datetime as dt
import importlib
import os
import threading
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from dbt.adapters.duckdb.plugins import BasePlugin
from dbt.adapters.duckdb.utils import TargetConfig
from duckdb import DuckDBPyConnection

from ratatouille_assets.lakehouse import duck, trace
from ratatouille_assets.lakehouse.catalog import load_catalog
from ratatouille_assets.lakehouse.write import CHUNK_ROWS, RetryPolicy, Window, write_window
from ratatouille_assets.settings import get_settings

REJECT_COLUMN = "_reject_reason"
REJECTED_SUFFIX = "__rejected"
REJECTED_ROWS_PROPERTY = "ratatouille.rejected-rows"
REJECTED_REASON_PREFIX = "ratatouille.rejected."
AUDIT_DIR_NAME = "ratatouille_audits"


def audit_dir() -> Path:
    """Where audit results of this dbt invocation go: its target path (each invocation has its own)."""
    try:
        from dbt.flags import get_flags

        target = getattr(get_flags(), "TARGET_PATH", None)
    except ImportError:
        target = None
    return Path(target or os.environ.get("DBT_TARGET_PATH") or "target") / AUDIT_DIR_NAME


def _load_hook(spec: str | None):
    if not spec:
        return None
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


class Plugin(BasePlugin):
    def initialize(self, plugin_config: dict[str, Any]) -> None:
        self._catalog = None
        self._conn: DuckDBPyConnection | None = None
        self._lock = threading.Lock()
        self._audit = _load_hook(plugin_config.get("audit"))

    @property
    def catalog(self):
        if self._catalog is None:
            self._catalog = load_catalog()
        return self._catalog

    def configure_connection(self, conn: DuckDBPyConnection) -> None:
        with trace.span("dbt.connect"):
            duck.configure(conn)
            duck.register_iceberg_views(conn, self.catalog)
        self._conn = conn

    def store(self, target_config: TargetConfig) -> None:
        options = target_config.config
        if self._conn is None:
            raise RuntimeError("the ratatouille plugin has no DuckDB connection: configure_connection never ran")
        cursor = self._conn.cursor()
        try:
            namespace, table = options["namespace"], options["table"]
            window = None
            if options.get("partition_by"):
                window = Window(
                    column=options["partition_by"],
                    start=dt.date.fromisoformat(options["min_date"]),
                    end=dt.date.fromisoformat(options["max_date"]),
                )
            common = dict(
                window=window,
                run_id=str(options["run_id"]),
                partition_key=options.get("partition_key") or None,
                retry=RetryPolicy(attempts=get_settings().commit_retries),
            )
            # The model's result streams from DuckDB to Iceberg data files in bounded batches; rows
            # with a reject reason (few, by nature) are kept aside and written after the good ones.
            reader = cursor.execute(f"SELECT * FROM {options['source_relation']}").fetch_record_batch(CHUNK_ROWS)
            stream = _ModelStream(reader)
            with self._lock:
                result = write_window(
                    self.catalog, f"{namespace}.{table}", stream, extra_properties=stream.rejected_properties, **common
                )
            trace.record("dbt.model", stream.seconds, table=f"{namespace}.{table}", rows=stream.rows)
            if stream.has_rejects:
                with self._lock:
                    rejected = write_window(
                        self.catalog, f"{namespace}.{table}{REJECTED_SUFFIX}", stream.rejected(), **common
                    )
                duck.point_view(cursor, namespace, table + REJECTED_SUFFIX, rejected.metadata_location)
            duck.point_view(cursor, namespace, table, result.metadata_location)
            if self._audit is not None:
                self._audit(f"{namespace}.{table}", result.metadata_location, window, audit_dir())
        finally:
            cursor.close()


class _ModelStream:
    """A model's result as Arrow chunks without the reject column; rejected rows kept aside."""

    def __init__(self, reader: pa.RecordBatchReader) -> None:
        self._reader = reader
        self.has_rejects = REJECT_COLUMN in reader.schema.names
        self._rejected: list[pa.Table] = []
        self.rows = 0
        self.seconds = 0.0  # time spent computing (pulling from DuckDB), for the trace

    def __iter__(self):
        yielded = False
        while True:
            started = time.perf_counter()
            try:
                batch = self._reader.read_next_batch()
            except StopIteration:
                break
            finally:
                self.seconds += time.perf_counter() - started
            chunk = pa.Table.from_batches([batch])
            if self.has_rejects:
                chunk, bad = split_rejected(chunk)
                if bad.num_rows:
                    self._rejected.append(bad)
            self.rows += chunk.num_rows
            yielded = True
            yield chunk
        if not yielded:  # an empty result still carries the schema (creates the table, empties the window)
            empty = self._reader.schema.empty_table()
            yield split_rejected(empty)[0] if self.has_rejects else empty

    def rejected(self) -> pa.Table:
        schema = self._reader.schema
        return pa.concat_tables(self._rejected) if self._rejected else schema.empty_table()

    def rejected_properties(self) -> dict[str, str]:
        return rejected_properties(self.rejected()) if self.has_rejects else {}


def split_rejected(data: pa.Table) -> tuple[pa.Table, pa.Table]:
    """(rows without a reject reason minus that column, rows with one)."""
    reason = data.column(REJECT_COLUMN)
    good = data.filter(pc.is_null(reason)).drop_columns([REJECT_COLUMN])
    bad = data.filter(pc.is_valid(reason))
    return good, bad


def rejected_properties(rejected: pa.Table) -> dict[str, str]:
    """Snapshot-summary properties counting rejected rows, in total and per reason."""
    props = {REJECTED_ROWS_PROPERTY: str(rejected.num_rows)}
    if rejected.num_rows:
        counts = pc.value_counts(rejected.column(REJECT_COLUMN)).to_pylist()
        for item in counts:
            props[REJECTED_REASON_PREFIX + item["values"]] = str(item["counts"])
    return props
