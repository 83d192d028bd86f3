"""End to end on the embedded default: generated files -> bronze -> silver -> gold through real
Dagster materializations, dbt runs, DuckDB and Iceberg tables. Assertions are on the data."""

from __future__ import annotations

import dataclasses
import math

import dagster as dg
import duckdb
import pytest

from ratatouille_assets.definitions import build_definitions
from ratatouille_assets.demo import run_pipeline
from ratatouille_assets.ingest.generator import SampleSpec, generate
from ratatouille_assets.lakehouse import duck
from ratatouille_assets.lakehouse.catalog import load_catalog
from ratatouille_assets.lakehouse.tables import list_tables
from tests import independent
from tests.conftest import use_home

pytestmark = pytest.mark.slow

SPEC = SampleSpec(days=3, rows_per_day=900, seed=7)
DAYS = [SPEC.day(i) for i in range(SPEC.days)]
LINEAGE = ("_ingested_at", "_run_id")


@dataclasses.dataclass
class Pipeline:
    settings: object
    instance: dg.DagsterInstance
    report: object
    conn: duckdb.DuckDBPyConnection

    def views(self) -> duckdb.DuckDBPyConnection:
        duck.register_iceberg_views(self.conn, load_catalog(self.settings))
        return self.conn

    def content(self, table: str) -> list[tuple]:
        cols = [c for c in self.views().execute(f"SELECT * FROM {table} LIMIT 0").to_arrow_table().column_names
                if c not in LINEAGE]
        return self.conn.execute(f"SELECT {', '.join(cols)} FROM {table} ORDER BY ALL").fetchall()

    def materialize(self, groups: tuple[str, ...], partition_key: str) -> dg.ExecuteInProcessResult:
        defs = build_definitions()
        return dg.materialize(
            list(defs.assets), selection=dg.AssetSelection.groups(*groups), partition_key=partition_key,
            instance=self.instance, resources=dict(defs.resources),
        )


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        settings = use_home(mp, tmp_path_factory.mktemp("pipeline"))
        generate(SPEC, settings.landing)
        with dg.instance_for_test() as instance:
            report = run_pipeline([d.isoformat() for d in DAYS], instance=instance)
            yield Pipeline(settings, instance, report, duck.connect(settings))


def materialization(instance: dg.DagsterInstance, key: list[str], day) -> dg.AssetMaterialization:
    """The latest materialization of one partition of ``key``."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(key), asset_partitions=[day.isoformat()]), limit=1
    ).records
    return records[0].asset_materialization


def data_files_by_partition(settings, table: str) -> dict:
    files: dict = {}
    for f in load_catalog(settings).load_table(table).inspect.files().to_pylist():
        (value,) = f["partition"].values()
        files.setdefault(value, set()).add(f["file_path"])
    return files


def test_every_layer_has_its_tables_and_checks_pass(pipeline):
    tables = set(list_tables(load_catalog(pipeline.settings)))
    for name in ("orders", "order_items", "customers", "products", "fx_rates"):
        assert f"bronze.{name}" in tables and f"silver.{name}" in tables
    assert {"gold.fct_order_lines", "gold.dim_customers", "gold.dim_products", "gold.kpi_daily_sales"} <= tables
    # Every declared check ran and passed: bronze's once per run, silver's and gold's once for the window.
    # (the checks executed with the assets; freshness checks run on their own sensor)
    own = [c for a in build_definitions().assets if isinstance(a, dg.AssetsDefinition) for c in a.check_keys]
    per_layer = {layer: sum(1 for c in own if c.asset_key.path[0] == layer) for layer in ("bronze", "silver", "gold")}
    assert per_layer["bronze"] >= 25 and per_layer["silver"] >= 25 and per_layer["gold"] >= 20  # each declared once
    # Bronze runs once over all the days (or in batches of RATATOUILLE_BRONZE_PARTITIONS_PER_RUN), its checks once a run.
    per_run = pipeline.settings.bronze_partitions_per_run
    bronze_runs = math.ceil(len(DAYS) / per_run) if per_run > 0 else 1
    expected = per_layer["bronze"] * bronze_runs + per_layer["silver"] + per_layer["gold"]
    assert (pipeline.report.checks_passed, pipeline.report.checks_failed, pipeline.report.checks_warned) == (expected, 0, 0)


@pytest.mark.parametrize("day", DAYS)
def test_kpi_daily_sales_equals_independent_computation(pipeline, day):
    conn = pipeline.views()
    got = conn.execute(f"""
        SELECT order_date, country, orders, order_lines, units, revenue, avg_order_value
        FROM gold.kpi_daily_sales WHERE order_date = DATE '{day}' ORDER BY country
    """).fetchall()
    expected = independent.kpi_daily_sales(duckdb.connect(), pipeline.settings.landing, day)
    assert len(expected) >= 5
    assert got == expected


def test_planted_dirt_is_handled(pipeline):
    conn = pipeline.views()
    independent.landing_views(conn, pipeline.settings.landing)
    window = f"BETWEEN DATE '{DAYS[0]}' AND DATE '{DAYS[-1]}'"

    # Duplicates and updates: one silver row per order id, and every order id is accounted for.
    dupes = conn.execute("SELECT count(*) - count(DISTINCT order_id) FROM bronze.orders").fetchone()[0]
    assert dupes > 0, "the generator planted no duplicates"
    assert conn.execute("SELECT count(*) - count(DISTINCT order_id) FROM silver.orders").fetchone()[0] == 0
    silver_ids = conn.execute("SELECT count(*) FROM (SELECT order_id FROM silver.orders UNION ALL SELECT order_id FROM silver.orders__rejected)").fetchone()[0]
    landing_ids = conn.execute(f"SELECT count(*) FROM clean_orders WHERE order_date {window}").fetchone()[0]
    assert silver_ids == landing_ids

    # The latest version wins: updated orders carry their final status.
    expected_status = dict(conn.execute(f"SELECT order_id, status FROM clean_orders WHERE order_date {window}").fetchall())
    got_status = dict(conn.execute("SELECT order_id, status FROM silver.orders").fetchall())
    assert {"shipped", "cancelled", "placed"} <= set(got_status.values())
    assert all(expected_status[k] == v for k, v in got_status.items())

    # Late arrivals: orders of day D delivered in day D+1's files land in day D.
    late = conn.execute(
        "SELECT DISTINCT order_id, CAST(order_ts AS DATE) FROM bronze.orders WHERE CAST(order_ts AS DATE) < _landing_date"
    ).fetchall()
    assert late, "the generator planted no late orders"
    silver_days = dict(conn.execute("SELECT order_id, order_date FROM silver.orders UNION ALL SELECT order_id, order_date FROM silver.orders__rejected").fetchall())
    assert all(silver_days[order_id] == event_day for order_id, event_day in late)

    # Bad rows are split off and counted, by reason.
    unknown = conn.execute(f"""
        SELECT count(*) FROM clean_orders
        WHERE order_date {window} AND currency NOT IN ('USD', 'EUR', 'GBP', 'JPY', 'CHF')
    """).fetchone()[0]
    assert unknown > 0
    rejected = dict(conn.execute("SELECT _reject_reason, count(*) FROM silver.orders__rejected GROUP BY 1").fetchall())
    assert rejected == {"unknown_currency": unknown}
    negative = conn.execute(f"""
        SELECT count(*) FROM clean_items i JOIN clean_orders o USING (order_id)
        WHERE o.order_date {window} AND i.quantity <= 0
    """).fetchone()[0]
    assert negative > 0
    assert conn.execute("SELECT count(*) FROM silver.order_items__rejected WHERE _reject_reason = 'non_positive_quantity'").fetchone()[0] == negative
    # Each day's materialization carries that day's own rejected count; the reasons are the run's.
    per_day = dict(conn.execute("SELECT order_date, count(*) FROM silver.orders__rejected GROUP BY 1").fetchall())
    for day in DAYS:
        metadata = materialization(pipeline.instance, ["silver", "orders"], day).metadata
        assert metadata["rejected_rows"].value == per_day.get(day, 0)
        assert metadata["rejected/unknown_currency"].value == unknown
    assert sum(per_day.values()) == unknown

    # Messy text is normalized.
    countries = {r[0] for r in conn.execute("SELECT DISTINCT country FROM silver.customers").fetchall()}
    assert countries <= {"US", "DE", "FR", "GB", "JP", "CH", "UNKNOWN"}
    assert conn.execute("SELECT count(*) FROM silver.customers WHERE email <> lower(trim(email))").fetchone()[0] == 0
    raw_messy = conn.execute("SELECT count(*) FROM bronze.customers WHERE email <> lower(trim(email))").fetchone()[0]
    assert raw_messy > 0


def test_materializations_report_snapshot_metadata(pipeline):
    catalog = load_catalog(pipeline.settings)
    for key in (["bronze", "orders"], ["silver", "orders"], ["gold", "kpi_daily_sales"], ["gold", "dim_customers"]):
        event = pipeline.instance.get_latest_materialization_event(dg.AssetKey(key))
        metadata = event.asset_materialization.metadata
        table = catalog.load_table(".".join(key))
        assert metadata["iceberg/snapshot_id"].value == str(table.current_snapshot().snapshot_id)
        assert metadata["iceberg/metadata_location"].value == table.metadata_location
        assert metadata["dagster/row_count"].value > 0
        columns = [c.name for c in metadata["dagster/column_schema"].schema.columns]
        assert columns == [f.name for f in table.schema().fields]


def test_gold_is_readable_from_a_plain_duckdb_session(pipeline):
    location = load_catalog(pipeline.settings).load_table("gold.kpi_daily_sales").metadata_location
    con = duckdb.connect()
    for ext in ("avro", "iceberg"):
        con.execute(f"LOAD '{duck.extension_path(ext)}'")
    count = con.execute(f"SELECT count(*) FROM iceberg_scan('{location}')").fetchone()[0]
    assert count == pipeline.views().execute("SELECT count(*) FROM gold.kpi_daily_sales").fetchone()[0] > 0


def test_the_customer_history_is_current_where_the_dimension_is(pipeline):
    conn = pipeline.views()
    cols = "customer_id, email, full_name, country, signup_date, updated_at"
    current = conn.execute(f"SELECT {cols} FROM gold.dim_customers_history WHERE is_current ORDER BY customer_id").fetchall()
    assert current == conn.execute(f"SELECT {cols} FROM gold.dim_customers ORDER BY customer_id").fetchall()
    assert len(current) > 0
    # A version opens at its updated_at and a closed one ends where the next begins.
    bad = conn.execute("""
        SELECT count(*) FROM (SELECT *, lead(valid_from) OVER (PARTITION BY customer_id ORDER BY valid_from) AS next
                              FROM gold.dim_customers_history)
        WHERE valid_from IS DISTINCT FROM updated_at OR valid_to IS DISTINCT FROM next OR is_current <> (next IS NULL)
    """).fetchone()[0]
    assert bad == 0


DAILY = ["bronze.orders", "bronze.order_items", "silver.orders", "silver.order_items", "silver.fx_rates",
         "gold.fct_order_lines", "gold.kpi_daily_sales"]
# Monthly Iceberg partitions (partition_granularity='month'): a day's run rewrites its month's
# file, keeping the month's other days' rows (the content checks below hold them equal).
MONTHLY = ["gold.kpi_daily_sales"]


@pytest.mark.parametrize("day", DAYS[:2])
def test_rematerializing_a_day_changes_nothing_and_touches_only_that_day(pipeline, day):
    tables = DAILY + ["gold.dim_customers", "gold.dim_customers_history", "gold.dim_products"]
    before = {t: pipeline.content(t) for t in tables}
    files_before = {t: data_files_by_partition(pipeline.settings, t) for t in DAILY if t not in MONTHLY}

    key = day.isoformat()
    pipeline.materialize(("bronze",), key)
    result = pipeline.materialize(("silver", "gold"), key)
    assert result.success

    for t in tables:
        assert pipeline.content(t) == before[t], t
    kpi = pipeline.views().execute(
        f"SELECT order_date, country, orders, order_lines, units, revenue, avg_order_value "
        f"FROM gold.kpi_daily_sales WHERE order_date = DATE '{day}' ORDER BY country"
    ).fetchall()
    assert kpi == independent.kpi_daily_sales(duckdb.connect(), pipeline.settings.landing, day)
    for t in files_before:
        files_after = data_files_by_partition(pipeline.settings, t)
        for partition, files in files_before[t].items():
            if partition != day:
                assert files_after[partition] == files, f"{t}: partition {partition} was rewritten by a run for {day}"
        assert files_after[day] != files_before[t][day], f"{t}: partition {day} was not rewritten"


def test_rerunning_the_whole_range_leaves_gold_identical(pipeline):
    gold = ["gold.fct_order_lines", "gold.kpi_daily_sales", "gold.dim_customers", "gold.dim_customers_history", "gold.dim_products"]
    before = {t: pipeline.content(t) for t in gold}
    report = run_pipeline([d.isoformat() for d in DAYS], instance=pipeline.instance)
    assert report.checks_failed == 0
    assert {t: pipeline.content(t) for t in gold} == before
