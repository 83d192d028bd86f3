"""Iceberg snapshot state -> Dagster materialization metadata (what the UI shows and plots)."""

from __future__ import annotations

import dagster as dg
from pyiceberg.schema import Schema

from ratatouille_assets.lakehouse.dbt_plugin import REJECTED_REASON_PREFIX, REJECTED_ROWS_PROPERTY
from ratatouille_assets.lakehouse.tables import SnapshotInfo
from ratatouille_assets.lakehouse.write import BRANCH_PROPERTY


def column_schema(schema: Schema) -> dg.TableSchema:
    return dg.TableSchema(
        columns=[dg.TableColumn(name=f.name, type=str(f.field_type), description=f.doc) for f in schema.fields]
    )


def snapshot_metadata(info: SnapshotInfo) -> dict[str, dg.MetadataValue | dg.TableSchema | int | str]:
    metadata: dict = {
        "dagster/row_count": dg.MetadataValue.int(info.rows_written if info.rows_written is not None else info.total_rows),
        "dagster/column_schema": column_schema(info.schema),
        "dagster/table_name": info.table,
        "iceberg/snapshot_id": dg.MetadataValue.text(str(info.snapshot_id)),
        "iceberg/metadata_location": dg.MetadataValue.path(info.metadata_location),
        "iceberg/total_records": dg.MetadataValue.int(info.total_rows),
    }
    if info.window:
        metadata["iceberg/window"] = dg.MetadataValue.text(info.window)
    if BRANCH_PROPERTY in info.properties:  # dev mode: the branch the run wrote, not main
        metadata["iceberg/branch"] = dg.MetadataValue.text(info.properties[BRANCH_PROPERTY])
    for key, value in info.properties.items():
        if key.startswith(REJECTED_REASON_PREFIX):
            metadata["rejected/" + key.removeprefix(REJECTED_REASON_PREFIX)] = dg.MetadataValue.int(int(value))
        elif key == REJECTED_ROWS_PROPERTY:
            metadata["rejected_rows"] = dg.MetadataValue.int(int(value))
    return metadata


def partition_metadata(rows: int, rejected: int | None = None, **extra: int) -> dict[str, dg.MetadataValue]:
    """One partition's own figures, for its materialization (also in runs over many days)."""
    metadata = {"dagster/row_count": dg.MetadataValue.int(rows)}
    if rejected is not None:
        metadata["rejected_rows"] = dg.MetadataValue.int(rejected)
    metadata.update({name: dg.MetadataValue.int(value) for name, value in extra.items()})
    return metadata
