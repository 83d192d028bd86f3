"""The ``rollback`` job: a table, or some of its days, back to a point in its past, from the UI.

Launchpad config names the table (``silver.orders``), the point (``to``: a snapshot id, a tag, or
a timestamp) and optionally the days. The storage work is ``lakehouse.timetravel.rollback``; this
op only records what it did: a materialization of each rolled-back partition (or of the whole
table), with the snapshots it went from and to and the rows before and after, so the UI's
partitions show the rollback and automation sees upstream changed and recomputes downstream.
``rat rollback`` runs this same job.
"""

# No "from __future__ import annotations": Dagster reads the op's config and resource types from its signature.

import datetime as dt

import dagster as dg
from pydantic import Field

from ratatouille_assets.defs.resources import LakehouseResource
from ratatouille_assets.lakehouse.timetravel import RollbackResult, rollback

JOB_NAME = "rollback"
OPERATION_TAG = "ratatouille/operation"


class RollbackConfig(dg.Config):
    table: str = Field(description="the table: layer.table (or its asset key, layer/table)")
    to: str = Field(description="a snapshot id, a branch or tag, or a timestamp (UTC unless it has an offset)")
    start: str = Field(default="", description="first day to roll back (YYYY-MM-DD); empty: the whole table")
    end: str = Field(default="", description="last day (default: start)")


def table_identifier(text: str) -> str:
    return text.strip().replace("/", ".")


def build_rollback_job(assets: dict[dg.AssetKey, dg.PartitionsDefinition | None]) -> dg.JobDefinition:
    """The job over the tables of ``assets`` (asset key -> its partitions, None when unpartitioned)."""

    @dg.op(name="rollback_table", tags={"kind": "iceberg"})
    def rollback_op(context: dg.OpExecutionContext, config: RollbackConfig, lakehouse: LakehouseResource) -> str:
        identifier = table_identifier(config.table)
        key = dg.AssetKey(identifier.split("."))
        if key not in assets:
            known = ", ".join(sorted(k.to_user_string() for k in assets))
            raise dg.Failure(f"{identifier} is not a table of this project ({known})")
        days = None
        if config.start:
            start = dt.date.fromisoformat(config.start)
            days = (start, dt.date.fromisoformat(config.end) if config.end else start)
        result = rollback(lakehouse.catalog(), identifier, config.to, run_id=context.run_id, days=days,
                          settings=lakehouse.settings(), branch=lakehouse.settings().branch)
        for event in materializations(key, assets[key], result):
            context.log_event(event)
        context.log.info(describe(result))
        return describe(result)

    @dg.job(name=JOB_NAME, tags={OPERATION_TAG: "rollback"},
            description="Roll a table, or some of its days, back to a snapshot, tag or point in time (a new commit)")
    def rollback_job() -> None:
        rollback_op()

    return rollback_job


def materializations(
    key: dg.AssetKey, partitions: dg.PartitionsDefinition | None, result: RollbackResult
) -> list[dg.AssetMaterialization]:
    """What the UI records of a rollback: a materialization per day it changed, or of the table."""
    common = {
        "rollback/to_snapshot": dg.MetadataValue.text(str(result.to_snapshot)),
        "rollback/from_snapshot": dg.MetadataValue.text(str(result.from_snapshot)),
        "rollback/how": dg.MetadataValue.text(result.how),
        "iceberg/metadata_location": dg.MetadataValue.path(result.metadata_location),
    }
    if result.snapshot_id is not None:
        common["iceberg/snapshot_id"] = dg.MetadataValue.text(str(result.snapshot_id))
    if result.dropped_columns:
        common["rollback/columns_not_restored"] = dg.MetadataValue.text(", ".join(result.dropped_columns))
    if result.companion is not None:
        common["rejected/to_snapshot"] = dg.MetadataValue.text(str(result.companion.to_snapshot))
    if result.snapshot_id is None:
        return []
    if partitions is None or not result.days:
        return [dg.AssetMaterialization(asset_key=key, description=describe(result), metadata={
            **common, "dagster/row_count": dg.MetadataValue.int(result.rows_after),
            "rollback/rows_before": dg.MetadataValue.int(result.rows_before)})]
    valid = set(partitions.get_partition_keys())
    return [
        dg.AssetMaterialization(asset_key=key, partition=day.isoformat(), description=describe(result), metadata={
            **common, "dagster/row_count": dg.MetadataValue.int(after), "rollback/rows_before": dg.MetadataValue.int(before)})
        for day, (before, after) in result.days.items()
        if day.isoformat() in valid
    ]


def describe(result: RollbackResult) -> str:
    scope = f"{result.window.start}..{result.window.end}" if result.window else "the whole table"
    if result.snapshot_id is None:
        return f"{result.table}: already as of snapshot {result.to_snapshot}; nothing committed"
    text = (f"{result.table}: {scope} rolled back to snapshot {result.to_snapshot} "
            f"({result.rows_before:,} -> {result.rows_after:,} rows), new snapshot {result.snapshot_id}")
    if result.dropped_columns:
        text += f"; columns dropped since are not restored: {', '.join(result.dropped_columns)}"
    if result.companion is not None and result.companion.snapshot_id is not None:
        text += f"; {result.companion.table} rolled back with it"
    return text
