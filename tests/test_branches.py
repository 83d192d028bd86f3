"""Data branches on real Iceberg tables (parcels of a courier, not the shop): writes to a branch
leave main as it was (snapshot id and rows, read by plain DuckDB over main's metadata); `rat branch`
lists, diffs per partition, publishes by fast-forward (refusing a table whose main moved) and drops."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pytest

from ratatouille_assets import cli
from ratatouille_assets.lakehouse import branches, duck
from ratatouille_assets.lakehouse.catalog import load_catalog
from ratatouille_assets.lakehouse.write import Window, write_window

DAY = dt.date(2022, 6, 1)


def parcels(day: dt.date, weights: list[float]) -> pa.Table:
    return pa.table({"ship_date": pa.array([day] * len(weights), pa.date32()), "kg": pa.array(weights, pa.float64())})


def write(catalog, table: str, day: dt.date, weights: list[float], branch: str = "main"):
    return write_window(catalog, table, parcels(day, weights), window=Window("ship_date", day, day), run_id="r",
                        branch=branch)


def main_rows(catalog, table: str) -> list[tuple]:
    """main's rows, through plain DuckDB on the current metadata file (which also holds the branches)."""
    location = catalog.load_table(table).metadata_location
    return duck.connect().execute(f"SELECT * FROM iceberg_scan('{location}') ORDER BY ALL").fetchall()


@pytest.fixture
def lake(settings):
    catalog = load_catalog(settings)
    for i in range(3):
        write(catalog, "silver.parcels", DAY + dt.timedelta(days=i), [1.0 + i])
    write(catalog, "gold.parcels_daily", DAY, [9.0])
    return catalog


def test_a_branch_write_leaves_main_and_holds_main_plus_its_change(lake):
    catalog = lake
    before = catalog.load_table("silver.parcels").current_snapshot().snapshot_id
    rows = main_rows(catalog, "silver.parcels")
    result = write(catalog, "silver.parcels", DAY + dt.timedelta(days=1), [5.0, 6.0], branch="feature")
    table = catalog.load_table("silver.parcels")
    assert table.current_snapshot().snapshot_id == before and main_rows(catalog, "silver.parcels") == rows
    assert result.snapshot_id == table.metadata.refs["feature"].snapshot_id
    conn = duck.connect()
    on_branch = conn.execute(f"SELECT * FROM {duck.scan_sql(table.metadata_location, result.snapshot_id)} ORDER BY ALL").fetchall()
    assert on_branch == [(DAY, 1.0), (DAY + dt.timedelta(days=1), 5.0), (DAY + dt.timedelta(days=1), 6.0),
                         (DAY + dt.timedelta(days=2), 3.0)]


def test_diff_publish_and_drop(lake, capsys):
    catalog = lake
    write(catalog, "silver.parcels", DAY + dt.timedelta(days=2), [7.0], branch="feature")
    write(catalog, "gold.parcels_daily", DAY, [7.0, 7.0], branch="feature")
    assert cli.main(["branch", "list"]) == 0
    assert "feature" in capsys.readouterr().out

    differences = {d.table: d for d in branches.diff(catalog, "feature")}
    assert set(differences) == {"silver.parcels", "gold.parcels_daily"}
    assert [(p.partition, p.main_rows, p.branch_rows) for p in differences["silver.parcels"].partitions] == [("2022-06-03", 1, 1)]
    assert [(p.partition, p.main_rows, p.branch_rows) for p in differences["gold.parcels_daily"].partitions] == [("2022-06-01", 1, 2)]
    assert cli.main(["branch", "diff", "feature"]) == 0
    out = capsys.readouterr().out
    assert "silver.parcels: main" in out and "2022-06-03" in out

    heads = {t: catalog.load_table(t).metadata.refs["feature"].snapshot_id for t in differences}
    assert cli.main(["branch", "publish", "feature"]) == 0
    for table, head in heads.items():
        assert catalog.load_table(table).current_snapshot().snapshot_id == head
    assert main_rows(catalog, "gold.parcels_daily") == [(DAY, 7.0), (DAY, 7.0)]
    assert branches.diff(catalog, "feature") == []

    assert cli.main(["branch", "drop", "feature"]) == 0
    assert all("feature" not in catalog.load_table(t).metadata.refs for t in heads)
    assert cli.main(["branch", "diff", "feature"]) == 2


def test_publish_refuses_a_table_whose_main_moved_and_publishes_the_others(lake, capsys):
    catalog = lake
    write(catalog, "silver.parcels", DAY, [4.0], branch="feature")
    write(catalog, "gold.parcels_daily", DAY, [4.0], branch="feature")
    write(catalog, "gold.parcels_daily", DAY + dt.timedelta(days=1), [8.0])  # main moves on
    moved_main = main_rows(catalog, "gold.parcels_daily")
    assert [d.main_moved for d in branches.diff(catalog, "feature")] == [False, True]
    assert cli.main(["branch", "publish", "feature"]) == 1
    assert "gold.parcels_daily: main moved since branch 'feature' was made" in capsys.readouterr().err
    assert main_rows(catalog, "gold.parcels_daily") == moved_main
    assert main_rows(catalog, "silver.parcels") == [(DAY, 4.0), (DAY + dt.timedelta(days=1), 2.0), (DAY + dt.timedelta(days=2), 3.0)]


def test_main_and_tags_are_no_branch_to_work_on(lake):
    with pytest.raises(branches.BranchError):
        branches.publish(lake, "main")
    table = lake.load_table("silver.parcels")
    with table.manage_snapshots() as snapshots:
        snapshots.create_tag(table.current_snapshot().snapshot_id, "v1")
    with pytest.raises(ValueError, match="is a tag, not a branch"):
        write(lake, "silver.parcels", DAY, [1.0], branch="v1")
