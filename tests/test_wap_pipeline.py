"""Write-audit-publish through Dagster on a user's own data (a greenhouse's temperature sensors).

A day with impossible readings fails silver's blocking check: main's snapshot and rows stay as
they were (plain DuckDB `iceberg_scan` on main's metadata), the run's audit branch holds the bad
rows and is named in the check's metadata, gold does not run. The fixed file publishes and gold
follows. A failing bronze check holds bronze the same way and nothing downstream runs.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from ratatouille_assets import cli
from ratatouille_assets.lakehouse import duck, wap
from ratatouille_assets.lakehouse.catalog import load_catalog
from ratatouille_assets.materialize import run_pipeline
from tests.conftest import use_home
from tests.project import make_project, write_csv

pytestmark = pytest.mark.slow

DAYS = ["2023-09-01", "2023-09-02", "2023-09-03"]

SOURCES = """
readings:
  description: Temperature readings of the greenhouse sensors, one CSV a day.
  format: csv
  primary_key: [sensor, read_at]
  event_time: read_at
  columns:
    sensor: varchar
    read_at: timestamp
    celsius: double
"""
SILVER = """
    {{ config(partition_by='read_date') }}
    select sensor, read_at, cast(read_at as date) as read_date, celsius, _landing_date
    from {{ source('bronze', 'readings') }} where {{ source_window('readings') }}
"""
GOLD = """
    {{ config(partition_by='read_date') }}
    select read_date, count(*) as readings, min(celsius) as low, max(celsius) as high
    from {{ ref('readings') }} where {{ in_window('read_date') }}
    group by all
"""
SODA = {
    "bronze/readings.yml": "checks for readings:\n  - missing_count(sensor) = 0\n",
    "silver/readings.yml": "checks for readings:\n  - min(celsius) >= -60:\n      name: no impossible cold\n  - row_count > 0\n",
}
HEADER = "sensor,read_at,celsius"


def land(landing: str, day: str, celsius: list[float], sensors: list[str] | None = None) -> None:
    sensors = sensors or [f"s{i}" for i in range(len(celsius))]
    write_csv(Path(landing) / "readings" / day / "sensors.csv", HEADER,
              [f"{s},{day} 0{i}:00:00,{c}" for i, (s, c) in enumerate(zip(sensors, celsius, strict=True))])


def main_of(catalog, name: str) -> tuple[int, list[tuple]]:
    """main's snapshot id and rows, by plain DuckDB over the current metadata file."""
    table = catalog.load_table(name)
    rows = duck.connect().execute(f"SELECT * FROM iceberg_scan('{table.metadata_location}') ORDER BY ALL").fetchall()
    return table.current_snapshot().snapshot_id, rows


def audit_refs(catalog, name: str) -> dict[str, int]:
    return {n: r.snapshot_id for n, r in catalog.load_table(name).metadata.refs.items() if wap.is_audit_branch(n)}


def run_of(instance, report) -> dict[str, set[str]]:
    """The assets each of the report's runs materialized."""
    out = {}
    for run_id in report.runs:
        records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION).records
        out[run_id] = {r.event_log_entry.dagster_event.asset_key.to_user_string() for r in records}
    return out


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        home = tmp_path_factory.mktemp("wap")
        settings = use_home(mp, home / "rt")
        make_project(home / "project", mp, sources=SOURCES, start=DAYS[0], soda=SODA,
                     models={"silver/readings.sql": SILVER, "gold/greenhouse_daily.sql": GOLD})
        for i, day in enumerate(DAYS):
            land(settings.landing, day, [18.0 + i, 19.5 + i, 21.0 + i])
        with dg.instance_for_test() as instance:
            report = run_pipeline(DAYS, instance=instance)
            assert report.success and report.checks_failed == 0
            yield settings, instance, load_catalog(settings)


def _evaluations(instance, run_ids: list[str]) -> list[dg.AssetCheckEvaluation]:
    out = []
    for run_id in run_ids:
        for record in instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION):
            out.append(record.dagster_event.event_specific_data)
    return out


def test_a_bad_day_stays_on_its_audit_branch_and_the_fixed_file_publishes(lake, capsys):
    settings, instance, catalog = lake
    silver_before, gold_before = main_of(catalog, "silver.readings"), main_of(catalog, "gold.greenhouse_daily")
    assert not audit_refs(catalog, "silver.readings") and not audit_refs(catalog, "gold.greenhouse_daily")

    land(settings.landing, DAYS[1], [19.0, -999.0, 20.0])  # a sensor fault on one day
    failed = run_pipeline([DAYS[1]], instance=instance, raise_on_error=False)
    assert not failed.success
    # main is untouched: same snapshot, same rows, read by plain DuckDB on main's metadata.
    assert main_of(catalog, "silver.readings") == silver_before
    assert main_of(catalog, "gold.greenhouse_daily") == gold_before
    # The run's audit branch holds the bad rows, and the check names it.
    held = audit_refs(catalog, "silver.readings")
    assert len(held) == 1
    branch, snapshot_id = next(iter(held.items()))
    table = catalog.load_table("silver.readings")
    on_branch = duck.connect().execute(
        f"SELECT celsius FROM {duck.scan_sql(table.metadata_location, snapshot_id)} WHERE read_date = DATE '{DAYS[1]}' ORDER BY 1"
    ).fetchall()
    assert on_branch == [(-999.0,), (19.0,), (20.0,)]
    failed_checks = [e for e in _evaluations(instance, failed.runs) if not e.passed]
    assert [(e.asset_key.to_user_string(), e.check_name) for e in failed_checks] == [("silver/readings", "no_impossible_cold")]
    assert failed_checks[0].metadata["audit/branch"].value == branch
    assert branch == wap.audit_branch(next(r for r in failed.runs if branch.endswith(r)))
    # What the run's error says to type shows the held rows; `rat branch list` marks the branch.
    capsys.readouterr()
    assert cli.main(["query", "--csv", "--as-of", f"silver.readings={branch}",
                     f"SELECT celsius FROM silver.readings WHERE read_date = DATE '{DAYS[1]}' ORDER BY 1"]) == 0
    assert capsys.readouterr().out.split() == ["celsius", "-999.0", "19.0", "20.0"]
    assert cli.main(["branch", "list"]) == 0
    listed = capsys.readouterr().out
    assert branch in listed and "audit branch: rows a failed check held back" in listed
    # Nothing downstream ran, and neither silver nor gold was reported materialized.
    materialized = set().union(*run_of(instance, failed).values())
    assert "bronze/readings" in materialized
    assert not materialized & {"silver/readings", "gold/greenhouse_daily"}
    assert not audit_refs(catalog, "gold.greenhouse_daily")

    land(settings.landing, DAYS[1], [19.0, 19.5, 20.0])  # the fixed file
    fixed = run_pipeline([DAYS[1]], instance=instance)
    assert fixed.success
    snapshot, rows = main_of(catalog, "silver.readings")
    assert snapshot != silver_before[0]
    assert sorted(r[3] for r in rows if str(r[2]) == DAYS[1]) == [19.0, 19.5, 20.0]
    assert [r for r in rows if str(r[2]) != DAYS[1]] == [r for r in silver_before[1] if str(r[2]) != DAYS[1]]
    _, gold = main_of(catalog, "gold.greenhouse_daily")
    assert [r for r in gold if str(r[0]) == DAYS[1]][0][1:] == (3, 19.0, 20.0)
    assert {"silver/readings", "gold/greenhouse_daily"} <= set().union(*run_of(instance, fixed).values())
    # The good run's branch went with its publication; the failed run's stays until its retention.
    assert audit_refs(catalog, "silver.readings") == held
    record = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(["silver", "readings"]), asset_partitions=[DAYS[1]]), limit=1
    ).records[0]
    assert record.asset_materialization.metadata["iceberg/published"].value == "fast-forward"
    assert int(record.asset_materialization.metadata["iceberg/snapshot_id"].value) == snapshot


def test_a_failing_bronze_check_holds_bronze_and_runs_nothing_downstream(lake):
    settings, instance, catalog = lake
    bronze_before = main_of(catalog, "bronze.readings")
    silver_before = main_of(catalog, "silver.readings")
    land(settings.landing, DAYS[2], [22.0, 23.0], sensors=["s0", ""])  # a reading with no sensor
    failed = run_pipeline([DAYS[2]], instance=instance, raise_on_error=False)
    assert not failed.success
    assert main_of(catalog, "bronze.readings") == bronze_before
    assert main_of(catalog, "silver.readings") == silver_before
    held = audit_refs(catalog, "bronze.readings")
    assert len(held) == 1
    materialized = set().union(*run_of(instance, failed).values())
    assert not materialized & {"bronze/readings", "silver/readings", "gold/greenhouse_daily"}
    bad = [e for e in _evaluations(instance, failed.runs) if not e.passed]
    assert [e.check_name for e in bad] == ["missing_count_sensor_eq_0"]
    assert bad[0].metadata["audit/branch"].value in held
