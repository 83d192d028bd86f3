"""A long bronze window loads its sources side by side (ratatouille_assets/materialize.py): one run
per source, some in this process and some in a worker process, all recorded in DAGSTER_HOME; each
table equal to plain DuckDB over its landing files; a source that fails fails its own run only."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from ratatouille_assets.lakehouse.catalog import load_catalog
from ratatouille_assets.materialize import PARALLEL_MIN_DAYS, run_pipeline
from ratatouille_assets.settings import get_settings
from tests.conftest import use_home
from tests.project import make_project, write_csv

pytestmark = pytest.mark.slow

START = dt.date(2022, 3, 1)
DAYS = PARALLEL_MIN_DAYS + 5

SOURCES = """
meter:
  format: csv
  columns:
    meter_id: integer
    kwh: decimal(10,3)
visits:
  format: csv
  columns:
    visit_id: bigint
    page: varchar
strict:
  format: csv
  on_bad_file: fail
  columns:
    id: integer
"""


def _land(landing: Path) -> None:
    for i in range(DAYS):
        d = (START + dt.timedelta(days=i)).isoformat()
        write_csv(landing / "meter" / d / "m.csv", "meter_id,kwh", [f"{m},{i + m / 8:.3f}" for m in range(3)])
        for part in range(2):
            write_csv(landing / "visits" / d / f"v{part}.csv", "visit_id,page",
                      [f"{i * 1000 + part * 100 + r},/p{r % 4}" for r in range(i % 5 + 1)])
        write_csv(landing / "strict" / d / "s.csv", "id", ["oops" if i == 7 else str(i)])


def _expected(landing: Path, source: str, columns: str) -> list[tuple]:
    return duckdb.connect().execute(f"""
        SELECT CAST(regexp_extract(filename, '(\\d{{4}}-\\d{{2}}-\\d{{2}})', 1) AS DATE), {columns}
        FROM read_csv('{landing}/{source}/*/*.csv', header = true, filename = true, all_varchar = true)
        ORDER BY ALL""").fetchall()


def test_a_long_window_loads_its_sources_side_by_side_one_run_each(tmp_path, monkeypatch):
    settings = use_home(monkeypatch, tmp_path / "rt")
    make_project(tmp_path / "project", monkeypatch, sources=SOURCES, start=START.isoformat())
    settings = get_settings()
    landing = Path(settings.landing)
    _land(landing)
    days = [(START + dt.timedelta(days=i)).isoformat() for i in range(DAYS)]
    instance = dg.DagsterInstance.get()
    try:
        report = run_pipeline(days, instance=instance, layers=("bronze",), raise_on_error=False)
        runs = {r: instance.get_run_by_id(r) for r in report.runs}
        # One run per source, over the whole window; the strict source's bad file fails its run only.
        assert len(runs) == 3
        starts = {r: instance.all_logs(r, of_type=dg.DagsterEventType.STEP_START) for r in runs}
        assert all(len(events) == 1 for events in starts.values())  # one source per run
        by_source = {starts[r][0].step_key.removeprefix("bronze_"): run for r, run in runs.items()}
        assert set(by_source) == {"meter", "visits", "strict"}
        assert {s: r.status for s, r in by_source.items()} == {
            "meter": dg.DagsterRunStatus.SUCCESS, "visits": dg.DagsterRunStatus.SUCCESS,
            "strict": dg.DagsterRunStatus.FAILURE}
        assert not report.success
        assert all(r.tags["dagster/asset_partition_range_start"] == days[0] for r in runs.values())
        failure = [e for e in instance.all_logs(by_source["strict"].run_id, of_type=dg.DagsterEventType.STEP_FAILURE)]
        assert failure and f"strict/{days[7]}/s.csv" in failure[0].dagster_event.event_specific_data.error.to_string()
        # The runs were made by two processes: this one and a worker.
        pids = {events[0].dagster_event.pid for events in starts.values()}
        assert os.getpid() in pids and len(pids) == 2
    finally:
        instance.dispose()

    # Each table equals plain DuckDB over its files; the failed source committed nothing.
    catalog = load_catalog(settings)
    conn = duckdb.connect()
    for source, columns in (("meter", "meter_id, kwh"), ("visits", "visit_id, page")):
        conn.register("arrow", catalog.load_table(f"bronze.{source}").scan().to_arrow())
        got = conn.execute(f"SELECT _landing_date, {', '.join(c + '::VARCHAR' for c in columns.split(', '))} "
                           "FROM arrow ORDER BY ALL").fetchall()
        expected = _expected(landing, source, columns)
        if source == "meter":  # decimal(10,3) as stored: three places
            expected = [(d, m, f"{float(k):.3f}") for d, m, k in expected]
        assert got == expected, source
        assert len({row[0] for row in got}) == DAYS
    assert not catalog.table_exists("bronze.strict")
