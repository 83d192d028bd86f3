"""A user's own data, not the sample shop: a library's loans (JSON lines, one folder a day, late and
updated records) and its branches (a reference source: CSV files in a folder tree, no days),
declared once in sources.yml, modelled in dbt, with the example shop still beside them.

Asserted on the data that came out, against an independent computation from the landing files.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from ratatouille_assets.definitions import build_definitions
from ratatouille_assets.lakehouse import duck
from ratatouille_assets.lakehouse.catalog import load_catalog
from ratatouille_assets.lakehouse.tables import day_counts
from ratatouille_assets.lakehouse.write import Window
from ratatouille_assets.materialize import run_pipeline
from tests.conftest import use_home
from tests.project import make_project, write_csv

pytestmark = pytest.mark.slow

DAYS = ["2025-02-01", "2025-02-02", "2025-02-03"]
SHOP = ("orders", "order_items", "customers", "products", "fx_rates")

SOURCES = """
loans:
  description: Loans from the library's desk system, one JSON object per line; a return re-sends the loan.
  format: jsonl
  primary_key: [loan_id]
  latest_by: updated_at
  event_time: loaned_at
  late_arrival_days: 1
  columns:
    loan_id: varchar
    branch_id: integer
    loaned_at: timestamp
    minutes: integer
    updated_at: timestamp
branches:
  description: The library's branches, exported whenever they change.
  format: csv
  partitioned: false
  primary_key: [branch_id]
  columns:
    branch_id: integer
    name: varchar
    city: varchar
"""

MODELS = {
    "silver/loans.sql": """
        {{ config(partition_by='loan_date') }}
        with bronze as (
            select * from {{ source('bronze', 'loans') }} where {{ source_window('loans') }}
        ),
        typed as (
            select loan_id, branch_id, loaned_at, cast(loaned_at as date) as loan_date, minutes, updated_at,
                   _landing_date, _source_file,
            from bronze
        ),
        latest as (
            {{ latest_by_key('typed', 'loans') }}
        )
        select *, case when branch_id is null then 'missing_branch' end as _reject_reason from latest
    """,
    "silver/branches.sql": """
        with latest as (
            {{ latest_by_key(source('bronze', 'branches'), 'branches') }}
        )
        select branch_id, name, upper(city) as city from latest
    """,
    "marts/gold/branch_daily.sql": """
        {{ config(partition_by='loan_date') }}
        select l.loan_date, b.city, b.name as branch, count(*) as loans, sum(l.minutes) as minutes
        from {{ ref('loans') }} l join {{ ref('branches') }} b using (branch_id)
        where {{ in_window('l.loan_date') }}
        group by all
    """,
}

SODA = {
    "silver/loans.yml": """
        checks for loans:
          - row_count > 0
          - duplicate_count(loan_id) = 0
    """,
    "gold/branch_daily.yml": """
        checks for branch_daily:
          - min(loans) >= 1
    """,
}


def loan(loan_id: str, branch: int | None, at: str | None, minutes: int, updated: str) -> str:
    return json.dumps({"loan_id": loan_id, "branch_id": branch, "loaned_at": at, "minutes": minutes, "updated_at": updated})


def land(landing: Path) -> None:
    files = {
        "2025-02-01/desk-1.jsonl": [
            loan("L1", 1, "2025-02-01 09:00:00", 30, "2025-02-01 09:00:00"),
            loan("L2", 2, "2025-02-01 23:59:00", 45, "2025-02-01 23:59:00"),
            loan("L3", 1, "2025-02-01 10:00:00", 10, "2025-02-01 10:00:00"),
            loan("L3", 1, "2025-02-01 10:00:00", 10, "2025-02-01 10:00:00"),  # an exact duplicate
        ],
        "2025-02-02/desk-1.jsonl": [
            loan("L4", 2, "2025-02-02 00:01:00", 5, "2025-02-02 00:01:00"),
            loan("L1", 1, "2025-02-01 09:00:00", 95, "2025-02-02 12:00:00"),  # returned: L1 updated, of day 1
            loan("L5", 1, "2025-02-01 18:00:00", 20, "2025-02-01 18:00:00"),  # late: day 1, landed day 2
            loan("L6", 3, None, 15, "2025-02-02 08:00:00"),  # no loan time: belongs to no day -> rejected
        ],
        "2025-02-03/desk-1.jsonl": [
            loan("L7", 3, "2025-02-03 11:00:00", 60, "2025-02-03 11:00:00"),
            loan("L8", None, "2025-02-03 12:00:00", 25, "2025-02-03 12:00:00"),  # no branch -> rejected by the model
        ],
        "2025-02-03/desk-2.jsonl": [loan("L9", 2, "2025-02-03 13:00:00", 40, "2025-02-03 13:00:00")],
    }
    for name, lines in files.items():
        path = landing / "loans" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(lines) + "\n")
    write_csv(landing / "branches" / "2025" / "central.csv", "branch_id,name,city", ["1,Central,Lyon", "2,Harbour,Lyon"])
    write_csv(landing / "branches" / "north.csv", "branch_id,name,city", ["3,North,Lille"])


def independent_gold(landing: Path) -> list[tuple]:
    """gold.branch_daily from the landing files in plain DuckDB, written apart from the models."""
    con = duckdb.connect()
    return con.execute(f"""
        WITH loans AS (
            SELECT * FROM read_json('{landing}/loans/*/*.jsonl', format = 'newline_delimited',
                columns = {{loan_id: 'VARCHAR', branch_id: 'INTEGER', loaned_at: 'TIMESTAMP', minutes: 'INTEGER',
                            updated_at: 'TIMESTAMP'}})
        ),
        latest AS (SELECT * FROM loans QUALIFY row_number() OVER (PARTITION BY loan_id ORDER BY updated_at DESC) = 1),
        branches AS (SELECT * FROM read_csv('{landing}/branches/**/*.csv', header = true))
        SELECT CAST(l.loaned_at AS DATE), upper(b.city), b.name, count(*), sum(l.minutes)
        FROM latest l JOIN branches b USING (branch_id)
        WHERE l.loaned_at IS NOT NULL
        GROUP BY ALL ORDER BY ALL
    """).fetchall()


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        home = tmp_path_factory.mktemp("own")
        settings = use_home(mp, home / "rt")
        make_project(home / "project", mp, sources=SOURCES, models=MODELS, soda=SODA, start="2025-01-01", with_example=True)
        land(Path(settings.landing))
        with dg.instance_for_test() as instance:
            report = run_pipeline(DAYS, instance=instance)
            yield settings, instance, report


def materialization(instance, key: list[str], day: str | None = None) -> dg.AssetMaterialization:
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(key), asset_partitions=[day] if day else None), limit=1
    ).records
    return records[0].asset_materialization


def query(settings, sql: str) -> list[tuple]:
    conn = duck.connect(settings)
    duck.register_iceberg_views(conn, load_catalog(settings))
    return conn.execute(sql).fetchall()


def test_gold_equals_an_independent_computation(lake):
    settings, _, report = lake
    assert report.success and report.checks_failed == 0
    got = query(settings, "SELECT loan_date, city, branch, loans, minutes FROM gold.branch_daily ORDER BY ALL")
    assert got == independent_gold(Path(settings.landing))
    assert len(got) == 5


def test_bronze_counts_per_partition_and_the_reference_table(lake):
    settings, instance, _ = lake
    catalog = load_catalog(settings)
    loans = catalog.load_table("bronze.loans")
    counts = day_counts(loans, Window("_landing_date", dt.date(2025, 2, 1), dt.date(2025, 2, 3)))
    assert {d.isoformat(): n for d, n in counts.items()} == {"2025-02-01": 4, "2025-02-02": 4, "2025-02-03": 3}
    # The three days ran as one bronze run, yet each partition has its own figures.
    for day, rows, files in (("2025-02-01", 4, 1), ("2025-02-02", 4, 1), ("2025-02-03", 3, 2)):
        metadata = materialization(instance, ["bronze", "loans"], day).metadata
        assert (metadata["dagster/row_count"].value, metadata["files"].value) == (rows, files)
    # The reference source: every file of its folder tree, no landing day, an unpartitioned table.
    branches = catalog.load_table("bronze.branches")
    assert branches.spec().is_unpartitioned()
    rows = query(settings, "SELECT branch_id, name, city, _source_file FROM bronze.branches ORDER BY 1")
    assert rows == [(1, "Central", "Lyon", "branches/2025/central.csv"), (2, "Harbour", "Lyon", "branches/2025/central.csv"),
                    (3, "North", "Lille", "branches/north.csv")]
    assert "_landing_date" not in branches.schema().column_names
    assert materialization(instance, ["bronze", "branches"]).metadata["dagster/row_count"].value == 3


def test_silver_deduplicates_files_late_records_and_rejects_rows_of_no_day(lake):
    settings, instance, _ = lake
    silver = dict(query(settings, "SELECT loan_id, (loan_date, minutes) FROM silver.loans"))
    assert set(silver) == {"L1", "L2", "L3", "L4", "L5", "L7", "L9"}
    assert silver["L1"] == (dt.date(2025, 2, 1), 95)  # the update (landed day 2) wins, in day 1
    assert silver["L5"][0] == dt.date(2025, 2, 1)  # late: landed day 2, belongs to day 1
    rejected = query(settings, "SELECT loan_id, _reject_reason, loan_date, _landing_date FROM silver.loans__rejected ORDER BY 1")
    assert rejected == [("L6", "missing_partition_value", None, dt.date(2025, 2, 2)),
                        ("L8", "missing_branch", dt.date(2025, 2, 3), dt.date(2025, 2, 3))]
    # One materialization per day with that day's own rows and rejected rows, from one ranged dbt run.
    catalog = load_catalog(settings)
    window = Window("loan_date", dt.date(2025, 2, 1), dt.date(2025, 2, 3))
    for table in ("silver.loans", "gold.branch_daily"):
        in_iceberg = day_counts(catalog.load_table(table), window)
        for day in DAYS:
            metadata = materialization(instance, table.split("."), day).metadata
            assert metadata["dagster/row_count"].value == in_iceberg[dt.date.fromisoformat(day)], (table, day)
    assert [materialization(instance, ["silver", "loans"], d).metadata["rejected_rows"].value for d in DAYS] == [0, 1, 1]
    assert materialization(instance, ["silver", "loans"], DAYS[0]).metadata["rejected/table"].value == "silver.loans__rejected"


def test_a_model_in_any_folder_takes_its_layer_from_the_folder(lake):
    graph = build_definitions().resolve_asset_graph()
    node = graph.get(dg.AssetKey(["gold", "branch_daily"]))
    assert node.group_name == "gold"
    assert {k.to_user_string() for k in node.parent_keys} == {"silver/loans", "silver/branches"}


def test_the_example_shop_beside_it_does_not_fail_the_users_days(lake):
    """The shop has no files on the user's days: its checks are skipped, not failed."""
    settings, instance, report = lake
    assert report.checks_failed == 0
    for source in SHOP:
        metadata = materialization(instance, ["bronze", source], DAYS[0]).metadata
        assert metadata["dagster/row_count"].value == 0
        assert "nothing to check" in metadata["soda/skipped"].value
    metadata = materialization(instance, ["silver", "orders"], DAYS[0]).metadata
    assert "nothing to check" in metadata["soda/skipped"].value
    # ...while the user's own checks ran and passed on the same days.
    ran = {(e.asset_key.to_user_string(), e.check_name): e.passed for e in
           (r.event_log_entry.dagster_event.event_specific_data for r in instance.get_records_for_run(
               report.runs[-1], of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION).records)}
    assert ran[("silver/loans", "duplicate_count_loan_id_eq_0")] is True
    assert ran[("gold/branch_daily", "min_loans_gte_1")] is True
    # The shop's Soda checks (row_count > 0 would fail on an empty day) did not run; its dbt tests,
    # which pass on no rows, did.
    assert ("silver/orders", "row_count_gt_0") not in ran and ("gold/kpi_daily_sales", "row_count_gt_0") not in ran
    assert ran[("silver/orders", "unique_orders_order_id")] is True
    assert all(ran.values())


def test_a_second_load_replaces_the_reference_table(lake):
    settings, instance, _ = lake
    landing = Path(settings.landing)
    (landing / "branches" / "north.csv").unlink()
    write_csv(landing / "branches" / "2025" / "central.csv", "branch_id,name,city", ["1,Central Library,Lyon", "4,East,Metz"])
    report = run_pipeline([], instance=instance, layers=("bronze",))
    assert report.success
    rows = query(settings, "SELECT branch_id, name, city FROM bronze.branches ORDER BY 1")
    assert rows == [(1, "Central Library", "Lyon"), (4, "East", "Metz")]  # replaced, not appended
    assert materialization(instance, ["bronze", "branches"]).metadata["dagster/row_count"].value == 2
