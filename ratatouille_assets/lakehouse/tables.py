"""Reading table state: which snapshot a run wrote, its counts (per day) and schema."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.catalog import Catalog
from pyiceberg.expressions import IsNull
from pyiceberg.schema import Schema
from pyiceberg.table import Table

from ratatouille_assets.lakehouse.write import (
    PARTITION_PROPERTY,
    ROWS_PROPERTY,
    RUN_ID_PROPERTY,
    WINDOW_PROPERTY,
    Window,
    granularity_of,
)


@dataclasses.dataclass(frozen=True)
class SnapshotInfo:
    table: str
    snapshot_id: int | None
    metadata_location: str
    rows_written: int | None
    total_rows: int
    window: str | None
    partition: str | None
    schema: Schema
    properties: dict[str, str]


def _snapshot_of_run(table: Table, run_id: str | None):
    """The newest snapshot whose summary carries ``run_id`` (else the current one)."""
    if run_id:
        for snapshot in sorted(table.snapshots(), key=lambda s: s.sequence_number, reverse=True):
            if snapshot.summary and snapshot.summary.additional_properties.get(RUN_ID_PROPERTY) == run_id:
                return snapshot
    return table.current_snapshot()


def describe(catalog: Catalog, identifier: str, run_id: str | None = None) -> SnapshotInfo:
    """State of ``identifier`` as written by ``run_id`` (or as it is now)."""
    table = catalog.load_table(identifier)
    snapshot = _snapshot_of_run(table, run_id)
    props = dict(snapshot.summary.additional_properties) if snapshot and snapshot.summary else {}
    rows = props.get(ROWS_PROPERTY)
    return SnapshotInfo(
        table=identifier,
        snapshot_id=snapshot.snapshot_id if snapshot else None,
        metadata_location=table.metadata_location,
        rows_written=int(rows) if rows is not None else None,
        total_rows=int(props.get("total-records", 0)),
        window=props.get(WINDOW_PROPERTY),
        partition=props.get(PARTITION_PROPERTY),
        schema=table.schema(),
        properties=props,
    )


def list_tables(catalog: Catalog) -> list[str]:
    return sorted(f"{ns[0]}.{t[-1]}" for ns in catalog.list_namespaces() for t in catalog.list_tables(ns[0]))


def day_counts(table: Table, window: Window, snapshot_id: int | None = None) -> dict[dt.date, int]:
    """Rows per day of ``window`` in ``table`` at ``snapshot_id`` (default: current), zeros included.

    Read from the manifests (each data file's record count per partition), not the data, when the
    table is partitioned by day; a month- or year-partitioned table is scanned for the window's
    values of the partition column (one column, the window's files only). Rows with a NULL
    partition value are counted by their ``window.nulls_by`` day (a scan of those rows only).
    """
    counts = {day: 0 for day in window.days()}
    snapshot = table.snapshot_by_id(snapshot_id) if snapshot_id is not None else table.current_snapshot()
    if snapshot is None:
        return counts
    field = _partition_field(table, window.column)
    if field is None:
        raise ValueError(f"{table.name()}: not partitioned on '{window.column}'")
    if granularity_of(table, window.column) != "day":
        return _scanned_day_counts(table, window, snapshot.snapshot_id, counts)
    partitions = table.inspect.partitions(snapshot_id=snapshot.snapshot_id)
    if "partition" not in partitions.column_names:  # a snapshot with no data files
        return counts
    nulls = 0
    for row in partitions.select(["partition", "record_count"]).to_pylist():
        value = row["partition"][field]
        if value is None:
            nulls += row["record_count"]
        elif value in counts:
            counts[value] += row["record_count"]
    if nulls and window.nulls_by:
        filed = table.scan(
            row_filter=IsNull(window.column), selected_fields=(window.nulls_by,), snapshot_id=snapshot.snapshot_id
        ).to_arrow()
        for value in filed.column(window.nulls_by).to_pylist():
            if value in counts:
                counts[value] += 1
    return counts


def _scanned_day_counts(table: Table, window: Window, snapshot_id: int, counts: dict[dt.date, int]) -> dict[dt.date, int]:
    if window.nulls_by is None:
        data = table.scan(
            row_filter=window.to_filter(table.schema()), selected_fields=(window.column,), snapshot_id=snapshot_id
        ).to_arrow()
    else:
        # pyiceberg 0.12's residual evaluator compares a NULL month/year partition value with the
        # window's bounds and raises; such tables (rejected rows) are small: read both columns whole.
        data = table.scan(selected_fields=(window.column, window.nulls_by), snapshot_id=snapshot_id).to_arrow()
    days = data.column(window.column)
    if pa.types.is_timestamp(days.type):
        days = pc.cast(days, pa.date32())
    if window.nulls_by is not None:
        days = pc.coalesce(days, data.column(window.nulls_by))
    for item in pc.value_counts(days).to_pylist():
        if item["values"] in counts:
            counts[item["values"]] += item["counts"]
    return counts


def _partition_field(table: Table, column: str) -> str | None:
    source_id = table.schema().find_field(column).field_id
    for field in table.spec().fields:
        if field.source_id == source_id:
            return field.name
    return None
