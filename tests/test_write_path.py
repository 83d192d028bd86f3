"""The one write path: window overwrite, idempotency, schema evolution, conflicts — on real Iceberg."""

from __future__ import annotations

import datetime as dt
import os
import time

import pyarrow as pa
import pytest
from pyiceberg.transforms import DayTransform

from ratatouille_assets.lakehouse import duck
from ratatouille_assets.lakehouse.catalog import catalog_properties, load_catalog
from ratatouille_assets.lakehouse.errors import PartitionContractError, SchemaEvolutionError
from ratatouille_assets.lakehouse.tables import day_counts, describe
from ratatouille_assets.lakehouse.write import REBUILD_SUFFIX, RUN_ID_PROPERTY, Window, rebuild_table, write_window
from tests.concurrency import race

D1, D2, D3 = dt.date(2024, 1, 1), dt.date(2024, 1, 2), dt.date(2024, 1, 3)


def rows(day: dt.date, ids: list[int], label: str = "x") -> pa.Table:
    return pa.table({"id": pa.array(ids, pa.int64()), "day": [day] * len(ids), "label": [f"{label}{i}" for i in ids]})


def day(d: dt.date) -> Window:
    return Window("day", d, d)


def read(settings, identifier: str) -> list[tuple]:
    catalog = load_catalog(settings)
    conn = duck.connect(settings)
    location = catalog.load_table(identifier).metadata_location
    return conn.execute(f"SELECT id, day, label FROM iceberg_scan('{location}') ORDER BY day, id").fetchall()


def test_window_overwrite_is_idempotent_and_isolated(settings):
    catalog = load_catalog(settings)
    write_window(catalog, "bronze.t", rows(D1, [1, 2, 3]), window=day(D1), run_id="r1", partition_key="2024-01-01")
    write_window(catalog, "bronze.t", rows(D2, [4, 5]), window=day(D2), run_id="r2", partition_key="2024-01-02")
    before = read(settings, "bronze.t")
    files_d2 = {f["file_path"] for f in catalog.load_table("bronze.t").inspect.files().to_pylist() if f["partition"]["day"] == D2}

    # Re-running day 1 (twice) gives the same table and leaves day 2's files alone.
    for run in ("r3", "r4"):
        result = write_window(catalog, "bronze.t", rows(D1, [1, 2, 3]), window=day(D1), run_id=run)
    assert read(settings, "bronze.t") == before
    assert result.total_rows == 5
    after_d2 = {f["file_path"] for f in catalog.load_table("bronze.t").inspect.files().to_pylist() if f["partition"]["day"] == D2}
    assert after_d2 == files_d2

    # A smaller day 1 replaces exactly day 1.
    write_window(catalog, "bronze.t", rows(D1, [9], "y"), window=day(D1), run_id="r5")
    assert read(settings, "bronze.t") == [(9, D1, "y9"), (4, D2, "x4"), (5, D2, "x5")]


def test_snapshot_records_run_and_partition(settings):
    catalog = load_catalog(settings)
    write_window(catalog, "silver.t", rows(D1, [1]), window=day(D1), run_id="run-a", partition_key="2024-01-01")
    write_window(catalog, "silver.t", rows(D2, [2]), window=day(D2), run_id="run-b", partition_key="2024-01-02")
    info = describe(catalog, "silver.t", run_id="run-a")
    assert info.partition == "2024-01-01" and info.properties[RUN_ID_PROPERTY] == "run-a"
    assert info.rows_written == 1 and info.window == "day:2024-01-01..2024-01-01"
    assert describe(catalog, "silver.t").partition == "2024-01-02"
    assert [f.transform.__class__.__name__ for f in catalog.load_table("silver.t").spec().fields] == ["IdentityTransform"]


def test_additive_columns_evolve_and_old_rows_read_null(settings):
    catalog = load_catalog(settings)
    write_window(catalog, "bronze.e", rows(D1, [1]), window=day(D1), run_id="r1")
    wider = rows(D2, [2]).append_column("score", pa.array([1.5]))
    result = write_window(catalog, "bronze.e", wider, window=day(D2), run_id="r2")
    assert [f.name for f in result.schema.fields] == ["id", "day", "label", "score"]
    conn = duck.connect(settings)
    got = conn.execute(f"SELECT id, score FROM iceberg_scan('{result.metadata_location}') ORDER BY id").fetchall()
    assert got == [(1, None), (2, 1.5)]
    # A batch that lacks the new column still writes (nulls), it does not rewrite history.
    write_window(catalog, "bronze.e", rows(D3, [3]), window=day(D3), run_id="r3")
    assert len(read(settings, "bronze.e")) == 3


def test_breaking_type_change_is_refused_and_nothing_written(settings):
    catalog = load_catalog(settings)
    write_window(catalog, "bronze.b", rows(D1, [1]), window=day(D1), run_id="r1")
    snapshot = catalog.load_table("bronze.b").current_snapshot().snapshot_id
    bad = pa.table({"id": ["not-a-number"], "day": [D1], "label": ["x"]})
    with pytest.raises(SchemaEvolutionError, match="bronze.b.*id"):
        write_window(catalog, "bronze.b", bad, window=day(D1), run_id="r2")
    assert catalog.load_table("bronze.b").current_snapshot().snapshot_id == snapshot


def test_rows_outside_the_window_are_refused(settings):
    catalog = load_catalog(settings)
    with pytest.raises(ValueError, match="outside the window"):
        write_window(catalog, "bronze.w", rows(D2, [1]), window=day(D1), run_id="r1")


def test_unpartitioned_write_replaces_the_table(settings):
    catalog = load_catalog(settings)
    write_window(catalog, "gold.dim", rows(D1, [1, 2]), window=None, run_id="r1")
    write_window(catalog, "gold.dim", rows(D2, [3]), window=None, run_id="r2")
    assert read(settings, "gold.dim") == [(3, D2, "x3")]


def _concurrent_writer(props: dict, name: str, day_offset: int, barrier, results) -> None:
    from pyiceberg.catalog.sql import SqlCatalog

    from ratatouille_assets.lakehouse.write import RetryPolicy

    catalog = SqlCatalog("ratatouille", **props)
    d = D1 + dt.timedelta(days=day_offset)
    ids = list(range(day_offset * 100, day_offset * 100 + 50))
    # Every writer has loaded the same table version when it passes the barrier, so all but one
    # of the first commits conflict: the retry path must run and every write must land.
    result = write_window(
        catalog, name, rows(d, ids), window=day(d), run_id=f"w{day_offset}",
        retry=RetryPolicy(attempts=20, base_delay_s=0.02, max_delay_s=0.5),
        on_attempt=lambda attempt: barrier.wait(timeout=60) if attempt == 1 else None,
    )
    results.put((day_offset, result.attempts))


def test_concurrent_writers_all_land_via_retry(settings):
    catalog = load_catalog(settings)
    write_window(catalog, "bronze.c", rows(D1, [0]), window=day(D1), run_id="seed")  # the table exists
    writers = 4
    attempts = race(_concurrent_writer, lambda i: (catalog_properties(settings), "bronze.c", i + 1), writers, timeout=180)
    assert max(attempts.values()) > 1, f"no writer retried: {attempts}"
    got = read(settings, "bronze.c")
    expected_ids = [0] + [i for k in range(1, writers + 1) for i in range(k * 100, k * 100 + 50)]
    assert sorted(r[0] for r in got) == sorted(expected_ids)  # nothing lost, nothing twice


def _first_opener(catalog_uri: str, warehouse: str, i: int, barrier, results) -> None:
    import os

    os.environ.update(RATATOUILLE_CATALOG_URI=catalog_uri, RATATOUILLE_WAREHOUSE=warehouse)
    from ratatouille_assets.settings import get_settings

    barrier.wait(timeout=60)
    catalog = load_catalog(get_settings())
    results.put((i, [t for (t,) in catalog.list_namespaces()]))


@pytest.mark.slow
def test_processes_opening_a_new_catalog_at_once_all_open_it(tmp_path):
    # The first use of a warehouse: every process finds the catalog's tables missing and creates them.
    for round_ in range(2):
        uri = f"sqlite:///{tmp_path}/catalog-{round_}.db"
        opened = race(_first_opener, lambda i: (uri, str(tmp_path / "warehouse"), i), processes=4, timeout=120)
        assert opened == {i: [] for i in range(4)}


def _data_files(settings, table: str) -> set[str]:
    """Every Parquet file under the table's data folder, referenced or not."""
    import os

    location = load_catalog(settings).load_table(table).location().removeprefix("file://")
    return {os.path.join(folder, n) for folder, _, names in os.walk(os.path.join(location, "data"))
            for n in names if n.endswith(".parquet")}


def test_a_stream_commits_once_and_a_failure_mid_stream_leaves_nothing(settings, monkeypatch):
    import ratatouille_assets.lakehouse.write as write

    monkeypatch.setattr(write, "CHUNK_ROWS", 2)  # 5 rows in the second chunk -> 3 slices
    catalog = load_catalog(settings)
    write_window(catalog, "bronze.s", rows(D1, [1]), window=day(D1), run_id="r0")
    before = catalog.load_table("bronze.s").current_snapshot().snapshot_id
    files_before = _data_files(settings, "bronze.s")

    def chunks(fail: bool):
        yield rows(D1, [10, 11])
        yield rows(D1, [12, 13, 14, 15, 16], label="y")
        if fail:
            raise RuntimeError("the source broke mid-stream")
        yield rows(D1, [17]).append_column("extra", pa.array(["e"]))  # a late chunk adds a column

    with pytest.raises(RuntimeError, match="mid-stream"):
        write_window(catalog, "bronze.s", chunks(fail=True), window=day(D1), run_id="r1")
    assert catalog.load_table("bronze.s").current_snapshot().snapshot_id == before
    assert _data_files(settings, "bronze.s") == files_before  # no orphan data files left behind
    assert read(settings, "bronze.s") == [(1, D1, "x1")]

    result = write_window(catalog, "bronze.s", chunks(fail=False), window=day(D1), run_id="r2",
                          extra_properties=lambda: {"ratatouille.note": "computed after the stream"})
    assert [r[0] for r in read(settings, "bronze.s")] == [10, 11, 12, 13, 14, 15, 16, 17]
    assert result.rows_written == 8 and result.summary["ratatouille.note"] == "computed after the stream"
    assert int(result.summary["added-data-files"]) == 5  # 1 + 3 slices + 1: bounded chunks, one commit
    assert "extra" in catalog.load_table("bronze.s").schema().column_names


def test_daily_writes_keep_the_manifest_count_bounded(settings):
    """Readers open every manifest of a snapshot: a year of daily commits must not mean 365 of them."""
    catalog = load_catalog(settings)
    days = [D1 + dt.timedelta(days=i) for i in range(20)]
    for i, d in enumerate(days):
        write_window(catalog, "gold.daily", rows(d, [i]), window=day(d), run_id=f"r{i}")
    table = catalog.load_table("gold.daily")
    manifests = table.current_snapshot().manifests(table.io)
    assert len(manifests) < 16, f"{len(manifests)} manifests after 20 daily writes"
    assert [r[0] for r in read(settings, "gold.daily")] == list(range(20))
    write_window(catalog, "gold.daily", rows(days[3], [99]), window=day(days[3]), run_id="again")  # inside a merged manifest
    assert [r[0] for r in read(settings, "gold.daily")] == [0, 1, 2, 99, *range(4, 20)]


def test_a_write_expires_nothing_and_keeps_few_metadata_files(settings):
    """Old metadata files go with each commit, so what a commit rewrites stays bounded; expiring
    snapshots is maintenance's job (tests/test_maintenance.py), never a write's."""
    import os

    catalog = load_catalog(settings)
    write_window(catalog, "gold.capped", rows(D1, [0]), window=day(D1), run_id="r0")
    table = catalog.load_table("gold.capped")
    with table.transaction() as tx:
        tx.set_properties({"write.metadata.previous-versions-max": "3"})
    days = [D1 + dt.timedelta(days=i) for i in range(1, 15)]
    for i, d in enumerate(days, start=1):
        result = write_window(catalog, "gold.capped", rows(d, [i]), window=day(d), run_id=f"r{i}")
    table = catalog.load_table("gold.capped")
    assert len(table.metadata.snapshots) == 15
    assert table.current_snapshot().snapshot_id == result.snapshot_id
    assert [r[0] for r in read(settings, "gold.capped")] == list(range(15))
    folder = os.path.dirname(table.metadata_location.removeprefix("file://"))
    assert len([f for f in os.listdir(folder) if f.endswith(".metadata.json")]) <= 4
    # Time travel to any earlier write: the previous one reads 14 rows.
    previous = sorted(table.metadata.snapshots, key=lambda s: s.timestamp_ms)[-2]
    assert table.scan(snapshot_id=previous.snapshot_id).to_arrow().num_rows == 14


def test_an_unchanged_schema_is_not_evolved(settings):
    """pyiceberg reads strings back as large_string: that is no schema change (it cost a table
    reload and metadata copies on every write before)."""
    from ratatouille_assets.lakehouse.write import _needs_schema_update, normalize_arrow

    catalog = load_catalog(settings)
    write_window(catalog, "silver.one", rows(D1, [1]), window=day(D1), run_id="r1")
    table = catalog.load_table("silver.one")
    assert not _needs_schema_update(table.schema(), normalize_arrow(rows(D2, [2])).schema)
    assert _needs_schema_update(table.schema(), normalize_arrow(rows(D2, [2]).append_column("new", pa.array([1]))).schema)


# --- TIMESTAMP windows, NULL partition values, partition types, schema policies, full rebuilds ---

EDGES = [dt.datetime(2024, 1, 1, 0, 0, 0), dt.datetime(2024, 1, 1, 23, 59, 59, 999999), dt.datetime(2024, 1, 2, 0, 0, 0)]


def events(ids: list[int], times: list[dt.datetime], tz: str | None = None) -> pa.Table:
    return pa.table({"id": pa.array(ids, pa.int64()), "ts": pa.array(times, pa.timestamp("us", tz=tz))})


def files_by_partition(catalog, identifier: str, field: str) -> dict:
    out: dict = {}
    for f in catalog.load_table(identifier).inspect.files().to_pylist():
        out.setdefault(f["partition"][field], set()).add(f["file_path"])
    return out


def scan_ids(catalog, identifier: str) -> list:
    return sorted(catalog.load_table(identifier).scan().to_arrow().column("id").to_pylist())


@pytest.mark.parametrize("tz", [None, "UTC"], ids=["timestamp", "timestamptz"])
def test_a_timestamp_window_partitions_by_day_and_rewrites_only_its_days(settings, tz):
    catalog = load_catalog(settings)
    both = Window("ts", D1, D2)
    write_window(catalog, "silver.ev", events([1, 2, 3], EDGES, tz), window=both, run_id="r1")
    table = catalog.load_table("silver.ev")
    (field,) = table.spec().fields
    assert isinstance(field.transform, DayTransform) and table.schema().find_field(field.source_id).name == "ts"
    assert day_counts(table, both) == {D1: 2, D2: 1}  # the last microsecond of D1 is D1, midnight is D2
    d2_files = files_by_partition(catalog, "silver.ev", field.name)[D2]

    # Rewriting D1 alone replaces D1's two rows by one and leaves D2's data files as they were.
    write_window(catalog, "silver.ev", events([9], [dt.datetime(2024, 1, 1, 12)], tz), window=Window("ts", D1, D1), run_id="r2")
    table = catalog.load_table("silver.ev")
    assert day_counts(table, both) == {D1: 1, D2: 1}
    assert files_by_partition(catalog, "silver.ev", field.name)[D2] == d2_files
    assert scan_ids(catalog, "silver.ev") == [3, 9]

    # A D1 window refuses D2's midnight: the window's end is the day, not the day's first instant.
    with pytest.raises(PartitionContractError, match="outside the window"):
        write_window(catalog, "silver.ev", events([4], EDGES[2:], tz), window=Window("ts", D1, D1), run_id="r3")
    assert scan_ids(catalog, "silver.ev") == [3, 9]


def test_a_timestamptz_in_another_time_zone_is_filed_by_its_utc_day(settings):
    catalog = load_catalog(settings)
    write_window(catalog, "silver.utc", events([1], [dt.datetime(2024, 1, 2, 12)], "UTC"), window=Window("ts", D2, D2), run_id="r0")
    # 2024-01-02 03:00 UTC is 2024-01-01 22:00 in New York: its Iceberg day is D2, not D1.
    late_evening = events([2], [dt.datetime(2024, 1, 2, 3)], "UTC").cast(
        pa.schema([pa.field("id", pa.int64()), pa.field("ts", pa.timestamp("us", tz="America/New_York"))]))
    for run in ("r1", "r2"):
        try:
            write_window(catalog, "silver.utc", late_evening, window=Window("ts", D1, D1), run_id=run)
        except PartitionContractError:
            pass  # refusing the row (it is not a D1 row) is a correct outcome too
    # Either way, a write owning D1 must not have touched D2: D2 keeps exactly its one row.
    assert day_counts(catalog.load_table("silver.utc"), Window("ts", D1, D2))[D2] == 1


def with_landing(ids: list[int], days: list[dt.date | None], landing: list[dt.date]) -> pa.Table:
    return pa.table({"id": pa.array(ids, pa.int64()), "day": pa.array(days, pa.date32()),
                     "_landing_date": pa.array(landing, pa.date32())})


def test_null_partition_values_are_filed_by_nulls_by_and_replaced_with_their_window(settings):
    catalog = load_catalog(settings)
    w1, w2 = Window("day", D1, D1, nulls_by="_landing_date"), Window("day", D2, D2, nulls_by="_landing_date")
    write_window(catalog, "silver.n", with_landing([1, 2], [D1, None], [D1, D1]), window=w1, run_id="r1")
    write_window(catalog, "silver.n", with_landing([3, 4], [D2, None], [D2, D2]), window=w2, run_id="r2")
    both = Window("day", D1, D2, nulls_by="_landing_date")
    assert day_counts(catalog.load_table("silver.n"), both) == {D1: 2, D2: 2}

    # Rewriting D1 replaces its NULL row too (no duplicate), and leaves D2's NULL row alone.
    for run in ("r3", "r4"):
        write_window(catalog, "silver.n", with_landing([1, 5], [D1, None], [D1, D1]), window=w1, run_id=run)
    assert scan_ids(catalog, "silver.n") == [1, 3, 4, 5]
    assert day_counts(catalog.load_table("silver.n"), both) == {D1: 2, D2: 2}


def test_a_null_partition_value_outside_the_window_or_without_nulls_by_is_refused(settings):
    catalog = load_catalog(settings)
    write_window(catalog, "silver.r", with_landing([1], [D1], [D1]), window=day(D1), run_id="r0")
    snapshot = catalog.load_table("silver.r").current_snapshot().snapshot_id
    # Filed by a _landing_date of D2, the NULL row is not D1's to write.
    with pytest.raises(PartitionContractError, match="_landing_date"):
        write_window(catalog, "silver.r", with_landing([1, 2], [D1, None], [D1, D2]),
                     window=Window("day", D1, D1, nulls_by="_landing_date"), run_id="r1")
    # Without nulls_by, a NULL partition value has no day at all.
    with pytest.raises(PartitionContractError, match="belong to no partition"):
        write_window(catalog, "silver.r", with_landing([1, 2], [D1, None], [D1, D1]), window=day(D1), run_id="r2")
    assert catalog.load_table("silver.r").current_snapshot().snapshot_id == snapshot
    assert scan_ids(catalog, "silver.r") == [1]


def test_a_partition_column_that_is_not_a_date_or_timestamp_is_refused_at_creation(settings):
    catalog = load_catalog(settings)
    data = pa.table({"id": pa.array([1], pa.int64()), "day": ["2024-01-01"]})
    with pytest.raises(PartitionContractError, match="partition on a DATE or TIMESTAMP column"):
        write_window(catalog, "silver.s", data, window=day(D1), run_id="r1")
    assert not catalog.table_exists("silver.s")


def test_schema_change_fail_refuses_added_and_missing_columns_and_leaves_the_table(settings):
    catalog = load_catalog(settings)
    write_window(catalog, "gold.f", rows(D1, [1]), window=day(D1), run_id="r1")
    table = catalog.load_table("gold.f")
    snapshot, schema = table.current_snapshot().snapshot_id, table.schema()

    wider = rows(D1, [2]).append_column("score", pa.array([1.5]))
    with pytest.raises(SchemaEvolutionError, match=r"new column\(s\) score.*'fail'"):
        write_window(catalog, "gold.f", wider, window=day(D1), run_id="r2", schema_change="fail")
    narrower = rows(D1, [3]).drop_columns(["label"])
    with pytest.raises(SchemaEvolutionError, match=r"missing column\(s\) label"):
        write_window(catalog, "gold.f", narrower, window=day(D1), run_id="r3", schema_change="fail")

    table = catalog.load_table("gold.f")
    assert table.current_snapshot().snapshot_id == snapshot
    assert table.schema() == schema
    assert read(settings, "gold.f") == [(1, D1, "x1")]
    # The same schema is no change: "fail" writes it.
    write_window(catalog, "gold.f", rows(D1, [4]), window=day(D1), run_id="r4", schema_change="fail")
    assert read(settings, "gold.f") == [(4, D1, "x4")]


def test_schema_change_sync_drops_a_missing_column_and_append_keeps_it(settings):
    catalog = load_catalog(settings)
    for name in ("gold.sync", "gold.append"):
        write_window(catalog, name, rows(D1, [1]), window=day(D1), run_id="r1")
    narrower = rows(D2, [2]).drop_columns(["label"])

    write_window(catalog, "gold.sync", narrower, window=day(D2), run_id="r2", schema_change="sync")
    synced = catalog.load_table("gold.sync")
    assert synced.schema().column_names == ["id", "day"]
    assert synced.scan().to_arrow().sort_by("id").to_pylist() == [{"id": 1, "day": D1}, {"id": 2, "day": D2}]

    write_window(catalog, "gold.append", narrower, window=day(D2), run_id="r2", schema_change="append")
    appended = catalog.load_table("gold.append")
    assert appended.schema().column_names == ["id", "day", "label"]
    assert read(settings, "gold.append") == [(1, D1, "x1"), (2, D2, None)]


def test_rebuild_replaces_the_table_schema_and_rows_under_the_same_name(settings):
    catalog = load_catalog(settings)
    write_window(catalog, "gold.rb", rows(D1, [1, 2]), window=day(D1), run_id="r1")
    write_window(catalog, "gold.rb", rows(D2, [3]), window=day(D2), run_id="r2")

    # id becomes a string (a change write_window refuses), the partition column a TIMESTAMP.
    new = pa.table({"id": ["a", "b"], "ts": pa.array([dt.datetime(2024, 1, 3, 8), dt.datetime(2024, 1, 3, 9)], pa.timestamp("us"))})
    result = rebuild_table(catalog, "gold.rb", new, window=Window("ts", D3, D3), run_id="full")

    table = catalog.load_table("gold.rb")
    assert result.table == "gold.rb" and result.metadata_location == table.metadata_location
    assert table.schema().column_names == ["id", "ts"] and str(table.schema().find_field("id").field_type) == "string"
    (field,) = table.spec().fields
    assert isinstance(field.transform, DayTransform)
    # Only the new rows: D1 and D2, outside the new data's window, are gone with the old table.
    assert sorted(table.scan().to_arrow().column("id").to_pylist()) == ["a", "b"]
    assert not catalog.table_exists("gold.rb" + REBUILD_SUFFIX)
    assert [t for t in catalog.list_tables("gold") if t[-1].endswith(REBUILD_SUFFIX)] == []
    conn = duck.connect(settings)
    assert conn.execute(f"SELECT count(*) FROM iceberg_scan('{table.metadata_location}')").fetchone()[0] == 2


def test_a_rebuild_that_fails_mid_stream_leaves_the_old_table_untouched(settings):
    catalog = load_catalog(settings)
    write_window(catalog, "gold.keep", rows(D1, [1, 2]), window=day(D1), run_id="r1")
    before = catalog.load_table("gold.keep")

    def stream():
        yield pa.table({"id": ["a"], "day": pa.array([D2], pa.date32())})
        raise RuntimeError("the model's query broke mid-stream")

    with pytest.raises(RuntimeError, match="mid-stream"):
        rebuild_table(catalog, "gold.keep", stream(), window=day(D2), run_id="full")
    after = catalog.load_table("gold.keep")
    assert after.metadata_location == before.metadata_location
    assert after.current_snapshot().snapshot_id == before.current_snapshot().snapshot_id
    assert read(settings, "gold.keep") == [(1, D1, "x1"), (2, D1, "x2")]


# --- coarse partitions, coalesced files, patient retries -------------------------------------


def month_of(days: list[dt.date], per_day: int = 3) -> pa.Table:
    return pa.concat_tables([rows(d, list(range(i * 10, i * 10 + per_day)), d.isoformat()) for i, d in enumerate(days)])


def test_a_month_partitioned_table_replaces_exactly_the_days_of_its_window(settings):
    catalog = load_catalog(settings)
    january = [dt.date(2024, 1, d) for d in range(1, 32)]
    write_window(catalog, "bronze.m", month_of(january), window=Window("day", january[0], january[-1]), run_id="r1",
                 granularity="month")
    table = catalog.load_table("bronze.m")
    assert [f.transform.__class__.__name__ for f in table.spec().fields] == ["MonthTransform"]
    assert len(table.inspect.files()) == 1  # a month of days, one file

    # Day 10 again, with other rows: the other 30 days of the month partition are untouched.
    write_window(catalog, "bronze.m", rows(dt.date(2024, 1, 10), [999], "new"), window=day(dt.date(2024, 1, 10)),
                 run_id="r2", granularity="month")
    got = read(settings, "bronze.m")
    expected = sorted(
        [r for r in (tuple(x.values()) for x in month_of(january).to_pylist()) if r[1] != dt.date(2024, 1, 10)]
        + [(999, dt.date(2024, 1, 10), "new999")], key=lambda r: (r[1], r[0]),
    )
    assert got == expected
    counts = day_counts(catalog.load_table("bronze.m"), Window("day", january[0], january[-1]))
    assert counts[dt.date(2024, 1, 10)] == 1 and counts[dt.date(2024, 1, 11)] == 3 and sum(counts.values()) == 91


def test_a_changed_granularity_evolves_the_spec_and_keeps_every_row(settings):
    catalog = load_catalog(settings)
    write_window(catalog, "bronze.g", rows(D1, [1, 2]), window=day(D1), run_id="r1")
    write_window(catalog, "bronze.g", rows(D2, [3]), window=day(D2), run_id="r2", granularity="year")
    table = catalog.load_table("bronze.g")
    assert [f.transform.__class__.__name__ for f in table.spec().fields] == ["YearTransform"]
    # The old day-partitioned file is replaced by a window over it, under the new spec.
    write_window(catalog, "bronze.g", rows(D1, [7]), window=day(D1), run_id="r3", granularity="year")
    assert read(settings, "bronze.g") == [(7, D1, "x7"), (3, D2, "x3")]


def test_many_small_inputs_are_coalesced_into_one_file_per_partition(settings):
    catalog = load_catalog(settings)
    days = [D1 + dt.timedelta(days=i) for i in range(20)]
    # 20 days x 5 small "files" each, streamed one by one: 20 data files (one per day), not 100.
    stream = (rows(d, [i * 100 + j], f"f{j}-") for i, d in enumerate(days) for j in range(5))
    result = write_window(catalog, "bronze.c", stream, window=Window("day", days[0], days[-1]), run_id="r1")
    assert result.rows_written == 100
    assert len(catalog.load_table("bronze.c").inspect.files()) == 20
    # An input with another schema (an extra column) is not unified by guessing: its own chunk, evolved column.
    wider = rows(D1, [5000]).append_column("extra", pa.array(["e"]))
    result = write_window(catalog, "bronze.c", iter([rows(D1, [1]), wider, rows(D1, [2])]), window=day(D1), run_id="r2")
    assert result.rows_written == 3 and "extra" in result.schema.column_names


def test_a_commit_keeps_retrying_for_its_patience_not_just_its_attempts(settings, monkeypatch):
    from pyiceberg.exceptions import CommitFailedException
    from pyiceberg.table import Transaction

    from ratatouille_assets.lakehouse.write import RetryPolicy

    catalog = load_catalog(settings)
    write_window(catalog, "bronze.p", rows(D1, [1]), window=day(D1), run_id="r0")
    real_commit = Transaction.commit_transaction
    failures = {"left": 12}

    def flaky(self):  # a table that "has changed" on the first 12 attempts: a busy concurrent writer
        if failures["left"]:
            failures["left"] -= 1
            raise CommitFailedException("Requirement failed: branch main has changed")
        return real_commit(self)

    monkeypatch.setattr(Transaction, "commit_transaction", flaky)
    policy = RetryPolicy(attempts=3, base_delay_s=0.001, max_delay_s=0.01, patience_s=2.0)
    result = write_window(catalog, "bronze.p", rows(D2, [2]), window=day(D2), run_id="r1", retry=policy)
    assert result.attempts == 13 and read(settings, "bronze.p") == [(1, D1, "x1"), (2, D2, "x2")]


def test_a_chunk_spanning_many_days_in_any_order_is_one_file_per_day_with_every_row(settings):
    import random

    catalog = load_catalog(settings)
    days = [D1 + dt.timedelta(days=i) for i in range(45)]
    data = pa.concat_tables([rows(d, [i * 10 + j for j in range(4)]) for i, d in enumerate(days)])
    shuffled = data.take(pa.array(random.Random(7).sample(range(data.num_rows), data.num_rows)))
    write_window(catalog, "silver.s", shuffled, window=Window("day", days[0], days[-1]), run_id="r1")
    table = catalog.load_table("silver.s")
    assert len(table.inspect.files()) == 45
    assert read(settings, "silver.s") == sorted((r["id"], r["day"], r["label"]) for r in data.to_pylist())
    # Month partitions (January, February): one file per month, whatever the order of the rows.
    write_window(catalog, "silver.sm", shuffled, window=Window("day", days[0], days[-1]), run_id="r1", granularity="month")
    assert len(catalog.load_table("silver.sm").inspect.files()) == 2


# --- a locked SQLite catalog is waited out like a conflict -------------------------------------------

def _hold_write_lock(db: str, seconds: float, started) -> None:
    import sqlite3

    conn = sqlite3.connect(db, timeout=30)
    conn.execute("BEGIN EXCLUSIVE")
    started.set()
    time.sleep(seconds)
    conn.rollback()
    conn.close()


def test_a_catalog_locked_past_the_busy_timeout_is_retried_then_named(settings, monkeypatch):
    import threading

    from ratatouille_assets.lakehouse import catalog as catalog_module
    from ratatouille_assets.lakehouse.errors import CatalogLockedError
    from ratatouille_assets.lakehouse.write import RetryPolicy

    monkeypatch.setattr(catalog_module, "SQLITE_BUSY_TIMEOUT_MS", 100)
    cat = load_catalog(settings)
    write_window(cat, "bronze.locked", rows(D1, [1]), window=Window("day", D1, D1), run_id="r1")
    db = catalog_module.sqlite_path(settings)

    # Locked for ~1.5 s (15 busy timeouts): the write waits it out and commits.
    started = threading.Event()
    holder = threading.Thread(target=_hold_write_lock, args=(db, 1.5, started))
    holder.start()
    started.wait()
    result = write_window(load_catalog(settings), "bronze.locked", rows(D1, [2, 3]), window=Window("day", D1, D1),
                          run_id="r2", retry=RetryPolicy(attempts=8, patience_s=30))
    holder.join()
    assert result.attempts > 1
    assert sorted(load_catalog(settings).load_table("bronze.locked").scan().to_arrow()["id"].to_pylist()) == [2, 3]

    # Locked for longer than the write's patience: a clear error, and the table is as it was.
    started = threading.Event()
    holder = threading.Thread(target=_hold_write_lock, args=(db, 4, started))
    holder.start()
    started.wait()
    with pytest.raises(CatalogLockedError, match="stayed locked .* another process holds a write lock"):
        write_window(load_catalog(settings), "bronze.locked", rows(D1, [9]), window=Window("day", D1, D1),
                     run_id="r3", retry=RetryPolicy(attempts=2, base_delay_s=0.05, max_delay_s=0.1, patience_s=0.5))
    holder.join()
    table = load_catalog(settings).load_table("bronze.locked")
    assert sorted(table.scan().to_arrow()["id"].to_pylist()) == [2, 3]
    # What the locked attempts wrote is gone: data files, manifests and manifest lists. (The
    # catalog's own new metadata file of each attempt is the sweep's: the catalog does not say
    # which it wrote.)
    from ratatouille_assets.lakehouse.maintenance import referenced_files

    on_disk = {os.path.join(d, n) for d, _, names in os.walk(table.location().removeprefix("file://")) for n in names}
    assert sorted(os.path.basename(p) for p in on_disk - referenced_files(table)
                  if not p.endswith(".metadata.json")) == []
    assert referenced_files(table) <= on_disk


def test_a_home_whose_name_has_url_characters_keeps_its_catalog_inside_it(tmp_path, monkeypatch):
    """'%', '?', '#' and a space in RATATOUILLE_HOME: the SQLite catalog is the file in that folder
    (SQLAlchemy decodes its URI: '%20' was read as a space, '?' ended the path)."""
    from ratatouille_assets.lakehouse.catalog import sqlite_path
    from ratatouille_assets.settings import get_settings
    from tests.conftest import use_home

    home = tmp_path / "my lake [1] 100%20 ?#x"
    settings = use_home(monkeypatch, home)
    assert sqlite_path(settings) == str(home / "catalog.db")
    write_window(load_catalog(settings), "bronze.home", rows(D1, [1, 2]), window=day(D1), run_id="r1")
    assert (home / "catalog.db").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["my lake [1] 100%20 ?#x"]
    assert read(settings, "bronze.home") == [(1, D1, "x1"), (2, D1, "x2")]
    get_settings.cache_clear()
