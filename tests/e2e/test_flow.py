"""The automation, for real: webserver and daemon on loopback, a file dropped into landing, the
landing sensor's run, declarative automation on silver and gold, and a 30-day parallel backfill
launched like the UI does — all observed through the GraphQL API and checked on the data."""

from __future__ import annotations

import datetime as dt
import json
import time
from decimal import Decimal
from pathlib import Path

import dagster as dg
import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ratatouille_assets.client import launch_backfill, wait_for_backfill
from ratatouille_assets.demo import ensure_dagster_home, run_pipeline
from ratatouille_assets.ingest.generator import SampleSpec, generate
from ratatouille_assets.lakehouse import duck
from ratatouille_assets.lakehouse.catalog import load_catalog
from ratatouille_assets.settings import get_settings
from tests import independent
from tests.conftest import use_home
from tests.e2e.dagster_dev import DagsterDev

pytestmark = pytest.mark.slow

MATERIALIZATIONS = """
query($key: AssetKeyInput!) {
  assetOrError(assetKey: $key) {
    ... on Asset { assetMaterializations(limit: 200) { partition runId timestamp } }
  }
}
"""
RUNS = """
query($tags: [ExecutionTag!]) {
  runsOrError(filter: {tags: $tags}) { ... on Runs { results { runId status tags { key value } } } }
}
"""
SENSOR_TICKS = """
query($name: String!) {
  sensorOrError(sensorSelector: {repositoryLocationName: "ratatouille", repositoryName: "__repository__", sensorName: $name}) {
    ... on Sensor { sensorState { status ticks(limit: 20) { status timestamp runIds error { message } } } }
  }
}
"""


def materialized_since(dev: DagsterDev, key: list[str], since_ms: float) -> dict[str, set[str]]:
    """partition -> run ids of materializations of ``key`` after ``since_ms``."""
    data = dev.graphql(MATERIALIZATIONS, {"key": {"path": key}})["assetOrError"]
    out: dict[str, set[str]] = {}
    for m in data.get("assetMaterializations", []):
        if float(m["timestamp"]) > since_ms:
            out.setdefault(m["partition"] or "", set()).add(m["runId"])
    return out


def runs_tagged(dev: DagsterDev, key: str, value: str) -> list[dict]:
    return dev.graphql(RUNS, {"tags": [{"key": key, "value": value}]})["runsOrError"]["results"]


def automation_busy(dev: DagsterDev) -> list[dict]:
    return [r for r in runs_tagged(dev, "dagster/from_automation_condition", "true")
            if r["status"] not in ("SUCCESS", "FAILURE", "CANCELED")]


def sensor_ticked(dev: DagsterDev, name: str) -> list[dict]:
    state = dev.graphql(SENSOR_TICKS, {"name": name})["sensorOrError"]["sensorState"]
    return [t for t in state["ticks"] if t["status"] in ("SUCCESS", "SKIPPED")]


def kpi(settings, day: dt.date) -> list[tuple]:
    location = load_catalog(settings).load_table("gold.kpi_daily_sales").metadata_location
    return duck.connect(settings).execute(
        f"SELECT order_date, country, orders, order_lines, units, revenue, avg_order_value "
        f"FROM iceberg_scan('{location}') WHERE order_date = DATE '{day}' ORDER BY country"
    ).fetchall()


# --- a late file -> sensor -> automation ------------------------------------------------------

TODAY = dt.datetime.now(dt.UTC).date()
RECENT = SampleSpec(start=TODAY - dt.timedelta(days=5), days=5, rows_per_day=300, seed=21)


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    """Five recent days materialized (the automation's lookback covers them), then `make dev`."""
    with pytest.MonkeyPatch.context() as mp:
        home = tmp_path_factory.mktemp("flow")
        mp.setenv("RATATOUILLE_SENSOR_INTERVAL_SECONDS", "5")
        settings = use_home(mp, home)
        ensure_dagster_home(settings)
        generate(RECENT, settings.landing)
        with dg.DagsterInstance.get() as instance:
            run_pipeline([RECENT.day(i).isoformat() for i in range(RECENT.days)], instance=instance)
        with DagsterDev(home, log_name="dagster-dev-flow") as dev:
            yield dev, settings
    get_settings.cache_clear()


def test_late_file_runs_bronze_then_automation_recomputes_exactly_the_affected_days(live):
    dev, settings = live
    d0, d1 = RECENT.day(0), RECENT.day(1)
    # The sensor's first tick takes the demo's files as processed: no run for them.
    dev.wait_for(lambda: sensor_ticked(dev, "landing_files"), timeout=120, what="the landing sensor's first tick")
    assert not [r for r in runs_tagged(dev, "ratatouille/trigger", "landing")]

    # A late file for an old day: one more order (and its line) for day d1, delivered now.
    before = {row[1]: row for row in kpi(settings, d1)}
    dropped_ms = time.time() * 1000
    orders = Path(settings.landing) / "orders" / d1.isoformat() / "late-arrival.jsonl"
    orders.write_text(json.dumps({
        "order_id": "O-LATE-1", "customer_id": 1, "order_ts": f"{d1}T12:00:00", "status": "placed",
        "currency": "USD", "ship_country": "us", "updated_at": f"{d1}T12:00:00",
    }) + "\n")
    items = Path(settings.landing) / "order_items" / d1.isoformat() / "late-arrival.parquet"
    pq.write_table(pa.table({
        "order_id": ["O-LATE-1"], "line_no": pa.array([1], pa.int32()), "product_id": pa.array([1], pa.int64()),
        "quantity": pa.array([2], pa.int32()), "unit_price": pa.array([Decimal("10.00")], pa.decimal128(12, 2)),
        "order_ts": pa.array([dt.datetime.combine(d1, dt.time(12))], pa.timestamp("us")),
    }), items)

    # The sensor launches one bronze run per source and range of days it saw change (here: d1) ...
    def bronze_runs():
        runs = runs_tagged(dev, "ratatouille/trigger", "landing")
        done = [r for r in runs if r["status"] in ("SUCCESS", "FAILURE", "CANCELED")]
        return runs if len(runs) == 2 and len(done) == 2 else None
    runs = dev.wait_for(bronze_runs, timeout=240, interval=2, what="the two bronze runs of the sensor")
    assert {r["status"] for r in runs} == {"SUCCESS"}
    tags = [{t["key"]: t["value"] for t in r["tags"]} for r in runs]
    ranges = {(t["dagster/asset_partition_range_start"], t["dagster/asset_partition_range_end"]) for t in tags}
    assert ranges == {(d1.isoformat(), d1.isoformat())}

    # ... then automation recomputes silver and gold for d1 and for d0 (whose late records d1's
    # landing day may hold), and nothing else. It may take two rounds (one per bronze run), so wait
    # for the data to show the new order, then for the daemon to go quiet, before judging.
    expected_us = lambda b: (b[2] + 1, b[3] + 1, b[4] + 2, b[5] + 20)  # noqa: E731 orders, lines, units, revenue
    dev.wait_for(lambda: {r[1]: r for r in kpi(settings, d1)}["US"][2:6] == expected_us(before["US"]),
                 timeout=480, interval=3, what="gold kpi_daily_sales to show the late order")
    expected = {d0.isoformat(), d1.isoformat()}
    recomputed = ("silver/orders", "silver/order_items", "gold/fct_order_lines", "gold/kpi_daily_sales")
    # Both days recomputed (on a loaded machine the second round can start well after the first) ...
    dev.wait_for(lambda: all(expected <= set(materialized_since(dev, key.split("/"), dropped_ms)) for key in recomputed),
                 timeout=480, interval=3, what="automation to recompute both days")
    for _ in range(2):  # ... then quiet, and still quiet after a few automation ticks
        dev.wait_for(lambda: not automation_busy(dev), timeout=300, interval=3, what="automation runs to finish")
        time.sleep(15)
    for key in recomputed:
        assert set(materialized_since(dev, key.split("/"), dropped_ms)) == expected, key
    for key in (["silver", "fx_rates"], ["silver", "customers"], ["gold", "dim_customers"]):
        assert materialized_since(dev, key, dropped_ms) == {}, key
    automation_runs = runs_tagged(dev, "dagster/from_automation_condition", "true")
    assert automation_runs and all(r["status"] == "SUCCESS" for r in automation_runs)

    # The data: only d1's US row changed, and gold equals the independent computation.
    after = {row[1]: row for row in kpi(settings, d1)}
    assert {c: r for c, r in after.items() if c != "US"} == {c: r for c, r in before.items() if c != "US"}
    assert after == {r[1]: r for r in independent.kpi_daily_sales(duckdb.connect(), settings.landing, d1)}


# --- a 30-day backfill, launched like the UI --------------------------------------------------

# Recent days, inside the automation's lookback: a backfill over them is exactly where automation
# could compete, so it keeps running beside the backfill.
BACKFILL = SampleSpec(start=dt.date.today() - dt.timedelta(days=33), days=30, rows_per_day=120, seed=9)


@pytest.fixture(scope="module")
def empty_dev(tmp_path_factory):
    """`make dev` on an empty lakehouse, its landing sensor stopped once it has ticked (the automation
    sensor runs on), then data."""
    with pytest.MonkeyPatch.context() as mp:
        home = tmp_path_factory.mktemp("backfill")
        mp.setenv("RATATOUILLE_SENSOR_INTERVAL_SECONDS", "5")
        settings = use_home(mp, home)
        ensure_dagster_home(settings)
        with DagsterDev(home, log_name="dagster-dev-backfill") as dev:
            dev.wait_for(lambda: sensor_ticked(dev, "landing_files"), timeout=120, what="landing_files to tick")
            stop_sensor(dev, "landing_files")
            generate(BACKFILL, settings.landing)
            yield dev, settings
    get_settings.cache_clear()


RUN_DETAIL = """
query($id: ID!) { runOrError(runId: $id) { ... on Run { runId assetSelection { path } tags { key value } } } }
"""


def stop_sensor(dev: DagsterDev, name: str) -> None:
    """What the UI's toggle does: stop the sensor's instigation state."""
    sensor = dev.graphql(SENSOR_TICKS.replace("sensorState {", "id sensorState {"), {"name": name})["sensorOrError"]
    result = dev.graphql(
        "mutation($id: String!) { stopSensor(id: $id) {"
        " __typename ... on StopSensorMutationResult { instigationState { status } } ... on PythonError { message } } }",
        {"id": sensor["id"]},
    )["stopSensor"]
    assert result["__typename"] == "StopSensorMutationResult", result
    assert result["instigationState"]["status"] == "STOPPED"


def test_thirty_day_backfill_matches_independent_gold_with_one_bronze_write_per_table(empty_dev):
    dev, settings = empty_dev
    days = [BACKFILL.day(i) for i in range(BACKFILL.days)]
    started = time.monotonic()
    backfill_id = launch_backfill(dev.url, days[0].isoformat(), days[-1].isoformat())
    status = wait_for_backfill(dev.url, backfill_id, timeout=1200)
    elapsed = time.monotonic() - started
    assert status["status"] == "COMPLETED_SUCCESS", status
    runs = status["runs"]
    assert all(r["status"] == "SUCCESS" for r in runs)
    # Automation ran beside the backfill and launched nothing for the days it covered, during it or
    # after it (two more ticks): the backfill's materializations leave it nothing to do.
    ended = time.time()
    dev.wait_for(lambda: sum(t["timestamp"] > ended for t in sensor_ticked(dev, "propagate_silver_gold")) >= 2,
                 timeout=120, what="two automation ticks after the backfill")
    assert runs_tagged(dev, "dagster/from_automation_condition", "true") == []
    # Bronze: one run per source over the 30 days (one write per table), so the queue runs sources
    # side by side; silver and gold as few single-run dbt invocations as the daemon can group (it
    # requests downstream days as upstream days complete).
    detail = [dev.graphql(RUN_DETAIL, {"id": r["runId"]})["runOrError"] for r in runs]
    bronze = [d for d in detail if all(a["path"][0] == "bronze" for a in d["assetSelection"] or [])]
    assert sorted(a["path"][1] for d in bronze for a in d["assetSelection"]) == sorted(
        ["orders", "order_items", "customers", "products", "fx_rates"]), detail
    assert all(len(d["assetSelection"]) == 1 for d in bronze)
    for d in bronze:
        tags = {t["key"]: t["value"] for t in d["tags"]}
        assert (tags["dagster/asset_partition_range_start"], tags["dagster/asset_partition_range_end"]) == (
            days[0].isoformat(), days[-1].isoformat())
    # How many waves the daemon makes depends on when upstream days complete (4 to 6 seen, more on
    # a loaded machine); what matters is a few runs for 30 days, never one per day.
    others = [(d["runId"][:8], sorted("/".join(a["path"]) for a in d["assetSelection"] or [])) for d in detail if d not in bronze]
    assert len(others) <= 8, others
    catalog = load_catalog(settings)
    for source in ("orders", "order_items", "customers", "products", "fx_rates"):
        # One write (to the run's audit branch) and its publication.
        assert len(catalog.load_table(f"bronze.{source}").metadata.metadata_log) == 2, source
    print(f"30-day backfill: {len(runs)} runs in {elapsed:.0f}s")

    conn = duck.connect(settings)
    duck.register_iceberg_views(conn, load_catalog(settings))
    for table, key in [("bronze.orders", "_landing_date"), ("gold.kpi_daily_sales", "order_date")]:
        got = {r[0] for r in conn.execute(f"SELECT DISTINCT {key} FROM {table}").fetchall()}
        assert got == set(days), table
    assert conn.execute("SELECT count(*) - count(DISTINCT (order_id, line_no)) FROM gold.fct_order_lines").fetchone()[0] == 0
    expected_lines = conn.execute(
        "SELECT count(*) FROM (SELECT DISTINCT order_id, line_no FROM bronze.order_items)").fetchone()[0]
    assert conn.execute("SELECT count(*) FROM silver.order_items").fetchone()[0] + \
        conn.execute("SELECT count(*) FROM silver.order_items__rejected").fetchone()[0] == expected_lines
    gold = conn.execute(
        "SELECT order_date, country, orders, order_lines, units, revenue, avg_order_value "
        "FROM gold.kpi_daily_sales ORDER BY order_date, country").fetchall()
    reference = independent.kpi_daily_sales_range(duckdb.connect(), settings.landing, days[0], days[-1])
    assert gold == reference


def test_a_backfill_without_dates_covers_only_new_landing_days_and_cancel_stops_its_runs(empty_dev):
    from ratatouille_assets.client import _missing_plan, backfill_status, cancel_backfill, launch_plan
    from ratatouille_assets.layers import LAYERS

    dev, settings = empty_dev
    days = [BACKFILL.day(i) for i in range(BACKFILL.days)]
    materialized = dev.graphql(MATERIALIZATIONS, {"key": {"path": ["bronze", "orders"]}})["assetOrError"]
    if {m["partition"] for m in materialized["assetMaterializations"]} != {d.isoformat() for d in days}:
        pytest.skip("needs the 30-day backfill above to have run")
    assert _missing_plan(dev.url, LAYERS) == {}  # everything landed is loaded

    # Two new days land: exactly they are planned, for every source and the daily models.
    new = SampleSpec(start=days[-1] + dt.timedelta(days=1), days=2, rows_per_day=120, seed=9)
    generate(new, settings.landing)
    plan = _missing_plan(dev.url, LAYERS)
    first, last = new.day(0).isoformat(), new.day(1).isoformat()
    assert plan[("bronze", "orders")] == (first, last) and plan[("gold", "kpi_daily_sales")] == (first, last)
    assert {r for r in plan.values() if r is not None} == {(first, last)}

    # Launched, then cancelled at once: the backfill ends CANCELED and none of its runs is left running.
    backfill_id = launch_plan(dev.url, plan, "new days")
    dev.wait_for(lambda: backfill_status(dev.url, backfill_id)["runs"], timeout=180, what="the backfill's first run")
    status = cancel_backfill(dev.url, backfill_id)
    assert status["status"] == "CANCELED", status
    assert all(r["status"] in ("SUCCESS", "CANCELED", "FAILURE") for r in status["runs"]), status["runs"]
