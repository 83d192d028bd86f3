"""Dev mode on a user's own data (a courier's deliveries): with RATATOUILLE_BRANCH=feature a changed
gold model is built, checked and read on branch `feature` while main stays byte for byte as it
was; `rat branch diff` names the table and its days, `publish` makes main equal to the branch,
`drop` removes it.
"""

from __future__ import annotations

import hashlib
import textwrap
from pathlib import Path

import dagster as dg
import pytest

from ratatouille_assets import cli
from ratatouille_assets.lakehouse import duck
from ratatouille_assets.lakehouse.catalog import load_catalog
from ratatouille_assets.materialize import run_pipeline
from ratatouille_assets.settings import get_settings
from tests.conftest import use_home
from tests.project import make_project, write_csv

pytestmark = pytest.mark.slow

DAYS = ["2024-05-01", "2024-05-02", "2024-05-03"]

SOURCES = """
deliveries:
  description: Parcels handed over by the couriers, one CSV a day.
  format: csv
  primary_key: [parcel_id]
  event_time: delivered_at
  columns:
    parcel_id: varchar
    courier: varchar
    delivered_at: timestamp
    kg: decimal(6,2)
"""

SILVER = """
    {{ config(partition_by='delivery_date') }}
    select parcel_id, courier, delivered_at, cast(delivered_at as date) as delivery_date, kg, _landing_date
    from {{ source('bronze', 'deliveries') }} where {{ source_window('deliveries') }}
"""
GOLD = """
    {{ config(partition_by='delivery_date') }}
    select delivery_date, courier, count(*) as parcels
    from {{ ref('deliveries') }} where {{ in_window('delivery_date') }}
    group by all
"""
GOLD_CHANGED = """
    {{ config(partition_by='delivery_date') }}
    select delivery_date, courier, count(*) as parcels, sum(kg) as kg
    from {{ ref('deliveries') }} where {{ in_window('delivery_date') }}
    group by all
"""
# Only the branch's table has kg: a check that reads main instead would fail on the missing column.
SODA = {"gold/courier_daily.yml": "checks for courier_daily:\n  - missing_count(kg) = 0\n  - row_count > 0\n"}

TABLES = ("bronze.deliveries", "silver.deliveries", "gold.courier_daily")


def main_state(catalog) -> dict[str, tuple]:
    """Per table: main's snapshot id, the sha256 of every data file main reads, and main's rows (its
    snapshot read with that snapshot's schema: plain DuckDB with snapshot_from_id)."""
    state = {}
    conn = duck.connect()
    for name in TABLES:
        table = catalog.load_table(name)
        main = table.metadata.refs["main"].snapshot_id
        files = sorted(hashlib.sha256(Path(t.file.file_path).read_bytes()).hexdigest()
                       for t in table.scan(snapshot_id=main).plan_files())
        rows = conn.execute(
            f"SELECT * FROM iceberg_scan('{table.metadata_location}', snapshot_from_id={main}) ORDER BY ALL").fetchall()
        state[name] = (main, files, rows)
    return state


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        home = tmp_path_factory.mktemp("dev")
        settings = use_home(mp, home / "rt")
        project = make_project(home / "project", mp, sources=SOURCES, start=DAYS[0],
                               models={"silver/deliveries.sql": SILVER, "gold/courier_daily.sql": GOLD})
        for i, day in enumerate(DAYS):
            write_csv(Path(settings.landing) / "deliveries" / day / "handover.csv", "parcel_id,courier,delivered_at,kg",
                      [f"P{i}{n},{'ana' if n % 2 else 'bo'},{day} 1{n}:00:00,{n + 0.5}" for n in range(5)])
        with dg.instance_for_test() as instance:
            run_pipeline(DAYS, instance=instance)
            catalog = load_catalog(settings)
            before = main_state(catalog)

            (project / "dbt_project" / "models" / "gold" / "courier_daily.sql").write_text(textwrap.dedent(GOLD_CHANGED))
            soda = Path(get_settings().soda_dir) / "gold"
            soda.mkdir(parents=True, exist_ok=True)
            (soda / "courier_daily.yml").write_text(SODA["gold/courier_daily.yml"])
            mp.setenv("RATATOUILLE_BRANCH", "feature")
            get_settings.cache_clear()
            report = run_pipeline(DAYS, instance=instance, layers=("gold",))
            yield settings, instance, catalog, before, report


def test_dev_mode_builds_and_checks_on_the_branch_and_leaves_main_byte_identical(lake, capfd):
    settings, instance, catalog, before, report = lake
    assert main_state(catalog) == before
    # Iceberg keeps one schema per table: a reader of the current schema sees the branch's new
    # column on main too, NULL in every one of main's rows (documented); nothing else changes.
    gold_now = catalog.load_table("gold.courier_daily")
    current = duck.connect().execute(
        f"SELECT * EXCLUDE (kg), count(kg) OVER () FROM iceberg_scan('{gold_now.metadata_location}') ORDER BY ALL").fetchall()
    assert [row[:-1] for row in current] == before["gold.courier_daily"][2] and {row[-1] for row in current} == {0}
    assert report.checks_failed == 0 and report.checks_passed >= 2  # the branch's kg was checked, and passed

    gold = catalog.load_table("gold.courier_daily")
    head = gold.metadata.refs["feature"].snapshot_id
    conn = duck.connect()
    on_branch = conn.execute(f"SELECT delivery_date, courier, parcels, kg FROM {duck.scan_sql(gold.metadata_location, head)} "
                             "ORDER BY ALL").fetchall()
    expected = conn.execute(f"""
        SELECT cast(delivered_at AS DATE), courier, count(*), sum(kg)
        FROM iceberg_scan('{catalog.load_table("silver.deliveries").metadata_location}') GROUP BY ALL ORDER BY ALL
    """).fetchall()
    assert on_branch == expected and len(on_branch) == 6
    assert [t for t in TABLES if "feature" in catalog.load_table(t).metadata.refs] == ["gold.courier_daily"]

    # Dagster shows the branch on the materializations and runs it wrote.
    record = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(["gold", "courier_daily"]), asset_partitions=[DAYS[1]]), limit=1
    ).records[0]
    assert record.asset_materialization.metadata["iceberg/branch"].value == "feature"
    assert instance.get_run_by_id(record.run_id).tags["ratatouille/branch"] == "feature"

    # A reader in dev mode sees the branch where it exists and main elsewhere.
    assert cli.main(["query", "--csv", "SELECT sum(kg) FROM gold.courier_daily"]) == 0
    assert float(capfd.readouterr().out.splitlines()[1]) == pytest.approx(sum(r[3] for r in expected))


def test_diff_names_the_table_and_days_publish_makes_main_the_branch_and_drop_removes_it(lake, capfd):
    settings, instance, catalog, before, _ = lake
    assert cli.main(["branch", "diff", "feature"]) == 0
    out = capfd.readouterr().out
    assert "gold.courier_daily: main" in out and "silver" not in out and "bronze" not in out
    assert all(day in out for day in DAYS)

    head = catalog.load_table("gold.courier_daily").metadata.refs["feature"].snapshot_id
    assert cli.main(["branch", "publish", "feature"]) == 0
    gold = catalog.load_table("gold.courier_daily")
    assert gold.current_snapshot().snapshot_id == head
    conn = duck.connect()
    assert conn.execute(f"SELECT * FROM iceberg_scan('{gold.metadata_location}') ORDER BY ALL").fetchall() == \
        conn.execute(f"SELECT * FROM {duck.scan_sql(gold.metadata_location, head)} ORDER BY ALL").fetchall()
    assert main_state(catalog)["silver.deliveries"] == before["silver.deliveries"]

    assert cli.main(["branch", "drop", "feature"]) == 0
    assert all("feature" not in catalog.load_table(t).metadata.refs for t in TABLES)
    assert cli.main(["branch", "list"]) == 0
    assert "no branches" in capfd.readouterr().out
