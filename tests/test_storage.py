"""The embedded default's Dagster storage (ratatouille_assets/defs/storage.py): Dagster's SQLite
storage with pooled event-log connections. Pins the private method it overrides and shows that a
real partitioned run's events are stored and read back through it.

(No `from __future__ import annotations`: Dagster inspects the context annotation.)"""

import collections
import inspect
import os
from pathlib import Path

import dagster as dg
import yaml
import sqlalchemy as db
from dagster._core.storage.event_log.sql_event_log import SqlEventLogStorage
from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage

from ratatouille_assets.defs.storage import EVENT_BATCH_SIZE, MAX_ENGINES, PooledSqliteEventLogStorage

ROOT = Path(__file__).resolve().parent.parent


def test_the_private_method_it_overrides_is_still_dagsters_connection_per_shard():
    # If Dagster renames or reshapes this, the override would silently stop being used.
    assert list(inspect.signature(SqliteEventLogStorage._connect).parameters) == ["self", "shard"]
    assert "create_engine" in inspect.getsource(SqliteEventLogStorage._connect)
    assert SqliteEventLogStorage.run_connection.__qualname__ == "SqliteEventLogStorage.run_connection"
    assert "self._connect(" in inspect.getsource(SqliteEventLogStorage.run_connection)
    assert "self._connect(" in inspect.getsource(SqliteEventLogStorage.index_connection)
    # The batch write reuses what store_event does for an asset event: the same helpers, in the same order.
    store = inspect.getsource(SqliteEventLogStorage.store_event)
    assert store.index("_store_asset_event_tags(conn, [event], [event_id])") < store.index("_store_asset_event(conn, event, event_id)")
    assert "prepare_insert_event(event)" in store
    # The batch's rows are the ones Dagster's own batch insert builds.
    batch = inspect.getsource(SqlEventLogStorage.prepare_insert_event_batch)
    assert "SqlEventLogStorageTable.insert().values(" in batch and "self._event_to_row(event) for event in events" in batch


def test_the_project_instance_uses_it():
    config = yaml.safe_load((ROOT / "dagster.yaml").read_text())
    assert config["storage"]["custom"] == {
        "module": "ratatouille_assets.defs.storage", "class": "PooledSqliteStorage",
        "config": {"base_dir": {"env": "DAGSTER_HOME"}},
    }


DAYS = dg.DailyPartitionsDefinition(start_date="2024-01-01", end_date="2024-03-01")


@dg.asset(partitions_def=DAYS, backfill_policy=dg.BackfillPolicy.single_run())
def daily(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    for key in context.partition_keys:
        context.add_asset_metadata({"dagster/row_count": int(key[-2:])}, partition_key=key)
    return dg.MaterializeResult()


def test_a_partitioned_runs_events_are_written_in_one_batch_and_read_through_pooled_engines(tmp_path, monkeypatch):
    monkeypatch.setenv("DAGSTER_EVENT_BATCH_SIZE", "1")  # records the variable's state, restored after the test
    monkeypatch.delenv("DAGSTER_EVENT_BATCH_SIZE")
    storage = {"custom": {"module": "ratatouille_assets.defs.storage", "class": "PooledSqliteStorage",
                          "config": {"base_dir": str(tmp_path)}}}
    batches: list[tuple[int, set]] = []
    real = PooledSqliteEventLogStorage.store_event_batch

    def counted(self, events):
        batches.append((len(events), {e.dagster_event_type for e in events}))
        return real(self, events)

    monkeypatch.setattr(PooledSqliteEventLogStorage, "store_event_batch", counted)
    with dg.instance_for_test(overrides={"storage": storage}) as instance:
        events = instance.event_log_storage
        assert isinstance(events, PooledSqliteEventLogStorage)
        assert os.environ["DAGSTER_EVENT_BATCH_SIZE"] == EVENT_BATCH_SIZE  # set by the storage, for its process
        for _ in range(2):
            result = dg.materialize([daily], instance=instance, tags={
                "dagster/asset_partition_range_start": "2024-01-01", "dagster/asset_partition_range_end": "2024-02-29"})
            assert result.success
        # Every partition's materialization is stored and read back with its own metadata.
        records = instance.fetch_materializations(dg.AssetKey("daily"), limit=1000).records
        assert len(records) == 2 * 60
        latest = {r.asset_materialization.partition: r.asset_materialization.metadata["dagster/row_count"].value
                  for r in reversed(records)}
        assert latest == {k: int(k[-2:]) for k in DAYS.get_partition_keys()[:60]}
        assert instance.get_materialized_partitions(dg.AssetKey("daily")) == set(DAYS.get_partition_keys()[:60])
        # Each run: its 60 planned events and its 60 materializations, each as one batch.
        materialized = [n for n, kinds in batches if kinds == {dg.DagsterEventType.ASSET_MATERIALIZATION}]
        assert materialized == [60, 60]
        assert instance.get_latest_materialization_event(dg.AssetKey("daily")).run_id == result.run_id
        # One engine per shard (index + each run's), reused across statements, bounded in number.
        assert 2 <= len(events._engines) <= MAX_ENGINES
        engine = events._engine("index")
        assert events._engine("index") is engine
        # WAL, synced at checkpoints (1 = NORMAL), not on every commit (2 = FULL, the default).
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1
        # Wiping deletes the run shards' files: the pooled connections go first.
        instance.wipe()
        assert events._engines == {} or list(events._engines) == ["index"]
        assert instance.fetch_materializations(dg.AssetKey("daily"), limit=10).records == []


def test_the_private_methods_it_replaces_still_store_what_it_stores():
    # The planned check's rows and the asset row's update: if Dagster changes what these store, the
    # comparison below shows it; this shows when they were reshaped.
    planned = inspect.getsource(SqlEventLogStorage._store_asset_check_evaluation_planned)
    assert "partitions_subset.get_partition_keys()" in planned and "AssetCheckExecutionsTable.insert()" in planned
    entry = inspect.getsource(SqlEventLogStorage._store_asset_event)
    assert "AssetKeyTable.insert()" in entry and "AssetKeyTable.update()" in entry and "_get_asset_entry_values" in entry


CHECKS = ("rows_positive", "no_nulls", "fresh")


@dg.asset(partitions_def=DAYS, backfill_policy=dg.BackfillPolicy.single_run(),
          check_specs=[dg.AssetCheckSpec(name, asset="checked") for name in CHECKS])
def checked(context: dg.AssetExecutionContext):
    for key in context.partition_keys:
        context.add_asset_metadata({"dagster/row_count": int(key[-2:])}, partition_key=key)
    yield dg.MaterializeResult(check_results=[dg.AssetCheckResult(check_name=name, passed=name != "fresh")
                                              for name in CHECKS])


def _stored(instance) -> dict:
    """What a run over 60 days left in the index, run ids replaced by their order."""
    runs = {}
    for _ in range(2):
        result = dg.materialize([checked], instance=instance, tags={
            "dagster/asset_partition_range_start": "2024-01-01", "dagster/asset_partition_range_end": "2024-02-29"})
        assert result.success
        runs[result.run_id] = len(runs)
    key = dg.AssetKey("checked")
    with instance.event_log_storage.index_connection() as conn:
        checks = conn.execute(db.text(
            "SELECT asset_key, check_name, partition, run_id, execution_status, evaluation_event_storage_id IS NOT NULL "
            "FROM asset_check_executions ORDER BY id")).fetchall()
        # Every check row points at the index's copy of its event, of the same kind.
        pointed = conn.execute(db.text(
            "SELECT c.execution_status, e.dagster_event_type FROM asset_check_executions c "
            "JOIN event_logs e ON e.id = c.evaluation_event_storage_id ORDER BY c.id")).fetchall()
        mirrored = conn.execute(db.text(
            "SELECT dagster_event_type, count(*) FROM event_logs GROUP BY 1 ORDER BY 1")).fetchall()
    # Each run's own events (its shard), in the order they were stored.
    logs = [[e.dagster_event.event_type_value for e in instance.all_logs(run_id) if e.dagster_event]
            for run_id in runs]
    entry = instance.get_asset_records([key])[0].asset_entry
    latest = {}
    for r in reversed(instance.fetch_materializations(key, limit=1000).records):
        latest[r.asset_materialization.partition] = runs[r.run_id]
    return {
        "checks": [(*row[:3], runs[row[3]], *row[4:]) for row in checks],
        "pointed": [tuple(row) for row in pointed],
        "mirrored": [tuple(row) for row in mirrored],
        "logs": logs,
        "last_run": runs[entry.last_run_id],
        "last_materialization": (runs[entry.last_materialization.run_id],
                                 entry.last_materialization.asset_materialization.partition),
        "materialized": sorted(instance.get_materialized_partitions(key)),
        "latest_per_partition": latest,
    }


def test_a_batch_with_checks_stores_what_dagsters_own_storage_stores(tmp_path):
    ours = {"custom": {"module": "ratatouille_assets.defs.storage", "class": "PooledSqliteStorage",
                       "config": {"base_dir": str(tmp_path / "ours")}}}
    with dg.instance_for_test(overrides={"storage": ours}) as instance:
        assert isinstance(instance.event_log_storage, PooledSqliteEventLogStorage)
        got = _stored(instance)
    stock = {"sqlite": {"base_dir": str(tmp_path / "stock")}}
    with dg.instance_for_test(overrides={"storage": stock}) as instance:
        assert type(instance.event_log_storage) is SqliteEventLogStorage
        expected = _stored(instance)
    assert got == expected
    # Planned: one row per partition, check and run; each check's result marks its rows.
    # Per run and check: a planned row for each of its 60 partitions, and the check's one (unpartitioned) result.
    kinds = collections.Counter((run, partition is not None, status) for _, _, partition, run, status, _ in got["checks"])
    assert kinds == {(run, True, "PLANNED"): 180 for run in (0, 1)} | {(run, False, "SUCCEEDED"): 2 for run in (0, 1)} | {
        (run, False, "FAILED"): 1 for run in (0, 1)}
    assert {kind for _, kind in got["pointed"]} == {"ASSET_CHECK_EVALUATION_PLANNED", "ASSET_CHECK_EVALUATION"}
    assert dict(got["mirrored"])["ASSET_CHECK_EVALUATION_PLANNED"] == 2 * len(CHECKS)
    assert got["last_run"] == 1 and got["last_materialization"] == (1, "2024-02-29")
    assert got["latest_per_partition"] == {k: 1 for k in DAYS.get_partition_keys()[:60]}
