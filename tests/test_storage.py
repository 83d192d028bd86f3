"""The embedded default's Dagster storage (ratatouille_assets/defs/storage.py): Dagster's SQLite
storage with pooled event-log connections. Pins the private method it overrides and shows that a
real partitioned run's events are stored and read back through it.

(No `from __future__ import annotations`: Dagster inspects the context annotation.)"""

import inspect
import os
from pathlib import Path

import dagster as dg
import yaml
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
        # Wiping deletes the run shards' files: the pooled connections go first.
        instance.wipe()
        assert events._engines == {} or list(events._engines) == ["index"]
        assert instance.fetch_materializations(dg.AssetKey("daily"), limit=10).records == []
