"""Reading table state: which snapshot a run wrote, its counts and schema."""

from __future__ import annotations

import dataclasses

from pyiceberg.catalog import Catalog
from pyiceberg.schema import Schema
from pyiceberg.table import Table

from ratatouille_assets.lakehouse.write import PARTITION_PROPERTY, ROWS_PROPERTY, RUN_ID_PROPERTY, WINDOW_PROPERTY


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
