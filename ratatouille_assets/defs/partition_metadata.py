"""Per-partition metadata of a run over many partitions, added in one step.

Why: ``context.add_asset_metadata(..., partition_key=...)`` is the public way to give each
partition of a ranged run its own metadata (row counts per day). Each call copies everything
added so far (Dagster's metadata accumulator is immutable and merged whole) and recomputes the
run's partition keys, so N partitions cost O(N²): 26 s of a 2,400-day backfill for the daily dbt
models. :func:`add_partition_metadata` checks the same things once and merges all partitions at
once, into the same accumulator, so Dagster's output handling afterwards is unchanged.

A run over many partitions also gives Dagster one materialization per partition, each with the
output's metadata. What describes the table rather than the day (its column schema, its metadata
file, dbt's node details) is carried once, by the run's newest partition: the event the asset
page reads its columns from. :func:`scope_to_newest` makes that split; the other days keep their
own counts, the snapshot id and the window. At 2,400 days this took each event from ~6 KB to ~2 KB.

This is the one place that relies on Dagster's private metadata accumulator
(``StepExecutionContext._metadata_accumulator``, ``OutputMetadataAccumulator``,
``AssetMetadataHandle``); ``tests/test_partition_metadata.py`` pins its shape and compares the
materializations of a real run with the public call's.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import dagster as dg
from dagster._core.execution.context.metadata_logging import AssetMetadataHandle, OutputMetadataAccumulator


def add_partition_metadata(
    context: dg.AssetExecutionContext, key: dg.AssetKey, by_partition: Mapping[str, Mapping[str, Any]]
) -> None:
    """What ``context.add_asset_metadata(metadata, asset_key=key, partition_key=p)`` does for each
    ``p, metadata`` of ``by_partition``, in one merge."""
    if not by_partition:
        return
    step = context.op_execution_context._step_execution_context  # noqa: SLF001 - the adapter's purpose
    if key not in step.assets_def.keys:
        raise dg.DagsterInvariantViolationError(f"Attempted to add metadata for asset key '{key}' that is not being materialized.")
    targeted = set(context.partition_keys)
    stray = sorted(set(by_partition) - targeted)
    if stray:
        raise dg.DagsterInvariantViolationError(
            f"Attempted to add metadata for partition key(s) {', '.join(stray[:5])} that are not being targeted."
        )
    merged = dict(step._metadata_accumulator.per_output_metadata)  # noqa: SLF001
    for partition, metadata in by_partition.items():
        handle = AssetMetadataHandle(asset_key=key, partition_key=partition)
        merged[handle] = {**merged.get(handle, {}), **metadata}
    step._metadata_accumulator = OutputMetadataAccumulator(per_output_metadata=merged)  # noqa: SLF001


# The keys of a materialization that describe the table, not the day: in a run over many
# partitions only the newest partition's event carries them.
TABLE_SCOPED = (
    "dagster/column_schema", "dagster/table_name", "iceberg/metadata_location", "iceberg/total_records",
    "rejected/metadata_location", "unique_id", "invocation_id", "Execution Duration", "status",
)


def scope_to_newest(
    context: dg.AssetExecutionContext, key: dg.AssetKey, metadata: Mapping[str, Any]
) -> dict[str, Any]:
    """``metadata`` for every event of ``key`` in this run, without :data:`TABLE_SCOPED` keys when
    the run covers several partitions: those go to the newest partition's event only."""
    if context.assets_def.partitions_def is None or not context.has_partition_key_range:
        return dict(metadata)
    if len(keys := context.partition_keys) < 2:
        return dict(metadata)
    table = {k: v for k, v in metadata.items() if k in TABLE_SCOPED}
    add_partition_metadata(context, key, {max(keys): table})
    return {k: v for k, v in metadata.items() if k not in TABLE_SCOPED}
