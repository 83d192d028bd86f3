"""A table's past on real Iceberg tables (a meter's readings, not the shop): history, reads as of
a timestamp, a snapshot id or a tag, and rollback of a window or the whole table as a new commit.

Every expectation is read back with plain DuckDB over the metadata file, apart from the code
under test, or captured before the change it is compared with.
"""

from __future__ import annotations

import datetime as dt
import time

import duckdb
import pyarrow as pa
import pytest

from ratatouille_assets import cli
from ratatouille_assets.lakehouse import duck
from ratatouille_assets.lakehouse.catalog import load_catalog
from ratatouille_assets.lakehouse.timetravel import AsOfError, RollbackError, history, resolve, rollback
from ratatouille_assets.lakehouse.write import Window, write_window

DAY = dt.date(2023, 3, 1)


def readings(day: dt.date, kwh: list[float], meter: int = 7, landing: dt.date | None = None) -> pa.Table:
    """One meter's readings of ``day``, one an hour, as a TIMESTAMP column (month-partitioned)."""
    at = [dt.datetime.combine(day, dt.time(hour)) for hour in range(len(kwh))]
    return pa.table({
        "meter_id": pa.array([meter] * len(kwh), pa.int32()),
        "read_at": pa.array(at, pa.timestamp("us")),
        "kwh": pa.array(kwh, pa.float64()),
        "_landing_date": pa.array([landing or day] * len(kwh), pa.date32()),
    })


def write_day(catalog, day: dt.date, kwh: list[float], run: str, table: str = "silver.readings"):
    return write_window(catalog, table, readings(day, kwh), window=Window("read_at", day, day), run_id=run,
                        granularity="month")


def plain(catalog, table: str, snapshot_id: int | None = None, where: str = "true") -> list[tuple]:
    """Rows of ``table`` (at ``snapshot_id``) through plain DuckDB, ordered."""
    conn = duck.connect()
    location = catalog.load_table(table).metadata_location
    return conn.execute(f"SELECT * FROM {duck.scan_sql(location, snapshot_id)} WHERE {where} ORDER BY ALL").fetchall()


@pytest.fixture
def lake(settings):
    """Three days written by run r1, then days 2 and 3 rewritten by run r2."""
    catalog = load_catalog(settings)
    for i in range(3):
        write_day(catalog, DAY + dt.timedelta(days=i), [1.0 + i, 2.0 + i], "r1")
    first = catalog.load_table("silver.readings").current_snapshot()
    then = plain(catalog, "silver.readings")
    time.sleep(0.05)
    moment = dt.datetime.now(dt.timezone.utc)
    time.sleep(0.05)
    write_day(catalog, DAY + dt.timedelta(days=1), [20.0, 21.0, 22.0], "r2")
    write_day(catalog, DAY + dt.timedelta(days=2), [30.0], "r2")
    return catalog, first, then, moment


def test_history_lists_each_write_as_one_commit_with_its_run_window_and_rows(lake, capsys):
    catalog, first, _, _ = lake
    entries = history(catalog.load_table("silver.readings"))
    assert [(e.run_id, e.window, e.operation) for e in entries] == [
        ("r2", "read_at:2023-03-03..2023-03-03", "replace"),
        ("r2", "read_at:2023-03-02..2023-03-02", "replace"),
        ("r1", "read_at:2023-03-03..2023-03-03", "append"),
        ("r1", "read_at:2023-03-02..2023-03-02", "append"),
        ("r1", "read_at:2023-03-01..2023-03-01", "append"),
    ]
    newest = entries[0]
    assert (newest.added_rows, newest.removed_rows, newest.total_rows) == (1, 2, 6)
    assert entries[2].snapshot_id == first.snapshot_id and entries[0].refs == ("main",)
    assert [e.run_id for e in history(catalog.load_table("silver.readings"), day=DAY + dt.timedelta(days=1))] == ["r2", "r1"]
    assert len(history(catalog.load_table("silver.readings"), run_id="r1")) == 3

    assert cli.main(["history", "silver.readings", "--day", "2023-03-02"]) == 0
    out = capsys.readouterr().out
    assert "branch  main" in out and out.count("2023-03-02..2023-03-02") == 2 and "2023-03-03.." not in out


def test_as_of_a_timestamp_a_snapshot_id_and_a_tag_read_the_rows_of_then(lake, capfd):
    catalog, first, then, moment = lake
    assert plain(catalog, "silver.readings") != then
    table = catalog.load_table("silver.readings")
    assert resolve(table, moment.isoformat()).snapshot_id == first.snapshot_id
    assert resolve(table, str(first.snapshot_id)).snapshot_id == first.snapshot_id
    with table.manage_snapshots() as snapshots:
        snapshots.create_tag(first.snapshot_id, "before-fix")

    sql = "SELECT meter_id, read_at, kwh, _landing_date FROM silver.readings ORDER BY ALL"
    for point in (moment.isoformat(), str(first.snapshot_id), "before-fix", f"silver.readings={first.snapshot_id}"):
        capfd.readouterr()
        assert cli.main(["query", "--csv", "--as-of", point, sql]) == 0, point
        rows = capfd.readouterr().out.strip().splitlines()[1:]
        assert rows == [",".join(_csv(v) for v in row) for row in then], point
    # Now: the rewritten days.
    assert cli.main(["query", "--csv", "SELECT count(*) FROM silver.readings"]) == 0
    assert capfd.readouterr().out.strip().splitlines()[1] == str(len(plain(catalog, "silver.readings")))


def _csv(value) -> str:
    return str(value)


def test_a_point_the_table_does_not_have_is_refused_with_what_it_has(lake, capfd):
    catalog, first, _, _ = lake
    table = catalog.load_table("silver.readings")
    with pytest.raises(AsOfError, match=r"silver.readings has no snapshot 123 \(the oldest it keeps on main is"):
        resolve(table, "123")
    with pytest.raises(AsOfError, match="had no snapshot at 2001-01-01"):
        resolve(table, "2001-01-01")
    with pytest.raises(AsOfError, match="neither a snapshot id, a branch or tag of the table \\(it has: main\\)"):
        resolve(table, "yesterday-ish")
    assert cli.main(["query", "--as-of", "424242", "SELECT 1"]) == 2
    assert "no table has the snapshot '424242'" in capfd.readouterr().err


def test_rolling_back_one_day_restores_it_and_leaves_every_other_day(lake):
    catalog, first, then, _ = lake
    before = plain(catalog, "silver.readings")
    day2 = "CAST(read_at AS DATE) = DATE '2023-03-02'"
    result = rollback(catalog, "silver.readings", str(first.snapshot_id), run_id="rb",
                      days=(DAY + dt.timedelta(days=1), DAY + dt.timedelta(days=1)))
    assert result.days == {DAY + dt.timedelta(days=1): (3, 2)} and result.how == "rows"
    assert plain(catalog, "silver.readings", where=day2) == [r for r in then if r[1].date() == DAY + dt.timedelta(days=1)]
    assert plain(catalog, "silver.readings", where=f"NOT ({day2})") == [r for r in before if r[1].date() != DAY + dt.timedelta(days=1)]
    # A new commit: history grows, the rolled-back state is still there to read.
    entries = history(catalog.load_table("silver.readings"))
    assert entries[0].operation == "rollback" and entries[0].run_id == "rb"
    assert plain(catalog, "silver.readings", entries[1].snapshot_id) == before


def test_rolling_back_the_whole_table_equals_the_old_snapshot_without_copying_data(lake):
    catalog, first, then, moment = lake
    files_then = {t.file.file_path for t in catalog.load_table("silver.readings").scan(snapshot_id=first.snapshot_id).plan_files()}
    result = rollback(catalog, "silver.readings", moment.isoformat(), run_id="rb")
    assert result.how == "files" and result.to_snapshot == first.snapshot_id
    assert plain(catalog, "silver.readings") == then
    table = catalog.load_table("silver.readings")
    assert {t.file.file_path for t in table.scan().plan_files()} == files_then  # the same files, added back
    assert table.current_snapshot().parent_snapshot_id == result.from_snapshot  # on top of history, not instead
    assert set(result.days) == {DAY + dt.timedelta(days=1), DAY + dt.timedelta(days=2)}
    again = rollback(catalog, "silver.readings", str(first.snapshot_id), run_id="rb2")
    assert again.how == "unchanged" and again.snapshot_id is None


def test_rollback_after_a_new_column_keeps_it_and_names_a_dropped_one_it_cannot_restore(settings):
    catalog = load_catalog(settings)
    write_day(catalog, DAY, [1.0], "r1")
    old = catalog.load_table("silver.readings").current_snapshot().snapshot_id
    wider = readings(DAY, [5.0, 6.0]).append_column("quality", pa.array(["ok", "ok"]))
    write_window(catalog, "silver.readings", wider, window=Window("read_at", DAY, DAY), run_id="r2", granularity="month")
    result = rollback(catalog, "silver.readings", str(old), run_id="rb", days=(DAY, DAY))
    assert plain(catalog, "silver.readings") == [(7, dt.datetime(2023, 3, 1), 1.0, DAY, None)]
    assert result.dropped_columns == ()

    narrower = readings(DAY, [9.0]).drop_columns(["kwh"]).append_column("quality", pa.array(["bad"]))
    write_window(catalog, "silver.readings", narrower, window=Window("read_at", DAY, DAY), run_id="r3",
                 granularity="month", schema_change="sync")
    result = rollback(catalog, "silver.readings", str(old), run_id="rb2", days=(DAY, DAY))
    assert result.dropped_columns == ("kwh",)
    assert "kwh" not in catalog.load_table("silver.readings").schema().column_names
    assert plain(catalog, "silver.readings") == [(7, dt.datetime(2023, 3, 1), DAY, None)]


def test_a_models_rejected_rows_roll_back_with_it(settings):
    catalog = load_catalog(settings)
    rejected = "silver.readings__rejected"
    for run, bad in (("r1", 1), ("r2", 3)):
        write_day(catalog, DAY, [1.0], run)
        rows = readings(DAY, [0.0] * bad).append_column("_reject_reason", pa.array(["negative"] * bad))
        write_window(catalog, rejected, rows, window=Window("read_at", DAY, DAY, nulls_by="_landing_date"), run_id=run)
    first = next(e for e in history(catalog.load_table("silver.readings")) if e.run_id == "r1")
    result = rollback(catalog, "silver.readings", str(first.snapshot_id), run_id="rb", days=(DAY, DAY))
    assert result.companion is not None and result.companion.days == {DAY: (3, 1)}
    assert len(plain(catalog, rejected)) == 1


def test_dev_mode_never_rolls_main_back(lake):
    catalog, first, _, _ = lake
    rows = plain(catalog, "silver.readings")
    with pytest.raises(RollbackError, match="dev mode \\(branch 'feature'\\) never writes main"):
        rollback(catalog, "silver.readings", str(first.snapshot_id), run_id="rb", branch="feature")
    assert plain(catalog, "silver.readings") == rows


def test_a_window_of_an_unpartitioned_table_is_refused(settings):
    catalog = load_catalog(settings)
    write_window(catalog, "silver.sites", pa.table({"site": ["a"]}), window=None, run_id="r1")
    with pytest.raises(RollbackError, match="not partitioned by day: roll back the whole table"):
        rollback(catalog, "silver.sites", "main", run_id="rb", days=(DAY, DAY))


def test_plain_duckdb_reads_the_same_snapshot_as_the_view(lake):
    catalog, first, then, _ = lake
    conn = duckdb.connect()
    duck.configure(conn)
    location = catalog.load_table("silver.readings").metadata_location
    assert conn.execute(f"SELECT * FROM iceberg_scan('{location}', snapshot_from_id={first.snapshot_id}) ORDER BY ALL").fetchall() == then
