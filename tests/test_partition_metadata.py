"""ratatouille_assets/defs/partition_metadata.py: a ranged run's per-partition metadata in one merge.
Pins the private accumulator it writes and shows a real run's materializations equal the public
``add_asset_metadata`` call's.

(No `from __future__ import annotations`: Dagster inspects the context annotation.)"""

import inspect

import dagster as dg
import pytest
from dagster._core.execution.context.metadata_logging import AssetMetadataHandle, OutputMetadataAccumulator
from dagster._core.execution.context.system import StepExecutionContext

from ratatouille_assets.defs.partition_metadata import TABLE_SCOPED, add_partition_metadata, scope_to_newest

DAYS = dg.DailyPartitionsDefinition(start_date="2024-01-01", end_date="2024-04-01")
RANGE = {"dagster/asset_partition_range_start": "2024-01-01", "dagster/asset_partition_range_end": "2024-03-31"}


def test_the_private_accumulator_is_still_what_add_asset_metadata_writes():
    source = inspect.getsource(StepExecutionContext.add_asset_metadata)
    assert "self._metadata_accumulator = self._metadata_accumulator.with_additional_asset_metadata(" in source
    assert "get_partition_keys_in_range" in source  # the check it does per call (done once here)
    assert list(AssetMetadataHandle.__annotations__) == ["asset_key", "partition_key"]
    assert list(OutputMetadataAccumulator.__annotations__) == ["per_output_metadata"]


def _counts(key: str) -> dict:
    return {"dagster/row_count": int(key[-2:]) * 10, "files": int(key[5:7])}


@dg.asset(partitions_def=DAYS, backfill_policy=dg.BackfillPolicy.single_run())
def public(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    context.add_asset_metadata({"note": "first", "files": 0}, partition_key=context.partition_keys[0])
    for key in context.partition_keys[::2]:  # every other day, as a window with empty days
        context.add_asset_metadata(_counts(key), partition_key=key)
    context.add_asset_metadata({"last": True}, partition_key=context.partition_keys[-1])
    return dg.MaterializeResult(metadata={"snapshot": "s1"})


@dg.asset(partitions_def=DAYS, backfill_policy=dg.BackfillPolicy.single_run())
def batched(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    context.add_asset_metadata({"note": "first", "files": 0}, partition_key=context.partition_keys[0])
    add_partition_metadata(context, context.assets_def.key, {k: _counts(k) for k in context.partition_keys[::2]})
    context.add_asset_metadata({"last": True}, partition_key=context.partition_keys[-1])  # merged either way
    return dg.MaterializeResult(metadata={"snapshot": "s1"})


def _metadata(instance, asset) -> dict:
    records = instance.fetch_materializations(asset.key, limit=1000).records
    return {r.asset_materialization.partition: {k: v.value for k, v in r.asset_materialization.metadata.items()}
            for r in records}


def test_a_ranged_runs_materializations_equal_the_public_calls():
    with dg.instance_for_test() as instance:
        for asset in (public, batched):
            assert dg.materialize([asset], instance=instance, tags=RANGE).success
        got, expected = _metadata(instance, batched), _metadata(instance, public)
    assert got == expected and len(got) == 91
    assert got["2024-01-01"] == {"dagster/row_count": 10, "files": 1, "note": "first", "snapshot": "s1"}
    assert got["2024-01-02"] == {"snapshot": "s1"}
    assert got["2024-03-31"] == {"dagster/row_count": 310, "files": 3, "last": True, "snapshot": "s1"}


@dg.asset(partitions_def=DAYS)
def stray(context: dg.AssetExecutionContext) -> None:
    add_partition_metadata(context, context.assets_def.key, {"2024-02-01": {"x": 1}})


def test_a_partition_outside_the_run_is_refused_as_dagster_refuses_it():
    with dg.instance_for_test() as instance:
        with pytest.raises(dg.DagsterInvariantViolationError, match="2024-02-01 that are not being targeted"):
            dg.materialize([stray], instance=instance, partition_key="2024-01-05")


SCHEMA = dg.TableSchema(columns=[dg.TableColumn(name="id", type="long")])


@dg.asset(partitions_def=DAYS, backfill_policy=dg.BackfillPolicy.single_run())
def scoped(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    metadata = {"dagster/column_schema": SCHEMA, "iceberg/metadata_location": "/w/t/metadata/1.json",
                "iceberg/snapshot_id": "42"}
    add_partition_metadata(context, context.assets_def.key, {k: _counts(k) for k in context.partition_keys})
    return dg.MaterializeResult(metadata=scope_to_newest(context, context.assets_def.key, metadata))


def test_a_ranged_run_puts_the_table_level_metadata_on_its_newest_partition_only():
    assert {"dagster/column_schema", "iceberg/metadata_location", "unique_id"} <= set(TABLE_SCOPED)
    with dg.instance_for_test() as instance:
        assert dg.materialize([scoped], instance=instance, tags=RANGE).success
        got = _metadata(instance, scoped)
        latest = instance.get_latest_materialization_event(scoped.key).asset_materialization
        assert dg.materialize([scoped], instance=instance, partition_key="2024-01-10").success
        single = instance.get_latest_materialization_event(scoped.key).asset_materialization
    assert len(got) == 91
    for day, metadata in got.items():
        assert metadata["iceberg/snapshot_id"] == "42" and metadata["dagster/row_count"] == _counts(day)["dagster/row_count"]
        assert ("dagster/column_schema" in metadata) == (day == "2024-03-31"), day
        assert ("iceberg/metadata_location" in metadata) == (day == "2024-03-31"), day
    # The event the asset page reads its columns from is the run's newest partition's.
    assert latest.partition == "2024-03-31" and latest.metadata["dagster/column_schema"].schema == SCHEMA
    # A run of one partition keeps everything on its one event.
    assert single.partition == "2024-01-10" and single.metadata["dagster/column_schema"].schema == SCHEMA
    assert single.metadata["iceberg/metadata_location"].value == "/w/t/metadata/1.json"
