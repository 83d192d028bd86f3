"""The Python SDK (``from ratatouille_assets import rat``) on a user's own tables (a bike-share's
trips and stations, not the shop), on the local default and on S3 + PostgreSQL: every function,
views that follow new snapshots without reopening, reads of the past, and what it refuses."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import uuid

import pyarrow as pa
import pytest

from ratatouille_assets.lakehouse.catalog import load_catalog
from ratatouille_assets.lakehouse.write import Window, write_window
from ratatouille_assets.sdk import Lakehouse, RatError
from ratatouille_assets.settings import get_settings
from tests.conftest import use_backend

D1, D2, D3 = dt.date(2025, 6, 1), dt.date(2025, 6, 2), dt.date(2025, 6, 3)


def trips(day: dt.date, n: int, first: int = 0) -> pa.Table:
    return pa.table({
        "trip_id": pa.array(range(first, first + n), pa.int64()),
        "ride_date": [day] * n,
        "station_id": [f"S{i % 4}" for i in range(first, first + n)],
        "minutes": pa.array([5 + i % 40 for i in range(first, first + n)], pa.int32()),
    })


@pytest.fixture(params=["local", "s3"])
def bikes(request, tmp_path, monkeypatch):
    """Two days of trips and a stations table, written by the write path; a Lakehouse on them."""
    settings = use_backend(request, monkeypatch, tmp_path / "rt", "bikes-" + uuid.uuid4().hex[:8])
    catalog = load_catalog(settings)
    for day, first in ((D1, 0), (D2, 100)):
        write_window(catalog, "silver.trips", trips(day, 30, first), window=Window("ride_date", day, day), run_id=f"r-{day}")
    write_window(catalog, "gold.stations", pa.table({"station_id": ["S0", "S1", "S2", "S3"], "dock_count": [10, 12, 8, 20]}),
                 window=None, run_id="r-stations")
    lakehouse = Lakehouse(settings)
    yield lakehouse, catalog
    lakehouse.close()
    get_settings.cache_clear()


def test_tables_schema_and_sql_read_the_tables_as_layer_dot_table(bikes):
    rat, _ = bikes
    assert rat.tables() == ["gold.stations", "silver.trips"]
    schema = rat.schema("silver.trips").fetchall()
    assert [(name, kind) for name, kind, _ in schema] == [
        ("trip_id", "BIGINT"), ("ride_date", "DATE"), ("station_id", "VARCHAR"), ("minutes", "INTEGER")]
    got = rat.sql("SELECT t.ride_date, s.dock_count, count(*) AS n, sum(t.minutes) AS minutes FROM silver.trips t "
                  "JOIN gold.stations s USING (station_id) GROUP BY ALL ORDER BY ALL").fetchall()
    expected: dict = {}
    for table in (trips(D1, 30, 0), trips(D2, 30, 100)):
        for row in table.to_pylist():
            dock = {"S0": 10, "S1": 12, "S2": 8, "S3": 20}[row["station_id"]]
            n, m = expected.get((row["ride_date"], dock), (0, 0))
            expected[(row["ride_date"], dock)] = (n + 1, m + row["minutes"])
    assert got == sorted((d, dock, n, m) for (d, dock), (n, m) in expected.items())
    relation = rat.read("silver.trips", where=f"ride_date = DATE '{D2}'")
    table = relation.to_arrow_table()
    assert table.num_rows == 30 and set(table.column("ride_date").to_pylist()) == {D2}


def test_views_follow_new_snapshots_and_tables_without_reopening(bikes):
    rat, catalog = bikes
    count = "SELECT count(*) FROM silver.trips"
    assert rat.sql(count).fetchone() == (60,)
    conn_before = rat._conn  # noqa: SLF001 - the same connection must serve
    write_window(catalog, "silver.trips", trips(D3, 12, 200), window=Window("ride_date", D3, D3), run_id="r-d3")
    assert rat.sql(count).fetchone() == (72,)
    write_window(catalog, "gold.rides_per_day", pa.table({"ride_date": [D1], "rides": [30]}), window=None, run_id="r-g")
    assert "gold.rides_per_day" in rat.tables()
    assert rat.sql("SELECT rides FROM gold.rides_per_day").fetchall() == [(30,)]
    catalog.drop_table("gold.rides_per_day")
    assert "gold.rides_per_day" not in rat.tables()
    assert rat._conn is conn_before  # noqa: SLF001


def test_history_and_reads_of_the_past(bikes):
    rat, catalog = bikes
    before_d3 = catalog.load_table("silver.trips").current_snapshot().snapshot_id
    write_window(catalog, "silver.trips", trips(D3, 12, 200), window=Window("ride_date", D3, D3), run_id="r-d3")
    commits = rat.history("silver.trips").fetchall()
    columns = rat.history("silver.trips").columns
    assert [dict(zip(columns, c))["run_id"] for c in commits] == ["r-d3", f"r-{D2}", f"r-{D1}"]
    assert dict(zip(columns, commits[0]))["added_rows"] == 12
    assert rat.history("silver.trips", day=D1).fetchall()[0][columns.index("run_id")] == f"r-{D1}"
    assert rat.read("silver.trips", as_of=str(before_d3)).to_arrow_table().num_rows == 60
    assert rat.sql("SELECT count(*) FROM silver.trips", as_of={"silver.trips": str(before_d3)}).fetchone() == (60,)
    assert rat.sql("SELECT count(*) FROM silver.trips").fetchone() == (72,)


def test_what_it_refuses_says_what_to_do(bikes):
    rat, _ = bikes
    with pytest.raises(RatError, match=r"silver.nope: no such table \(tables: gold.stations, silver.trips\)"):
        rat.read("silver.nope")
    with pytest.raises(RatError, match="Catalog Error"):
        rat.sql("SELECT * FROM gold.nothing_here")
    with pytest.raises(RatError, match="name an asset as <layer>.<table>"):
        rat.materialize(["trips"], partition="2025-06-01")
    with pytest.raises(RatError, match="no Dagster webserver answers at http://127.0.0.1:9"):
        rat.materialize(["silver.trips"], partition="2025-06-01", url="http://127.0.0.1:9")


def test_importing_the_sdk_imports_no_dagster_and_rat_is_exported_lazily():
    code = ("import sys; from ratatouille_assets import rat; import ratatouille_assets.sdk as s; "
            "assert rat is s.rat; print(sorted(m for m in sys.modules if m.split('.')[0].startswith('dagster')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"
