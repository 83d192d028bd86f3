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
import json
import logging
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

from ratatouille_assets.lakehouse import duck, merge, scd2, trace
from ratatouille_assets.lakehouse.catalog import load_catalog
from ratatouille_assets.lakehouse.errors import IncompatibleSchemaError, LakehouseError, PartitionTypeError
from ratatouille_assets.lakehouse.write import (  # noqa: F401 - REJECTED_SUFFIX, LANDING_DAY_COLUMN: imported from here too
    CHUNK_ROWS,
    HEAD_DEPENDENT_STRATEGIES,
    LANDING_DAY_COLUMN,
    REJECTED_SUFFIX,
    STRATEGY_PROPERTY,
    RetryPolicy,
    Window,
    rebuild_table,
    write_base,
    write_window,
)
from ratatouille_assets.lakehouse.merge import MergeSpec
from ratatouille_assets.lakehouse.scd2 import Scd2Spec
from ratatouille_assets.settings import get_settings

log = logging.getLogger(__name__)

REJECT_COLUMN = "_reject_reason"
REJECTED_ROWS_PROPERTY = "ratatouille.rejected-rows"
REJECTED_REASON_PREFIX = "ratatouille.rejected."
AUDIT_DIR_NAME = "ratatouille_audits"
# A row of a partitioned model whose partition value is NULL belongs to no day: it is rejected with
# this reason and filed under its landing day (LANDING_DAY_COLUMN), never dropped.
NULL_PARTITION_REASON = "missing_partition_value"
# dbt's on_schema_change -> the write path's schema_change ("ignore" is refused when definitions load).
ON_SCHEMA_CHANGE = {"append_new_columns": "append", "sync_all_columns": "sync", "fail": "fail"}


class ModelWriteError(Exception):
    """A model's result cannot be written as it is; the message names the model file and the fix."""


def audit_dir() -> Path:
    """Where audit results of this dbt invocation go: its target path (each invocation has its own)."""
    try:
        from dbt.flags import get_flags

        target = getattr(get_flags(), "TARGET_PATH", None)
    except ImportError:
        target = None
    return Path(target or os.environ.get("DBT_TARGET_PATH") or "target") / AUDIT_DIR_NAME


# dbt var: read every table as of a point in the past (a timestamp, a snapshot id, a branch or tag;
# or a mapping {<layer>.<table>: point}), for `dbt show` / `dbt compile` while debugging a model.
AS_OF_VAR = "ratatouille_as_of"


def as_of_var():
    """The invocation's ``ratatouille_as_of`` var (None when not given)."""
    return _var(AS_OF_VAR)


# dbt var set by the Dagster run (write-audit-publish): every model is written to this audit branch
# (made from the readers' branch) and the run publishes the models whose checks passed, after the
# invocation. A plain `dbt run` has no such var and writes the readers' branch directly.
AUDIT_BRANCH_VAR = "ratatouille_audit_branch"
# The dbt var holding the Dagster root run id (a run and its re-executions share it): an append's key.
ROOT_RUN_VAR = "dagster_root_run_id"
WRITES_DIR_NAME = "ratatouille_writes"


def _var(name: str):
    try:
        from dbt.flags import get_flags

        return (getattr(get_flags(), "VARS", None) or {}).get(name)
    except ImportError:
        return None


def writes_dir() -> Path:
    """Where this invocation records the tables it wrote (beside the audits)."""
    return audit_dir().parent / WRITES_DIR_NAME


def record_write(identifier: str, branch: str, target: str, window: Window | None, snapshot_id: int | None) -> None:
    """One line per table written, in write order (a model is written after the models it reads)."""
    folder = writes_dir()
    folder.mkdir(parents=True, exist_ok=True)
    entry = {
        "table": identifier, "branch": branch, "target": target, "snapshot_id": snapshot_id,
        "window": _window_json(window), "written_ns": time.time_ns(),
    }
    (folder / f"{identifier}.json").write_text(json.dumps(entry))


def _window_json(window: Window | None):
    if window is None:
        return None
    return {"column": window.column, "start": window.start.isoformat(), "end": window.end.isoformat(),
            "nulls_by": window.nulls_by, "only": None if window.only is None else sorted(d.isoformat() for d in window.only)}


def read_writes(target_path: str | Path) -> list[dict]:
    """The tables an invocation wrote, in write order; each entry's ``window`` a :class:`Window` or None."""
    folder = Path(target_path) / WRITES_DIR_NAME
    if not folder.is_dir():
        return []
    entries = [json.loads(p.read_text()) for p in folder.glob("*.json")]
    for entry in entries:
        w = entry["window"]
        only = w.get("only") if w else None
        entry["window"] = None if w is None else Window(
            w["column"], dt.date.fromisoformat(w["start"]), dt.date.fromisoformat(w["end"]), w.get("nulls_by"),
            None if only is None else frozenset(dt.date.fromisoformat(d) for d in only))
    return sorted(entries, key=lambda e: e["written_ns"])


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

    def update_connection_config(self, creds: Any, config: dict[str, Any]) -> None:
        config.update(duck.RUN_CONFIG)  # the invocation's database is the run's own (duck.RUN_CONFIG)

    def configure_connection(self, conn: DuckDBPyConnection) -> None:
        with trace.span("dbt.connect"):
            duck.configure(conn)
            as_of, branch = as_of_var(), get_settings().branch
            if as_of:
                from ratatouille_assets.lakehouse.timetravel import register_views

                register_views(conn, self.catalog, as_of, branch=branch)
            else:
                duck.register_iceberg_views(conn, self.catalog, branch=branch)
        self._conn = conn

    def store(self, target_config: TargetConfig) -> None:
        options = target_config.config
        if self._conn is None:
            raise RuntimeError("the ratatouille plugin has no DuckDB connection: configure_connection never ran")
        model = options.get("model_path") or f"{options['namespace']}.{options['table']}"
        if as_of_var():
            raise ModelWriteError(
                f"{model}: the invocation reads the lakehouse as of {as_of_var()!r} ({AS_OF_VAR}); a model "
                f"built from those inputs is not written over today's table. See its rows with "
                f"`dbt show --select <model> --vars '{{{AS_OF_VAR}: ...}}'`, or query the past with `rat query --as-of`."
            )
        cursor = self._conn.cursor()
        try:
            self._store(cursor, options)
        except (LakehouseError, ModelWriteError) as exc:
            raise ModelWriteError(f"{model}: {exc}{_fix_for(exc, options)}") from exc
        finally:
            cursor.close()

    def _store(self, cursor: DuckDBPyConnection, options: dict[str, Any]) -> None:
        namespace, table = options["namespace"], options["table"]
        identifier = f"{namespace}.{table}"
        partition_by = options.get("partition_by")
        window = rejected_window = None
        if partition_by:
            start, end = dt.date.fromisoformat(options["min_date"]), dt.date.fromisoformat(options["max_date"])
            window = Window(column=partition_by, start=start, end=end)
            rejected_window = Window(column=partition_by, start=start, end=end, nulls_by=LANDING_DAY_COLUMN)
        settings = get_settings()
        full_refresh = bool(options.get("full_refresh"))
        # A full refresh replaces the table in the catalog (no branch to audit on): it is written
        # directly, its checks judge it after, as with write-audit-publish off.
        audit = _var(AUDIT_BRANCH_VAR) if options.get("write_audit_publish", True) is not False and not full_refresh else None
        branch = audit or settings.branch
        common = dict(
            run_id=str(options["run_id"]),
            partition_key=options.get("partition_key") or None,
            retry=RetryPolicy(attempts=settings.commit_retries),
            schema_change=ON_SCHEMA_CHANGE[options.get("on_schema_change") or "append_new_columns"],
            branch=branch,
        )
        if not full_refresh:
            common["fork_from"] = settings.branch
        if partition_by:
            common["granularity"] = options.get("partition_granularity") or "day"
        if options.get("strategy") == "append":
            # The model's rows (and its rejects) are added, nothing replaced; once per Dagster run
            # and its re-executions (the root run id), so a replay adds nothing.
            common["append"] = str(options.get("append_key") or options["run_id"])
        write = rebuild_table if full_refresh else write_window
        if options.get("strategy") in HEAD_DEPENDENT_STRATEGIES and not full_refresh:
            return self._merge(cursor, options, identifier, branch, common)
        # The model's result streams from DuckDB to Iceberg data files in bounded batches; rejected
        # rows (a reject reason, or no partition value: few, by nature) are kept aside and written after.
        # Ordered on the partition column, each batch holds a run of days: a window of years becomes
        # about one data file per partition instead of one per partition and batch.
        # A one-day window needs no order (its rows are one partition) and streams without a sort.
        order = f" ORDER BY {duck.quote_ident(partition_by)} NULLS LAST" if window and window.start != window.end else ""
        started = time.perf_counter()  # DuckDB runs a query's blocking part (joins, sorts, windows) here
        reader = cursor.execute(f"SELECT * FROM {options['source_relation']}{order}").to_arrow_reader(CHUNK_ROWS)
        stream = _ModelStream(reader, partition_by)
        stream.seconds = time.perf_counter() - started
        try:
            with self._lock:
                result = write(self.catalog, identifier, stream, window=window, extra_properties=stream.rejected_properties, **common)
        finally:
            stream.close()  # a failed write left it mid-stream: its read-ahead thread ends before the cursor does
        trace.record("dbt.model", stream.seconds, table=identifier, rows=stream.rows)
        rejected_id = identifier + REJECTED_SUFFIX
        if stream.has_rejects or stream.rejected_rows or self.catalog.table_exists(rejected_id):
            with self._lock:
                rejected = write(self.catalog, rejected_id, stream.rejected(), window=rejected_window, **common)
            duck.point_view(cursor, namespace, table + REJECTED_SUFFIX, rejected.metadata_location, rejected.snapshot_id)
            record_write(rejected_id, branch, settings.branch, rejected_window, rejected.snapshot_id)
        # Later models of this invocation, and the checks, read exactly the snapshot just written
        # (on the audit branch: a model downstream reads what its upstream's checks judge).
        duck.point_view(cursor, namespace, table, result.metadata_location, result.snapshot_id)
        record_write(identifier, branch, settings.branch, window, result.snapshot_id)
        if self._audit is not None:
            self._audit(identifier, result.metadata_location, window, audit_dir(),
                        rows=stream.rows, rejected=stream.rejected_rows, snapshot_id=result.snapshot_id, branch=branch)


    def _merge(self, cursor: DuckDBPyConnection, options: dict[str, Any], identifier: str, branch: str,
               common: dict[str, Any]) -> None:
        """strategy='merge' or 'scd2': the model's result are changes, upserted into the rows the table
        holds (:mod:`~ratatouille_assets.lakehouse.merge`) or added to its history
        (:mod:`~ratatouille_assets.lakehouse.scd2`), committed only onto the head they were merged into.
        Its rejected rows join those already in ``<table>__rejected`` (a row already there is kept once)."""
        namespace, name = options["namespace"], options["table"]
        strategy = options["strategy"]
        staging = options["source_relation"]
        partition_by = options.get("partition_by") if strategy == "merge" else None
        staged = merge.columns(cursor, staging)
        has_rejects = REJECT_COLUMN in staged
        reason = duck.quote_ident(REJECT_COLUMN)
        # A partitioned merge's row without a partition value belongs to no day: rejected, as in a window write.
        if partition_by and partition_by not in staged:
            raise ModelWriteError(f"partition_by '{partition_by}' is not a column of the model's result (columns: {', '.join(staged)})")
        no_day = f"{duck.quote_ident(partition_by)} IS NULL" if partition_by else "false"
        good = f"{reason} IS NULL AND NOT ({no_day})" if has_rejects else f"NOT ({no_day})"
        changes = f"(SELECT *{f' EXCLUDE ({reason})' if has_rejects else ''} FROM {staging} WHERE {good})"
        target, base = self._read_base(cursor, namespace, name, branch, common["fork_from"])
        started = time.perf_counter()
        window = None
        if strategy == "scd2":
            plan = scd2.plan_scd2(cursor, changes, target, Scd2Spec.from_config(options.get("unique_key"), options.get("updated_at")))
        else:
            spec = MergeSpec.from_config(options.get("unique_key"), options.get("merge_update_columns"), options.get("merge_delete_column"))
            table_rows = None
            if partition_by:
                # Only the days the changes touch are read, merged and rewritten.
                days = merge.touched_days(cursor, changes, target, spec, partition_by)
                first = dt.date.fromisoformat(options["min_date"])
                # No change at all: a window of no day (the commit replaces nothing and adds nothing).
                window = Window.of_days(partition_by, days) if days else Window(partition_by, first, first, only=frozenset())
                if target:
                    table_rows = _total_rows(self.catalog.load_table(f"{namespace}.{name}"), base)
                    target = f"(SELECT * FROM {target} WHERE {window.to_sql(duck.quote_ident(partition_by))})"
            plan = merge.plan_merge(cursor, changes, target, spec, table_rows, len(days) if partition_by else None)
        rejected = None
        if has_rejects:
            rejected = cursor.execute(f"SELECT * REPLACE (coalesce({reason}, '{NULL_PARTITION_REASON}') AS {reason}) "
                                      f"FROM {staging} WHERE NOT ({good})").to_arrow_table()
        elif partition_by:
            rejected = cursor.execute(f"SELECT *, '{NULL_PARTITION_REASON}' AS {reason} FROM {staging} WHERE NOT ({good})").to_arrow_table()
        properties = {STRATEGY_PROPERTY: strategy, **plan.properties(),
                      **rejected_properties(rejected if rejected is not None else _EMPTY_REJECTS)}
        stream = None
        try:
            stream = _ModelStream(cursor.execute(f"SELECT * FROM ({plan.sql})").to_arrow_reader(CHUNK_ROWS))
            with self._lock:
                result = write_window(self.catalog, identifier, stream, window=window, extra_properties=properties,
                                      expect_head=base, **common)
        finally:
            if stream is not None:
                stream.close()
            if isinstance(plan, scd2.Scd2Plan):
                plan.drop(cursor)
        trace.record("dbt.model", time.perf_counter() - started, table=identifier, rows=stream.rows)
        log.info("%s: %s: %s", identifier, strategy, ", ".join(f"{v} {k.rsplit('.', 1)[1]}" for k, v in plan.properties().items()))
        rejected_id = identifier + REJECTED_SUFFIX
        # New rejects join the table's (none: it is left as it is, made empty on the first run).
        if rejected is not None and (rejected.num_rows or not self.catalog.table_exists(rejected_id)):
            old, old_base = self._read_base(cursor, namespace, name + REJECTED_SUFFIX, branch, common["fork_from"])
            cursor.register("__rat_new_rejects", rejected)
            union = cursor.execute(
                (f"SELECT * FROM {old} UNION BY NAME " if old else "") + "SELECT DISTINCT * FROM __rat_new_rejects"
            ).to_arrow_table()
            cursor.unregister("__rat_new_rejects")
            with self._lock:
                written = write_window(self.catalog, rejected_id, union, window=None, expect_head=old_base, **common)
            duck.point_view(cursor, namespace, name + REJECTED_SUFFIX, written.metadata_location, written.snapshot_id)
            record_write(rejected_id, branch, get_settings().branch, None, written.snapshot_id)
        duck.point_view(cursor, namespace, name, result.metadata_location, result.snapshot_id)
        record_write(identifier, branch, get_settings().branch, window, result.snapshot_id)
        if self._audit is not None:
            # A partitioned merge's checks judge the days it rewrote.
            self._audit(identifier, result.metadata_location, window, audit_dir(), rows=stream.rows,
                        rejected=0 if rejected is None else rejected.num_rows, snapshot_id=result.snapshot_id, branch=branch)

    def _read_base(self, cursor: DuckDBPyConnection, namespace: str, name: str, branch: str,
                   fork_from: str) -> tuple[str | None, int | None]:
        """The relation of the table as a write to ``branch`` finds it, and that snapshot (None, None:
        no such table or no snapshot yet). The model's view is pointed at it."""
        identifier = f"{namespace}.{name}"
        if not self.catalog.table_exists(identifier):
            return None, None
        table = self.catalog.load_table(identifier)
        base = write_base(table.metadata, branch, fork_from)
        if base is None:
            return None, None
        duck.point_view(cursor, namespace, name, table.metadata_location, base)
        return f"{duck.quote_ident(namespace)}.{duck.quote_ident(name)}", base


def _total_rows(table, snapshot_id: int | None) -> int:
    snapshot = table.snapshot_by_id(snapshot_id) if snapshot_id is not None else None
    return int(snapshot.summary["total-records"]) if snapshot is not None and snapshot.summary else 0


_EMPTY_REJECTS = pa.table({REJECT_COLUMN: pa.array([], pa.string())})


def _fix_for(exc: Exception, options: dict[str, Any]) -> str:
    """What to change, for the errors a model can cause."""
    if isinstance(exc, IncompatibleSchemaError):
        return (" Rebuild the table with the new schema: a full refresh (Dagster: the dbt assets' "
                "full_refresh config; dbt: --full-refresh).")
    if isinstance(exc, PartitionTypeError):
        column = options.get("partition_by")
        return f" Cast it in the model (cast({column} as date) as {column}) or partition on another column."
    return ""


# Batches of a model's result DuckDB computes ahead of the writer (each CHUNK_ROWS rows at most).
STREAM_AHEAD = 1


class _ModelStream:
    """A model's result as Arrow chunks without the reject column; rejected rows kept aside.

    A row is rejected when it has a reject reason, or (for a partitioned model) no partition value:
    such a row belongs to no day, so it is filed in ``<model>__rejected`` under its landing day with
    the reason ``missing_partition_value`` rather than vanishing.
    """

    def __init__(self, reader: pa.RecordBatchReader, partition_by: str | None = None) -> None:
        self._reader = reader
        self._partition_by = partition_by
        self.has_rejects = REJECT_COLUMN in reader.schema.names
        self._rejected: list[pa.Table] = []
        self.rows = 0
        self.rejected_rows = 0
        self.seconds = 0.0  # time spent computing (pulling from DuckDB), for the trace
        self._batches = None  # DuckDB's batches, read ahead in a thread, once streaming
        if partition_by and partition_by not in reader.schema.names:
            raise ModelWriteError(
                f"partition_by '{partition_by}' is not a column of the model's result "
                f"(columns: {', '.join(reader.schema.names)})"
            )

    def close(self) -> None:
        """End the read-ahead of DuckDB's batches (the stream is then over)."""
        if self._batches is not None:
            self._batches.close()

    def __iter__(self):
        yielded = False
        # DuckDB computes the next batch (a thread) while this one is split and handed to the writer.
        batches = self._batches = duck.prefetched(self._reader, STREAM_AHEAD)
        while True:
            started = time.perf_counter()
            try:
                batch = next(batches)
            except StopIteration:
                break
            finally:
                self.seconds += time.perf_counter() - started
            chunk, bad = self._split(pa.Table.from_batches([batch]))
            if bad.num_rows:
                self._rejected.append(bad)
                self.rejected_rows += bad.num_rows
            self.rows += chunk.num_rows
            yielded = True
            yield chunk
        if not yielded:  # an empty result still carries the schema (creates the table, empties the window)
            yield self._split(self._reader.schema.empty_table())[0]

    def _split(self, data: pa.Table) -> tuple[pa.Table, pa.Table]:
        """(the rows kept, without the reject column; the rows rejected, with their reason)."""
        bad = None  # which rows are rejected, where any is
        if self.has_rejects and data.column(REJECT_COLUMN).null_count < data.num_rows:
            bad = pc.is_valid(data.column(REJECT_COLUMN))
        if self._partition_by and data.column(self._partition_by).null_count:
            missing = pc.is_null(data.column(self._partition_by))
            bad = missing if bad is None else pc.or_(bad, missing)
        if not self.has_rejects:
            data = data.append_column(REJECT_COLUMN, pa.nulls(data.num_rows, pa.string()))
        kept = data.drop_columns([REJECT_COLUMN])
        if bad is None:  # most chunks: passed on as they are, not copied by a filter
            return kept, data.schema.empty_table()
        rejected = data.filter(bad)
        if self._partition_by:
            reason = rejected.column(REJECT_COLUMN)
            missing = pc.is_null(rejected.column(self._partition_by))
            reason = pc.if_else(pc.and_(missing, pc.is_null(reason)), NULL_PARTITION_REASON, reason)
            rejected = rejected.set_column(rejected.schema.get_field_index(REJECT_COLUMN), REJECT_COLUMN, reason)
            if pc.any(missing).as_py() and LANDING_DAY_COLUMN not in rejected.column_names:
                count = pc.sum(missing).as_py()
                raise ModelWriteError(
                    f"{count} row(s) have a NULL '{self._partition_by}' (the partition column) and no "
                    f"'{LANDING_DAY_COLUMN}' to file them under in the rejected table. Carry {LANDING_DAY_COLUMN} "
                    f"through the model (select it from the source), or filter or fix those rows"
                )
        return kept.filter(pc.invert(bad)), rejected

    def rejected(self) -> pa.Table:
        if self._rejected:
            return pa.concat_tables(self._rejected)
        schema = self._reader.schema
        if not self.has_rejects:
            schema = schema.append(pa.field(REJECT_COLUMN, pa.string()))
        return schema.empty_table()

    def rejected_properties(self) -> dict[str, str]:
        return rejected_properties(self.rejected())


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
