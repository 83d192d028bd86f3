"""Quality gates with real Soda scans over real Iceberg tables, and their effect on Dagster runs."""

from __future__ import annotations

import datetime as dt
import shutil
import warnings
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ratatouille_assets.definitions import build_definitions
from ratatouille_assets.ingest.generator import SampleSpec, generate
from ratatouille_assets.lakehouse.catalog import load_catalog
from ratatouille_assets.lakehouse.write import Window, write_window
from ratatouille_assets.quality.audit import audit_table
from ratatouille_assets.quality.sodacl import SodaConfigError, check_name, load_checks, parse_file
from ratatouille_assets.quality.twins import ChecksDeclaredTwice
from ratatouille_assets.settings import get_settings
from tests.conftest import use_home

ROOT = Path(__file__).resolve().parent.parent
D1, D2 = dt.date(2024, 1, 1), dt.date(2024, 1, 2)


def silver_orders(rows: list[dict]) -> pa.Table:
    base = {"order_id": None, "customer_id": 1, "order_ts": dt.datetime(2024, 1, 1, 20), "order_date": D1,
            "status": "placed", "currency": "EUR", "ship_country": "DE", "updated_at": dt.datetime(2024, 1, 1, 20)}
    return pa.Table.from_pylist([{**base, **r} for r in rows])


def write_orders(settings, rows: list[dict], day: dt.date = D1) -> str:
    result = write_window(load_catalog(settings), "silver.orders", silver_orders(rows),
                          window=Window("order_date", day, day), run_id="test")
    return result.metadata_location


def outcomes_by_name(settings, location: str, day: dt.date = D1) -> dict:
    return {o.name: o for o in audit_table("silver.orders", location, window=Window("order_date", day, day), settings=settings)}


def test_check_names_are_stable_identifiers():
    assert check_name("row_count > 0") == "row_count_gt_0"
    assert check_name("missing_count(order_id) = 0") == "missing_count_order_id_eq_0"
    assert check_name("missing_percent(x) < 5%") == "missing_percent_x_lt_5_pct"
    checks = load_checks(ROOT / "soda")
    assert {d.layer for d in checks.values()} == {"bronze", "silver", "gold"}
    assert len(checks) == 14  # every table of every layer
    warn_only = [c.name for c in checks["silver.customers"].checks if not c.blocking]
    assert warn_only == ["names_mostly_present"]


def test_clean_partition_passes_every_check(settings):
    rows = [{"order_id": f"O{i}", "customer_id": i, "ship_country": c, "currency": cur}
            for i, (c, cur) in enumerate([("DE", "EUR"), ("US", "USD"), ("GB", "GBP"), ("UNKNOWN", "CHF")])]
    outcomes = outcomes_by_name(settings, write_orders(settings, rows))
    assert len(outcomes) == len(load_checks(settings.soda_dir)["silver.orders"].checks)
    assert {n: o.outcome for n, o in outcomes.items() if not o.passed} == {}


def test_each_kind_of_dirt_fails_exactly_its_check(settings):
    rows = [
        {"order_id": "O1"},
        {"order_id": "O1"},                                   # duplicate key: a dbt test's, not Soda's
        {"order_id": "O2", "currency": "XXX"},                # unknown currency: a dbt test's too
        {"order_id": "O3", "customer_id": None},              # missing customer
        {"order_id": "O4", "ship_country": " de"},            # not canonical
        {"order_id": "O5", "status": "lost"},                 # invalid status
        {"order_id": "O6", "status": "gone"},                 # invalid status
    ]
    outcomes = outcomes_by_name(settings, write_orders(settings, rows))
    failed = {n: o for n, o in outcomes.items() if not o.passed}
    assert set(failed) == {"missing_count_customer_id_eq_0", "country_codes_canonical", "invalid_count_status_eq_0"}
    assert all(o.outcome == "fail" and o.blocks for o in failed.values())
    status = failed["invalid_count_status_eq_0"]
    assert status.value == 2 and status.failing_rows == 2
    assert status.thresholds["fail"]  # the threshold the value was compared with
    assert sorted(s["order_id"] for s in status.samples) == ["O5", "O6"]  # sample failing keys
    assert [s["order_id"] for s in failed["missing_count_customer_id_eq_0"].samples] == ["O3"]


def test_checks_see_only_the_partition_just_written(settings):
    write_orders(settings, [{"order_id": "O1", "status": "lost"}], day=D1)
    location = write_orders(settings, [{"order_id": "O9", "order_date": D2, "order_ts": dt.datetime(2024, 1, 2, 22)}], day=D2)
    assert all(o.passed for o in outcomes_by_name(settings, location, day=D2).values())
    assert not outcomes_by_name(settings, location, day=D1)["invalid_count_status_eq_0"].passed


def test_freshness_is_measured_against_the_end_of_the_partition(settings):
    stale = {"order_id": "O1", "order_ts": dt.datetime(2023, 12, 30, 8), "order_date": D1}
    fresh = {"order_id": "O2", "order_ts": dt.datetime(2024, 1, 1, 23)}
    name = "newest_order_within_a_day_of_the_window_end"
    assert not outcomes_by_name(settings, write_orders(settings, [stale]))[name].passed
    assert outcomes_by_name(settings, write_orders(settings, [fresh]))[name].passed


def copy_soda(tmp_path: Path, monkeypatch) -> Path:
    soda = tmp_path / "soda"
    shutil.copytree(ROOT / "soda", soda)
    monkeypatch.setenv("RATATOUILLE_SODA_DIR", str(soda))
    get_settings.cache_clear()
    return soda


def test_changing_a_threshold_in_yaml_changes_the_outcome(settings, tmp_path, monkeypatch):
    soda = copy_soda(tmp_path, monkeypatch)
    location = write_orders(get_settings(), [{"order_id": f"O{i}"} for i in range(3)])
    assert outcomes_by_name(get_settings(), location)["row_count_gt_0"].passed
    text = (soda / "example" / "silver" / "orders.yml").read_text().replace("- row_count > 0", "- row_count > 10:\n      name: row_count_gt_0")
    (soda / "example" / "silver" / "orders.yml").write_text(text)
    outcome = outcomes_by_name(get_settings(), location)["row_count_gt_0"]
    assert outcome.outcome == "fail" and outcome.value == 3


def test_bad_soda_files_are_named(tmp_path):
    bad = tmp_path / "silver" / "orders.yml"
    bad.parent.mkdir()
    bad.write_text("checks for order:\n  - row_count > 0\n")
    with pytest.raises(SodaConfigError, match="orders.yml: expected exactly one section 'checks for orders:'"):
        parse_file(bad, "silver")
    bad.write_text("checks for orders:\n  - row_count > 0\n  - row_count > 0\n")
    with pytest.raises(SodaConfigError, match="both get the name 'row_count_gt_0'"):
        parse_file(bad, "silver")


def test_a_soda_check_that_repeats_a_dbt_test_is_named_when_definitions_load(tmp_path, monkeypatch, caplog):
    soda = copy_soda(tmp_path, monkeypatch)
    with warnings.catch_warnings(record=True) as caught:  # the example declares each check once
        warnings.simplefilter("always")
        build_definitions()
    assert not [w for w in caught if issubclass(w.category, ChecksDeclaredTwice)]

    orders = soda / "example" / "silver" / "orders.yml"
    orders.write_text(orders.read_text() + (
        "  - duplicate_count(order_id) = 0\n"
        "  - invalid_count(currency) = 0:\n      valid values: [USD, EUR]\n"
        "  - duplicate_count(customer_id) = 0\n"                      # no dbt test of it
        "  - missing_count(order_id) = 0:\n      filter: status = 'placed'\n"  # a subset: not the same check
        "  - invalid_count(currency) = 0:\n      valid values: [USD]\n      valid length: 3\n      name: currency_rules\n"
    ))
    lines = soda / "example" / "gold" / "fct_order_lines.yml"
    lines.write_text(lines.read_text() + "  - values in (product_id) must exist in dim_products (product_id)\n")
    with warnings.catch_warnings(record=True) as caught, caplog.at_level("WARNING", logger="dagster.builtin"):
        warnings.simplefilter("always")
        build_definitions()
    messages = sorted(str(w.message) for w in caught if issubclass(w.category, ChecksDeclaredTwice))
    assert len(messages) == 3
    logged = sorted(r.getMessage() for r in caplog.records if r.getMessage().startswith("ChecksDeclaredTwice: "))
    assert logged == [f"ChecksDeclaredTwice: {m}" for m in messages]  # what `rat validate` prints
    assert messages[0].startswith("gold.fct_order_lines: the existence of each product_id in dim_products (product_id) "
                                  "is checked twice, by the dbt test relationships_fct_order_lines_product_id")
    assert messages[1].startswith("silver.orders: the accepted values of currency is checked twice")
    assert messages[2].startswith("silver.orders: the uniqueness of order_id is checked twice, by the dbt test unique_orders_order_id")
    for message in messages:
        assert str(ROOT / "dbt_project" / "models" / "example") in message and str(soda / "example") in message


# --- gates in real Dagster runs -------------------------------------------------------------

@pytest.fixture(scope="module")
def bronze_loaded(tmp_path_factory):
    """Two days of sample data with bronze materialized; each test runs silver and gold itself."""
    with pytest.MonkeyPatch.context() as mp:
        home = tmp_path_factory.mktemp("gates")
        settings = use_home(mp, home)
        generate(SampleSpec(days=2, rows_per_day=300, seed=3), settings.landing)
        with dg.instance_for_test() as instance:
            defs = build_definitions()
            for day in ("2024-01-01", "2024-01-02"):
                dg.materialize(list(defs.assets), selection=dg.AssetSelection.groups("bronze"), partition_key=day,
                               instance=instance, resources=dict(defs.resources))
            yield home, instance


def run_silver_gold(instance, partition_key: str = "2024-01-01") -> dg.ExecuteInProcessResult:
    defs = build_definitions()
    return dg.materialize(list(defs.assets), selection=dg.AssetSelection.groups("silver", "gold"),
                          partition_key=partition_key, instance=instance, resources=dict(defs.resources),
                          raise_on_error=False)


def materialized(result: dg.ExecuteInProcessResult) -> set[str]:
    return {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()
            for e in [e.event_specific_data.materialization]}


def checks(result: dg.ExecuteInProcessResult) -> dict[str, tuple[bool, str]]:
    return {f"{e.asset_key.to_user_string()}:{e.check_name}": (e.passed, e.severity.value)
            for e in result.get_asset_check_evaluations()}


def test_blocking_check_on_silver_stops_gold_and_warn_does_not(bronze_loaded, tmp_path):
    home, instance = bronze_loaded
    with pytest.MonkeyPatch.context() as mp:
        use_home(mp, home)
        soda = copy_soda(tmp_path, mp)

        # A warn-only check that fails: reported WARN, gold still materializes.
        path = soda / "example" / "silver" / "orders.yml"
        original = path.read_text()
        path.write_text(original + "  - row_count < 5:\n      name: tiny_partition\n      warn: when >= 5\n")
        result = run_silver_gold(instance)
        assert result.success
        assert checks(result)["silver/orders:tiny_partition"] == (False, "WARN")
        assert {"silver/orders", "gold/fct_order_lines", "gold/kpi_daily_sales"} <= materialized(result)

        # The same rule as a fail threshold: silver's new rows stay on the run's audit branch (main
        # does not move, nothing is reported materialized) and gold does not run.
        path.write_text(original + "  - row_count < 5:\n      name: tiny_partition\n")
        catalog = load_catalog(get_settings())
        published = catalog.load_table("silver.orders").current_snapshot().snapshot_id
        result = run_silver_gold(instance)
        assert not result.success
        assert checks(result)["silver/orders:tiny_partition"] == (False, "ERROR")
        done = materialized(result)
        assert not done & {"silver/orders", "gold/fct_order_lines", "gold/kpi_daily_sales"}
        table = catalog.load_table("silver.orders")
        assert table.current_snapshot().snapshot_id == published
        failed = next(e for e in result.get_asset_check_evaluations() if e.check_name == "tiny_partition")
        branch = failed.metadata["audit/branch"].value
        assert branch == f"audit-{result.run_id}" and branch in table.metadata.refs
        assert int(failed.metadata["audit/snapshot_id"].value) == table.metadata.refs[branch].snapshot_id
        # Unrelated branches still complete (dimensions do not depend on orders).
        assert {"silver/customers", "gold/dim_customers"} <= done


def test_dbt_test_failure_is_a_blocking_asset_check(bronze_loaded):
    graph = build_definitions().resolve_asset_graph()
    specs = {k.name: graph.get_check_spec(k) for k in graph.asset_check_keys}
    assert specs["unique_orders_order_id"].blocking
    assert specs["missing_count_customer_id_eq_0"].blocking
    assert not specs["names_mostly_present"].blocking


def test_quarantined_files_are_metadata_and_a_warning_check(settings):
    generate(SampleSpec(days=1, rows_per_day=300, seed=5), settings.landing)
    day_dir = Path(settings.landing) / "order_items" / "2024-01-01"
    good_rows = sum(pq.read_metadata(p).num_rows for p in day_dir.glob("*.parquet"))
    (day_dir / "broken.parquet").write_bytes(b"PAR1 not really parquet")
    defs = build_definitions()
    with dg.instance_for_test() as instance:
        result = dg.materialize(list(defs.assets), selection=dg.AssetSelection.assets(dg.AssetKey(["bronze", "order_items"])),
                                partition_key="2024-01-01", instance=instance, resources=dict(defs.resources))
        assert result.success  # one bad file does not stop the day
        (event,) = result.get_asset_materialization_events()
        metadata = event.event_specific_data.materialization.metadata
        assert metadata["quarantined_files"].value == 1
        assert metadata["dagster/row_count"].value == good_rows
        check = checks(result)["bronze/order_items:no_quarantined_files"]
        assert check == (False, "WARN")
    sidecar = Path(settings.quarantine) / "order_items" / "2024-01-01" / "broken.parquet.reason.json"
    assert "corrupt_parquet" in sidecar.read_text()


def test_a_reference_check_on_a_missing_table_says_what_to_build_first(settings, tmp_path, monkeypatch):
    soda = tmp_path / "soda"
    (soda / "silver").mkdir(parents=True)
    (soda / "silver" / "orders.yml").write_text(
        "checks for orders:\n"
        "  - row_count > 0\n"
        "  - values in (customer_id) must exist in customers (customer_id):\n"
        "      name: customers_exist\n"
    )
    monkeypatch.setenv("RATATOUILLE_SODA_DIR", str(soda))
    get_settings.cache_clear()
    settings = get_settings()
    location = write_orders(settings, [{"order_id": "O1", "customer_id": 7}])

    outcomes = outcomes_by_name(settings, location)
    assert outcomes["row_count_gt_0"].outcome == "pass"  # the other checks still run
    missing = outcomes["customers_exist"]
    assert (missing.outcome, missing.blocks) == ("error", True)
    assert "silver.customers, which does not exist yet: materialize silver.customers first" in missing.message

    customers = pa.table({"customer_id": pa.array([8], pa.int64())})
    write_window(load_catalog(settings), "silver.customers", customers, window=None, run_id="test")
    outcomes = outcomes_by_name(settings, location)
    assert outcomes["customers_exist"].outcome == "fail" and outcomes["customers_exist"].failing_rows == 1


def test_a_scan_window_holds_whole_days_of_a_timestamp_and_only_its_chosen_days():
    """The filter Soda's view of a window gets: a TIMESTAMP partition column's rows are in the window
    when their day is (not only at midnight), and a window of chosen days holds just those."""
    import duckdb

    from ratatouille_assets.quality.audit import window_filter

    values = ["2024-01-01 00:00:00", "2024-01-01 23:59:59", "2024-01-02 10:00:00", "2024-01-03 08:00:00"]
    relation = "(VALUES " + ", ".join(f"(TIMESTAMP '{v}')" for v in values) + ") t(seen_at)"
    conn = duckdb.connect()

    def kept(window: Window) -> list[str]:
        return [str(r[0]) for r in conn.execute(f"SELECT seen_at FROM {relation} WHERE {window_filter(window)} ORDER BY 1").fetchall()]

    assert kept(Window("seen_at", D1, D1)) == values[:2]
    assert kept(Window.of_days("seen_at", [D1, dt.date(2024, 1, 3)])) == [*values[:2], values[3]]


def test_a_soda_checks_labels_do_not_hide_a_twin_but_its_rules_do(tmp_path):
    from ratatouille_assets.quality.twins import _soda_judges

    path = tmp_path / "silver" / "orders.yml"
    path.parent.mkdir()
    path.write_text(
        "checks for orders:\n"
        "  - duplicate_count(order_id) = 0:\n      name: key_once\n      attributes: {owner: sales}\n      fail: when > 0\n"
        "  - missing_count(order_id) = 0:\n      missing values: ['n/a']\n"
    )
    dataset = parse_file(path, "silver")
    labelled, ruled = dataset.checks
    assert _soda_judges(dataset, labelled).kind == "unique"
    assert _soda_judges(dataset, ruled) is None  # 'n/a' counts as missing too: another check than not_null
