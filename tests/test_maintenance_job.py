"""Maintenance through Dagster on a user's own project (a greenhouse's sensor readings): every
table asset has a ``health`` check, the ``maintenance`` job maintains the tables and records
each one's health, a damaged table is reported on its own check while the others are
maintained, and ``rat maintain`` runs the same job from a shell."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys

import dagster as dg
import pyarrow as pa
import pytest

from ratatouille_assets.definitions import build_definitions
from ratatouille_assets.defs.maintenance import CHECK_NAME, JOB_NAME, SCHEDULE_NAME
from ratatouille_assets.lakehouse import duck
from ratatouille_assets.lakehouse.catalog import load_catalog
from ratatouille_assets.lakehouse.write import Window, write_window
from tests.conftest import use_home
from tests.project import make_project

pytestmark = pytest.mark.slow  # dbt parses the project for the definitions: ~30 s a test

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
    select sensor, read_at, cast(read_at as date) as read_date, celsius
    from {{ source('bronze', 'readings') }} where {{ source_window('readings') }}
"""
D0 = dt.date(2023, 9, 1)


def readings(day: dt.date) -> pa.Table:
    n = 24
    return pa.table({"sensor": [f"s{i % 3}" for i in range(n)],
                     "read_at": [dt.datetime.combine(day, dt.time(i)) for i in range(n)],
                     "read_date": [day] * n,
                     "celsius": pa.array([15.0 + (day.day * 7 + i) % 11 * 0.5 for i in range(n)], pa.float64())})


def rows(settings, identifier: str) -> list[tuple]:
    location = load_catalog(settings).load_table(identifier).metadata_location
    return duck.connect(settings).execute(f"SELECT * FROM iceberg_scan('{location}') ORDER BY ALL").fetchall()


@pytest.fixture
def project(tmp_path, monkeypatch):
    settings = use_home(monkeypatch, tmp_path / "rt")
    make_project(tmp_path / "project", monkeypatch, sources=SOURCES, start=D0.isoformat(),
                 models={"silver/readings.sql": SILVER})
    catalog = load_catalog(settings)
    # Twelve daily writes into monthly partitions: twelve small files in September.
    for i in range(12):
        day = D0 + dt.timedelta(days=i)
        write_window(catalog, "bronze.readings", readings(day), window=Window("read_date", day, day),
                     run_id=f"load-{i}", granularity="month")
    return settings, catalog


def test_every_table_has_a_health_check_the_maintenance_job_records(project):
    settings, catalog = project
    defs = build_definitions()
    graph = defs.resolve_asset_graph()
    tables = {k for k in graph.get_all_asset_keys() if graph.get(k).is_materializable}
    checked = {k.asset_key for k in graph.asset_check_keys if k.name == CHECK_NAME}
    assert checked == tables == {dg.AssetKey(["bronze", "readings"]), dg.AssetKey(["silver", "readings"])}
    job = defs.resolve_job_def(JOB_NAME)
    schedule = defs.resolve_schedule_def(SCHEDULE_NAME)
    assert schedule.job_name == JOB_NAME and schedule.cron_schedule == "0 3 * * *"
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING

    # silver.readings exists but one of its data files is gone: its maintenance must refuse.
    day = D0
    write_window(catalog, "silver.readings", readings(day), window=Window("read_date", day, day), run_id="s1")
    lost = catalog.load_table("silver.readings").inspect.files().column("file_path").to_pylist()[0]
    os.remove(lost.removeprefix("file://"))
    before = rows(settings, "bronze.readings")

    with dg.instance_for_test() as instance:
        # Before maintenance, the health check alone (read-only) warns about the small files.
        health_job = defs.resolve_implicit_global_asset_job_def().get_subset(
            asset_selection=set(), asset_check_selection={dg.AssetCheckKey(dg.AssetKey(["bronze", "readings"]), CHECK_NAME)})
        sick = health_job.execute_in_process(instance=instance).get_asset_check_evaluations()
        assert len(sick) == 1 and not sick[0].passed and sick[0].severity == dg.AssetCheckSeverity.WARN
        assert "100% of 12 data files are small" in sick[0].description
        assert len(catalog.load_table("bronze.readings").inspect.files()) == 12  # it changed nothing

        result = job.execute_in_process(instance=instance, raise_on_error=False)
        evaluations = {r.dagster_event.event_specific_data.asset_key.to_user_string(): r.dagster_event.event_specific_data
                       for r in instance.all_logs(result.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION)}
        # The run fails (one table could not be maintained), after maintaining the other.
        assert not result.success
        latest = instance.event_log_storage.get_latest_asset_check_execution_by_key(
            [dg.AssetCheckKey(dg.AssetKey(["bronze", "readings"]), CHECK_NAME)])
        assert next(iter(latest.values())).run_id == result.run_id  # the UI shows this run's result
    assert set(evaluations) == {"bronze/readings", "silver/readings"}
    bronze = evaluations["bronze/readings"]
    assert bronze.passed, bronze.description
    meta = {k: v.value for k, v in bronze.metadata.items()}
    assert meta["maintenance/compacted_files"] == 12 and meta["maintenance/compacted_into"] == 1
    assert meta["health/data_files"] == 1 == len(catalog.load_table("bronze.readings").inspect.files())
    assert meta["health/snapshots"] == len(catalog.load_table("bronze.readings").metadata.snapshots) == 13
    assert meta["health/small_file_ratio"] == 0.0 and meta["health/orphan_bytes"] == 0
    assert rows(settings, "bronze.readings") == before
    silver = evaluations["silver/readings"]
    assert not silver.passed and silver.severity == dg.AssetCheckSeverity.ERROR
    assert os.path.basename(lost) in silver.description and "nothing was deleted" in silver.description


def test_rat_maintain_runs_the_job_for_the_tables_named(project):
    settings, catalog = project
    env = {**os.environ, "RATATOUILLE_KEEP_DAYS": "0", "RATATOUILLE_KEEP_SNAPSHOTS": "1"}
    rat = [sys.executable, "-m", "ratatouille_assets.cli", "maintain"]
    dry = subprocess.run([*rat, "--dry-run", "bronze.readings"], capture_output=True, text=True, env=env, check=True)
    assert "would compact 12 file(s) in 1 group(s), expire 11 snapshot(s)" in dry.stdout
    assert len(catalog.load_table("bronze.readings").inspect.files()) == 12
    dev = subprocess.run([*rat, "bronze.readings"], capture_output=True, text=True,
                         env={**env, "RATATOUILLE_BRANCH": "feature"})
    assert dev.returncode == 2 and "dev mode (RATATOUILLE_BRANCH=feature) never writes main" in dev.stderr
    assert len(catalog.load_table("bronze.readings").inspect.files()) == 12  # untouched
    done = subprocess.run([*rat, "bronze.readings"], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    line = next(line for line in done.stdout.splitlines() if line.startswith("bronze.readings"))
    assert " ok " in line and "12 small file(s) compacted into 1" in line and "12 snapshot(s) expired" in line
    assert "1 table(s) maintained, 0 not healthy" in done.stdout
    table = catalog.load_table("bronze.readings")
    assert len(table.inspect.files()) == 1 and len(table.metadata.snapshots) == 1
    assert len(rows(settings, "bronze.readings")) == 12 * 24
    bad = subprocess.run([*rat, "bronze.nope"], capture_output=True, text=True, env=env)
    assert bad.returncode == 2 and "not a table of this project: bronze.nope" in bad.stderr
