"""Years of daily history in one go: 2,000 days of a source that is not the shop, landing -> gold in
one bronze run and one dbt run (one Iceberg commit per table), checked day by day against plain
DuckDB over the landing files; and two bronze backfills over overlapping days at the same time."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from ratatouille_assets.lakehouse import duck
from ratatouille_assets.lakehouse.catalog import load_catalog
from ratatouille_assets.materialize import run_pipeline
from ratatouille_assets.settings import get_settings
from tests.concurrency import race
from tests.conftest import use_home
from tests.project import make_project, write_csv

pytestmark = pytest.mark.slow

START = dt.date(2019, 1, 1)
DAYS = 2_000
METERS = 3

SOURCES = """
meter:
  description: Smart-meter readings; a meter may re-send a reading (a later sent_at wins) or send it a day late.
  format: csv
  primary_key: [meter_id, read_at]
  latest_by: sent_at
  event_time: read_at
  late_arrival_days: 1
  partition_granularity: month
  columns:
    meter_id: integer
    read_at: timestamp
    kwh: decimal(10,3)
    sent_at: timestamp
sites:
  format: csv
  partitioned: false
  primary_key: [meter_id]
  columns:
    meter_id: integer
    site: varchar
"""

MODELS = {
    "silver/readings.sql": """
        {{ config(partition_by='read_day') }}
        with typed as (
            select meter_id, read_at, cast(read_at as date) as read_day, kwh, sent_at, _landing_date, _source_file
            from {{ source('bronze', 'meter') }} where {{ source_window('meter') }}
        ),
        latest as ({{ latest_by_key('typed', 'meter') }})
        select meter_id, read_at, read_day, kwh, _landing_date from latest
    """,
    "silver/sites.sql": """
        with latest as ({{ latest_by_key(source('bronze', 'sites'), 'sites') }})
        select meter_id, site from latest
    """,
    "gold/site_daily.sql": """
        {{ config(partition_by='read_day', partition_granularity='year') }}
        select r.read_day, s.site, count(*) as readings, sum(r.kwh) as kwh
        from {{ ref('readings') }} r join {{ ref('sites') }} s using (meter_id)
        where {{ in_window('r.read_day') }}
        group by all
    """,
}


def day(i: int) -> dt.date:
    return START + dt.timedelta(days=i)


def land(landing: Path, days: int) -> None:
    """One file a day: each meter's reading at 06:00; every 7th day meter 1 re-sends it (new kwh,
    later sent_at); every 10th day meter 2's reading of the day before arrives late."""
    for i in range(days):
        d = day(i)
        rows = [f"{m},{d} 06:00:00,{(i * 7 + m * 3) % 50 + m / 8:.3f},{d} 06:05:00" for m in range(1, METERS + 1)]
        if i % 7 == 0:
            rows.append(f"1,{d} 06:00:00,{i % 13 + 0.5:.3f},{d} 09:00:00")
        if i % 10 == 0 and i:
            rows.append(f"2,{day(i - 1)} 18:00:00,{i % 11 + 0.25:.3f},{d} 00:10:00")
        write_csv(landing / "meter" / d.isoformat() / "reads.csv", "meter_id,read_at,kwh,sent_at", rows)
    write_csv(landing / "sites" / "sites.csv", "meter_id,site", ["1,north", "2,north", "3,south"])


def independent(landing: Path) -> dict[str, list[tuple]]:
    """Per landing day, silver day and gold row, from the files in plain DuckDB, apart from the models."""
    con = duckdb.connect()
    con.execute(f"""
        CREATE VIEW reads AS SELECT *, CAST(regexp_extract(filename, '(\\d{{4}}-\\d{{2}}-\\d{{2}})', 1) AS DATE) AS landed
        FROM read_csv('{landing}/meter/*/*.csv', header = true, filename = true,
                      columns = {{meter_id: 'INTEGER', read_at: 'TIMESTAMP', kwh: 'DECIMAL(10,3)', sent_at: 'TIMESTAMP'}})
    """)
    con.execute("""
        CREATE VIEW latest AS SELECT * FROM reads
        QUALIFY row_number() OVER (PARTITION BY meter_id, read_at ORDER BY sent_at DESC) = 1
    """)
    sites = f"read_csv('{landing}/sites/*.csv', header = true)"
    return {
        "landed": con.execute("SELECT landed, count(*) FROM reads GROUP BY 1 ORDER BY 1").fetchall(),
        "silver": con.execute("SELECT CAST(read_at AS DATE), count(*) FROM latest GROUP BY 1 ORDER BY 1").fetchall(),
        "gold": con.execute(f"""
            SELECT CAST(l.read_at AS DATE), s.site, count(*), sum(l.kwh) FROM latest l JOIN {sites} s USING (meter_id)
            GROUP BY ALL ORDER BY ALL
        """).fetchall(),
    }


def query(settings, sql: str) -> list[tuple]:
    conn = duck.connect(settings)
    duck.register_iceberg_views(conn, load_catalog(settings))
    return conn.execute(sql).fetchall()


def per_partition_row_counts(instance: dg.DagsterInstance, key: list[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    cursor = None
    while True:  # newest first, page by page: a partition's latest materialization wins
        page = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=dg.AssetKey(key)), limit=5_000, cursor=cursor)
        for record in page.records:
            m = record.asset_materialization
            counts.setdefault(m.partition, m.metadata["dagster/row_count"].value)
        if not page.has_more:
            return counts
        cursor = page.cursor


def commits(table) -> int:
    """Metadata versions written after the table's creation: one per commit."""
    return len(table.metadata.metadata_log)


@pytest.fixture(scope="module")
def history(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        home = tmp_path_factory.mktemp("history")
        settings = use_home(mp, home / "rt")
        make_project(home / "project", mp, sources=SOURCES, models=MODELS, start=START.isoformat())
        land(Path(settings.landing), DAYS)
        days = [day(i).isoformat() for i in range(DAYS)]
        with dg.instance_for_test() as instance:
            report = run_pipeline(days, instance=instance)
            yield settings, instance, report
    get_settings.cache_clear()


def test_two_thousand_days_load_in_one_run_per_layer_with_one_write_per_table(history):
    settings, _, report = history
    assert report.success and report.checks_failed == 0
    # One run for the reference source, one for all 2,000 days of bronze, one dbt run for silver and gold.
    assert len(report.runs) == 3
    catalog = load_catalog(settings)
    # Two commits per table: the write (to the run's audit branch) and its publication (main
    # fast-forwarded to the audited snapshot), whatever the number of days.
    for name in ("bronze.meter", "silver.readings", "gold.site_daily", "bronze.sites", "silver.sites"):
        assert commits(catalog.load_table(name)) == 2, name
        assert set(catalog.load_table(name).metadata.refs) == {"main"}, name
    # Month partitions for bronze (~66 files, not 2,000), year partitions for gold; silver stays daily.
    assert len(catalog.load_table("bronze.meter").inspect.files()) <= DAYS // 28 + 1
    assert len(catalog.load_table("gold.site_daily").inspect.files()) <= DAYS // 365 + 1
    summary = catalog.load_table("bronze.meter").current_snapshot().summary.additional_properties
    assert summary["ratatouille.days"] == str(DAYS) and summary["ratatouille.files"] == str(DAYS)
    assert summary["ratatouille.window"] == f"_landing_date:{day(0)}..{day(DAYS - 1)}"


def test_every_day_equals_plain_duckdb_over_the_landing_files(history):
    settings, instance, _ = history
    expected = independent(Path(settings.landing))
    landed = query(settings, "SELECT _landing_date, count(*) FROM bronze.meter GROUP BY 1 ORDER BY 1")
    assert landed == expected["landed"] and len(landed) == DAYS
    silver = query(settings, "SELECT read_day, count(*) FROM silver.readings GROUP BY 1 ORDER BY 1")
    assert silver == expected["silver"]
    gold = query(settings, "SELECT read_day, site, readings, kwh FROM gold.site_daily ORDER BY ALL")
    assert gold == expected["gold"]

    # Every Dagster partition is materialized, each with its own day's row count.
    assert per_partition_row_counts(instance, ["bronze", "meter"]) == {d.isoformat(): n for d, n in expected["landed"]}
    assert per_partition_row_counts(instance, ["silver", "readings"]) == {d.isoformat(): n for d, n in expected["silver"]}
    gold_days: dict[str, int] = {}
    for d, *_ in expected["gold"]:
        gold_days[d.isoformat()] = gold_days.get(d.isoformat(), 0) + 1
    assert per_partition_row_counts(instance, ["gold", "site_daily"]) == gold_days


# --- two backfills over overlapping days of one table, at once --------------------------------

RACE_DAYS = 90


def _backfill(first: int, last: int, barrier, results) -> None:
    """A bronze backfill of days first..last in its own process (as a second `rat materialize` or run worker)."""
    from ratatouille_assets.definitions import build_definitions
    from ratatouille_assets.materialize import _range

    defs = build_definitions()
    barrier.wait()
    with dg.DagsterInstance.get() as instance:
        result = dg.materialize(
            list(defs.assets), selection=[dg.AssetKey(["bronze", "meter"])], resources=dict(defs.resources),
            instance=instance, tags=_range(day(first).isoformat(), day(last).isoformat()), raise_on_error=False,
        )
    results.put(((first, last), result.success))


def test_two_bronze_backfills_over_overlapping_days_both_succeed_and_equal_one_clean_load(tmp_path, monkeypatch):
    settings = use_home(monkeypatch, tmp_path / "rt")
    make_project(tmp_path / "project", monkeypatch, sources=SOURCES, models=MODELS, start=START.isoformat())
    land(Path(settings.landing), RACE_DAYS)
    # The instance exists before its runs do, as in a deployment (two processes creating Dagster's
    # SQLite storage at the same instant race in Dagster's own schema creation).
    from ratatouille_assets.demo import ensure_dagster_home

    ensure_dagster_home(settings)
    with dg.DagsterInstance.get():
        pass
    # Ranges that overlap by a month, started together: their commits conflict, both must land.
    ranges = [(0, 59), (30, RACE_DAYS - 1)]
    outcome = race(_backfill, lambda i: ranges[i], processes=2)
    assert outcome == {(0, 59): True, (30, RACE_DAYS - 1): True}

    columns = "meter_id, read_at, kwh, sent_at, _landing_date, _source_file"
    got = query(settings, f"SELECT {columns} FROM bronze.meter ORDER BY ALL")
    clean = duckdb.connect().execute(f"""
        SELECT meter_id, read_at, kwh, sent_at,
               CAST(regexp_extract(filename, '(\\d{{4}}-\\d{{2}}-\\d{{2}})', 1) AS DATE),
               regexp_extract(filename, 'meter/.*$')
        FROM read_csv('{settings.landing}/meter/*/*.csv', header = true, filename = true,
                      columns = {{meter_id: 'INTEGER', read_at: 'TIMESTAMP', kwh: 'DECIMAL(10,3)', sent_at: 'TIMESTAMP'}})
        ORDER BY ALL
    """).fetchall()
    assert got == clean
    # Each overlapping day holds one writer's rows, never both.
    per_day = query(settings, "SELECT _landing_date, count(DISTINCT _run_id) FROM bronze.meter GROUP BY 1")
    assert {n for _, n in per_day} == {1} and len(per_day) == RACE_DAYS
