"""Rollback and time travel through the whole pipeline, on a user's own source (weather stations):
landing -> bronze -> silver -> gold for three days, then a corrected export of two days is loaded;
one day of silver and gold goes back through the Dagster `rollback` job (the UI's way), the whole
gold table through `rat rollback`, and a dbt model reads the lakehouse as of before the correction.

Old contents are captured before the correction with plain DuckDB; every other day is compared
with what it held just before the rollback.
"""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

import dagster as dg
import pytest

from ratatouille_assets import cli
from ratatouille_assets.definitions import build_definitions
from ratatouille_assets.demo import ensure_dagster_home
from ratatouille_assets.lakehouse import duck
from ratatouille_assets.lakehouse.catalog import load_catalog
from ratatouille_assets.lakehouse.timetravel import history
from ratatouille_assets.materialize import run_pipeline
from ratatouille_assets.settings import get_settings
from tests.conftest import use_home
from tests.project import make_project, write_csv

pytestmark = pytest.mark.slow

TODAY = dt.datetime.now(dt.timezone.utc).date()
DAYS = [(TODAY - dt.timedelta(days=n)).isoformat() for n in (6, 5, 4)]

SOURCES = """
weather:
  description: Hourly observations of the weather stations, one CSV export a day.
  format: csv
  primary_key: [station_id, observed_at]
  latest_by: observed_at
  event_time: observed_at
  columns:
    station_id: varchar
    observed_at: timestamp
    temp_c: decimal(5,1)
"""

MODELS = {
    "silver/observations.sql": """
        {{ config(partition_by='obs_date') }}
        select station_id, observed_at, cast(observed_at as date) as obs_date, temp_c, _landing_date
        from {{ source('bronze', 'weather') }} where {{ source_window('weather') }}
    """,
    "gold/station_daily.sql": """
        {{ config(partition_by='obs_date') }}
        select obs_date, station_id, count(*) as observations, min(temp_c) as low, max(temp_c) as high
        from {{ ref('observations') }} where {{ in_window('obs_date') }}
        group by all
    """,
}


def land(landing: Path, day: str, temps: list[str]) -> None:
    rows = [f"{station},{day} {hour:02d}:00:00,{temp}" for station in ("LYS", "CDG") for hour, temp in enumerate(temps)]
    write_csv(landing / "weather" / day / "export.csv", "station_id,observed_at,temp_c", rows)


def by_day(settings, table: str, snapshot_id: int | None = None) -> dict[str, list[tuple]]:
    catalog = load_catalog(settings)
    location = catalog.load_table(table).metadata_location
    conn = duck.connect(settings)
    rows = conn.execute(f"SELECT * EXCLUDE (_landing_date) FROM {duck.scan_sql(location, snapshot_id)} ORDER BY ALL"
                        if table.startswith("silver") else
                        f"SELECT * FROM {duck.scan_sql(location, snapshot_id)} ORDER BY ALL").fetchall()
    out: dict[str, list[tuple]] = {}
    for row in rows:
        day = next(v for v in row if isinstance(v, dt.date) and not isinstance(v, dt.datetime))
        out.setdefault(day.isoformat(), []).append(row)
    return out


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        home = tmp_path_factory.mktemp("rollback")
        settings = use_home(mp, home / "rt")
        make_project(home / "project", mp, sources=SOURCES, models=MODELS, start=DAYS[0])
        ensure_dagster_home(get_settings())
        landing = Path(settings.landing)
        for day in DAYS:
            land(landing, day, ["1.0", "2.0", "3.0"])
        with dg.DagsterInstance.get() as instance:
            run_pipeline(DAYS, instance=instance)
            catalog = load_catalog(settings)
            old = {t: catalog.load_table(t).current_snapshot().snapshot_id for t in ("silver.observations", "gold.station_daily")}
            old_rows = {t: by_day(settings, t) for t in old}
            time.sleep(0.05)
            moment = dt.datetime.now(dt.timezone.utc)
            time.sleep(0.05)
            # A corrected export of the last two days: more hours, other temperatures.
            land(landing, DAYS[1], ["-4.0", "9.5", "10.0", "11.0"])
            land(landing, DAYS[2], ["20.0"])
            run_pipeline(DAYS[1:], instance=instance)
            yield settings, instance, old, old_rows, moment


def test_one_day_of_silver_and_gold_rolls_back_through_the_dagster_job_and_gold_is_recomputed(lake):
    settings, instance, old, old_rows, _ = lake
    defs = build_definitions()
    gold = dg.AssetKey(["gold", "station_daily"])
    seen = dg.evaluate_automation_conditions(defs, instance, asset_selection=dg.AssetSelection.assets(gold))
    assert seen.total_requested == 0

    before = {t: by_day(settings, t) for t in old}
    assert before["gold.station_daily"][DAYS[1]] != old_rows["gold.station_daily"][DAYS[1]]
    job = defs.get_job_def("rollback")
    config = {"table": "silver.observations", "to": str(old["silver.observations"]), "start": DAYS[1]}
    result = job.execute_in_process(run_config={"ops": {"rollback_table": {"config": config}}}, instance=instance)
    assert result.success

    # The UI shows the day's rollback: a materialization of that partition with where it came from.
    record = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(["silver", "observations"]), asset_partitions=[DAYS[1]]), limit=1
    ).records[0]
    metadata = record.asset_materialization.metadata
    assert record.run_id == result.run_id
    assert metadata["rollback/to_snapshot"].value == str(old["silver.observations"])
    assert metadata["dagster/row_count"].value == len(old_rows["silver.observations"][DAYS[1]]) == 6
    assert metadata["rollback/rows_before"].value == 8
    assert instance.get_run_by_id(result.run_id).tags["ratatouille/operation"] == "rollback"

    # Automation sees silver's day changed and asks for that gold day, and only that one.
    after = dg.evaluate_automation_conditions(defs, instance, asset_selection=dg.AssetSelection.assets(gold), cursor=seen.cursor)
    assert after.get_requested_partitions(gold) == {DAYS[1]}

    config = {"table": "gold/station_daily", "to": str(old["gold.station_daily"]), "start": DAYS[1], "end": DAYS[1]}
    assert job.execute_in_process(run_config={"ops": {"rollback_table": {"config": config}}}, instance=instance).success
    for table in old:
        now = by_day(settings, table)
        assert now[DAYS[1]] == old_rows[table][DAYS[1]], table
        assert {d: r for d, r in now.items() if d != DAYS[1]} == {d: r for d, r in before[table].items() if d != DAYS[1]}, table
    assert by_day(settings, "gold.station_daily")[DAYS[2]] != old_rows["gold.station_daily"][DAYS[2]]  # untouched


def test_the_whole_table_rolls_back_from_the_cli_and_history_shows_it(lake, capsys):
    settings, instance, old, old_rows, moment = lake
    assert cli.main(["rollback", "gold.station_daily", "--to", moment.isoformat()]) == 0
    out = capsys.readouterr().out
    assert f"rolled back to snapshot {old['gold.station_daily']}" in out
    assert by_day(settings, "gold.station_daily") == old_rows["gold.station_daily"]
    table = load_catalog(settings).load_table("gold.station_daily")
    newest = history(table)[0]
    assert newest.operation == "rollback" and f"restored snapshot {old['gold.station_daily']}" == newest.note
    assert cli.main(["history", "gold.station_daily", "--limit", "2"]) == 0
    assert "rollback" in capsys.readouterr().out
    # The days the rollback changed each got a materialization in the instance that `rat` uses.
    changed = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(["gold", "station_daily"]), asset_partitions=[DAYS[2]]), limit=1
    ).records[0]
    assert changed.asset_materialization.metadata["rollback/to_snapshot"].value == str(old["gold.station_daily"])

    assert cli.main(["rollback", "gold.station_daily", "--to", "42"]) == 1
    assert "gold.station_daily has no snapshot 42" in capsys.readouterr().err


def test_a_dbt_model_reads_the_lakehouse_as_of_a_point_in_time(lake, tmp_path):
    settings, _, _, old_rows, moment = lake
    from dbt.cli.main import dbtRunner

    from ratatouille_assets.defs.dbt_inprocess import _fresh_duckdb_environment

    project = Path(get_settings().dbt_project_dir)
    sql = "select count(*) as n, max(temp_c) as top from {{ ref('observations') }}"
    counts = {}
    for label, extra in (("now", []), ("then", ["--vars", f"{{ratatouille_as_of: '{moment.isoformat()}'}}"])):
        _fresh_duckdb_environment()  # as a `dbt show` of its own process: views made for this invocation
        result = dbtRunner().invoke([
            "show", "--inline", sql, "--project-dir", str(project), "--profiles-dir", str(project),
            "--target-path", str(tmp_path / label), "--quiet", *extra,
        ])
        assert result.success, result.exception
        counts[label] = tuple(result.result.results[0].agate_table.rows[0])
    assert counts["then"][0] == sum(len(rows) for rows in old_rows["silver.observations"].values()) == 18
    assert float(counts["then"][1]) == 3.0 and counts["now"] != counts["then"]

    # Building a model from the past is refused: it would write old inputs over today's table.
    before = by_day(settings, "silver.observations")
    _fresh_duckdb_environment()
    result = dbtRunner().invoke([
        "run", "--select", "observations", "--project-dir", str(project), "--profiles-dir", str(project),
        "--target-path", str(tmp_path / "run"), "--quiet", "--vars",
        f"{{ratatouille_as_of: '{moment.isoformat()}', min_date: '{DAYS[0]}', max_date: '{DAYS[-1]}'}}",
    ])
    assert not result.success
    assert "is not written over today's table" in str(result.result.results[0].message)
    assert by_day(settings, "silver.observations") == before
