"""The server configuration for real: every table, the landing zone and the quarantine on an
S3-protocol server over HTTP on loopback (moto), the Iceberg catalog and Dagster's storage on a
real PostgreSQL (Debian's, a throwaway cluster). Assertions are on the data that came out."""

from __future__ import annotations

import dataclasses
import datetime as dt
import glob
import json
import logging
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import dagster as dg
import psycopg2
import pyarrow as pa
import pytest

from ratatouille_assets.defs.automation import LandingCursor, state
from ratatouille_assets.definitions import build_definitions
from ratatouille_assets.demo import run_pipeline, summary
from ratatouille_assets.ingest.generator import SampleSpec, generate
from ratatouille_assets.ingest.landing import S3LandingZone, landing_zone
from ratatouille_assets.ingest.sources import load_sources
from ratatouille_assets.lakehouse import duck, s3
from ratatouille_assets.lakehouse.catalog import catalog_properties, load_catalog
from ratatouille_assets.lakehouse.write import RetryPolicy, Window, write_window
from ratatouille_assets.settings import Settings, get_settings
from tests.concurrency import race
from tests.conftest import use_home
from tests.test_automation import _fresh_load_context, tick  # noqa: F401  (the autouse fixture applies here too)

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
SPEC = SampleSpec(days=2, rows_per_day=400, seed=11)
DAYS = [SPEC.day(i).isoformat() for i in range(SPEC.days)]
GOLD = ("gold.fct_order_lines", "gold.dim_customers", "gold.dim_products", "gold.kpi_daily_sales")
LINEAGE = ("_ingested_at", "_run_id")
SERVER_VARIABLES = (
    "RATATOUILLE_WAREHOUSE", "RATATOUILLE_CATALOG_URI", "RATATOUILLE_CATALOG_PASSWORD", "RATATOUILLE_LANDING",
    "RATATOUILLE_QUARANTINE", "RATATOUILLE_S3_ENDPOINT", "RATATOUILLE_S3_REGION", "RATATOUILLE_S3_ACCESS_KEY_ID",
    "RATATOUILLE_S3_SECRET_ACCESS_KEY",
)

logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto's request log


def use_server(mp_: pytest.MonkeyPatch, home: Path, s3_srv, pg, name: str) -> Settings:
    """Settings for the server stack, as .env.example sets them: bucket and database ``name``."""
    s3_srv.client().create_bucket(Bucket=name)
    pg.create_database(name)
    # The password comes separately, as from a Kubernetes Secret next to a URI in a ConfigMap.
    mp_.setenv("RATATOUILLE_CATALOG_URI", f"postgresql://{pg.user}@{pg.host}:{pg.port}/{name}")
    mp_.setenv("RATATOUILLE_CATALOG_PASSWORD", pg.password)
    mp_.setenv("RATATOUILLE_WAREHOUSE", f"s3://{name}/warehouse")
    mp_.setenv("RATATOUILLE_S3_ENDPOINT", s3_srv.endpoint)
    mp_.setenv("RATATOUILLE_S3_REGION", s3_srv.region)
    mp_.setenv("RATATOUILLE_S3_ACCESS_KEY_ID", s3_srv.access_key_id)
    mp_.setenv("RATATOUILLE_S3_SECRET_ACCESS_KEY", s3_srv.secret_access_key)
    for var, value in {"HOST": pg.host, "PORT": str(pg.port), "USER": pg.user, "PASSWORD": pg.password, "DB": name}.items():
        mp_.setenv(f"DAGSTER_PG_{var}", value)
    mp_.setenv("DAGSTER_COMPUTE_LOG_DIR", str(home / "compute-logs"))
    return use_home(mp_, home)


def gold_content(settings: Settings) -> dict[str, tuple[list[str], list[tuple]]]:
    conn = duck.connect(settings)
    duck.register_iceberg_views(conn, load_catalog(settings))
    out = {}
    for table in GOLD:
        cols = [c for c in conn.execute(f"SELECT * FROM {table} LIMIT 0").to_arrow_table().column_names if c not in LINEAGE]
        out[table] = (cols, conn.execute(f"SELECT {', '.join(cols)} FROM {table} ORDER BY ALL").fetchall())
    conn.close()
    return out


@pytest.fixture(scope="module")
def embedded_gold(tmp_path_factory):
    """The same sample data through the embedded default (local folder, SQLite): the reference."""
    with pytest.MonkeyPatch.context() as mp_:
        for var in SERVER_VARIABLES:
            mp_.delenv(var, raising=False)
        settings = use_home(mp_, tmp_path_factory.mktemp("embedded"))
        generate(SPEC, settings.landing)
        with dg.instance_for_test() as instance:
            report = run_pipeline(DAYS, instance=instance)
        assert report.checks_failed == 0
        gold = gold_content(settings)
    get_settings.cache_clear()
    return gold


@dataclasses.dataclass
class StackRun:
    settings: Settings
    instance: dg.DagsterInstance
    runs: list[str]
    home: Path


@pytest.fixture(scope="module")
def stack(tmp_path_factory, s3_srv, pg, embedded_gold):
    """Sample data -> S3 landing -> bronze -> silver -> gold, Dagster's storage from stack/dagster.yaml."""
    with pytest.MonkeyPatch.context() as mp_:
        home = tmp_path_factory.mktemp("stack")
        settings = use_server(mp_, home, s3_srv, pg, "lake")
        generate(SPEC, settings.landing)
        with dg.DagsterInstance.from_config(str(ROOT / "stack")) as instance:
            report = run_pipeline(DAYS, instance=instance)
            assert report.checks_failed == 0
            yield StackRun(settings, instance, report.runs, home)
    get_settings.cache_clear()


def test_settings_put_everything_on_s3_and_postgres(stack):
    s = stack.settings
    assert (s.warehouse, s.landing, s.quarantine) == ("s3://lake/warehouse", "s3://lake/landing", "s3://lake/quarantine")
    assert s.catalog_uri.reveal().startswith("postgresql+psycopg2://")


def test_gold_on_s3_and_postgres_equals_the_embedded_run(stack, embedded_gold, s3_srv, pg):
    got = gold_content(stack.settings)
    assert got == embedded_gold
    assert all(rows for _cols, rows in got.values())

    # The data really is where the settings say: Parquet and metadata in the bucket, the catalog in Postgres.
    keys = [o.key for o in s3.list_objects(s3_srv.client(), "s3://lake/warehouse/gold/")]
    assert any(k.startswith("warehouse/gold/fct_order_lines/data/") and k.endswith(".parquet") for k in keys)
    conn = psycopg2.connect(host=pg.host, port=pg.port, user=pg.user, password=pg.password, dbname="lake")
    with conn, conn.cursor() as cur:
        cur.execute("SELECT table_namespace || '.' || table_name, metadata_location FROM iceberg_tables")
        catalog = dict(cur.fetchall())
        # Dagster's own storage (stack/dagster.yaml) is in the same database: the runs are there.
        cur.execute("SELECT run_id, status FROM runs")
        runs = dict(cur.fetchall())
    conn.close()
    assert set(GOLD) <= set(catalog)
    assert all(loc.startswith("s3://lake/warehouse/") for loc in catalog.values())
    assert {runs[r] for r in stack.runs} == {"SUCCESS"}

    # Materializations carry row counts and the snapshot of the commit, as on the embedded default.
    event = stack.instance.get_latest_materialization_event(dg.AssetKey(["gold", "kpi_daily_sales"]))
    metadata = event.asset_materialization.metadata
    table = load_catalog(stack.settings).load_table("gold.kpi_daily_sales")
    assert metadata["iceberg/snapshot_id"].value == str(table.current_snapshot().snapshot_id)
    assert metadata["iceberg/metadata_location"].value.startswith("s3://lake/warehouse/gold/kpi_daily_sales/metadata/")


def test_bronze_lineage_names_files_relative_to_the_landing_root(stack):
    conn = duck.connect(stack.settings)
    duck.register_iceberg_views(conn, load_catalog(stack.settings))
    files = {r[0] for r in conn.execute("SELECT DISTINCT _source_file FROM bronze.orders").fetchall()}
    assert files and all(f.startswith("orders/20") and not f.startswith("s3://") for f in files), files


def test_no_secret_reaches_event_logs_metadata_settings_or_duckdb(stack, s3_srv, pg):
    secrets = {"S3 access key id": s3_srv.access_key_id, "S3 secret key": s3_srv.secret_access_key,
               "Postgres password": pg.password}
    from dagster._serdes import serialize_value

    texts: dict[str, str] = {}
    for run_id in stack.runs:
        texts[f"event log of run {run_id}"] = "\n".join(serialize_value(e) for e in stack.instance.all_logs(run_id))
        texts[f"run record {run_id}"] = serialize_value(stack.instance.get_run_by_id(run_id))
    for key in stack.instance.get_asset_keys():
        event = stack.instance.get_latest_materialization_event(key)
        if event is not None:
            texts[f"metadata of {key.to_user_string()}"] = repr(event.asset_materialization.metadata)
    conn = duck.session(stack.settings)
    texts["duckdb_settings()"] = repr(conn.execute("SELECT * FROM duckdb_settings()").fetchall())
    texts["duckdb_secrets()"] = repr(conn.execute("SELECT * FROM duckdb_secrets()").fetchall())
    texts["repr(settings)"] = repr(stack.settings)
    texts["rat settings"] = subprocess.run(
        [sys.executable, "-m", "ratatouille_assets.cli", "settings"], capture_output=True, text=True, check=True,
        env=os.environ.copy(),
    ).stdout
    texts["demo summary"] = summary(stack.settings)
    for path in glob.glob(str(stack.home / "compute-logs" / "**" / "*"), recursive=True):
        if os.path.isfile(path):
            texts[path] = Path(path).read_text(errors="replace")
    for run_id in stack.runs:
        for path in glob.glob(str(ROOT / "dbt_project" / "target" / f"*-{run_id[:7]}-*" / "*.log")):
            texts[path] = Path(path).read_text(errors="replace")

    # What was scanned is the real thing: the runs' events name the bucket, the secret exists in DuckDB.
    assert "s3://lake/warehouse" in "".join(v for k, v in texts.items() if k.startswith("event log"))
    assert "ratatouille_s3" in texts["duckdb_secrets()"]
    assert any(k.endswith("dbt.log") for k in texts)
    assert "RATATOUILLE_S3_SECRET_ACCESS_KEY=***" in texts["rat settings"]
    assert f"{pg.user}:***@" in texts["rat settings"]
    leaks = [f"{what} in {where}" for where, text in texts.items() for what, value in secrets.items() if value in text]
    # DuckDB lists a secret's key id (the AWS access key *id*, an identifier like a user name) in
    # duckdb_secrets(), by design; the secret key itself is redacted there, and nothing is in settings.
    assert leaks == ["S3 access key id in duckdb_secrets()"]


def test_bad_file_on_s3_is_quarantined_on_s3_and_the_day_still_loads(stack, s3_srv):
    client = s3_srv.client()
    day = DAYS[0]
    bad = f"s3://lake/landing/fx_rates/{day}/zz-broken.csv"
    s3.put_bytes(client, bad, b"rate_date,currency,usd_per_unit\n2024-01-01,EUR\n")  # a ragged row
    defs = build_definitions()
    try:
        result = dg.materialize(
            list(defs.assets), selection=dg.AssetSelection.assets(dg.AssetKey(["bronze", "fx_rates"])),
            partition_key=day, instance=stack.instance, resources=dict(defs.resources), raise_on_error=False,
        )
        objects = {o.key: o for o in s3.list_objects(client, f"s3://lake/quarantine/fx_rates/{day}/")}
        assert set(objects) == {f"quarantine/fx_rates/{day}/zz-broken.csv", f"quarantine/fx_rates/{day}/zz-broken.csv.reason.json"}
        sidecar = json.loads(client.get_object(Bucket="lake", Key=f"quarantine/fx_rates/{day}/zz-broken.csv.reason.json")["Body"].read())
        assert sidecar["file"] == f"fx_rates/{day}/zz-broken.csv" and sidecar["run_id"] == result.run_id
        assert "line 2" in sidecar["message"] or "row 2" in sidecar["message"], sidecar["message"]
        # The landing copy is untouched; the day's good file loaded.
        assert client.get_object(Bucket="lake", Key=bad.removeprefix("s3://lake/"))["Body"].read().startswith(b"rate_date")
        conn = duck.connect(stack.settings)
        duck.register_iceberg_views(conn, load_catalog(stack.settings))
        files = {r[0] for r in conn.execute(
            f"SELECT DISTINCT _source_file FROM bronze.fx_rates WHERE _landing_date = DATE '{day}'").fetchall()}
        assert files == {f"fx_rates/{day}/sample-fx_rates-{day}-001.csv"}
    finally:
        s3.delete(client, [bad])


def test_a_bad_file_on_s3_can_be_quarantined_to_a_local_folder(stack, s3_srv, tmp_path):
    from ratatouille_assets.ingest.quarantine import quarantine_file

    client = s3_srv.client()
    src = "s3://lake/landing/orders/2024-01-09/bad.jsonl"
    s3.put_bytes(client, src, b"{not json\n")
    try:
        result = quarantine_file(src, quarantine_root=str(tmp_path / "q"), source="orders", day="2024-01-09",
                                 file="orders/2024-01-09/bad.jsonl", reason="unreadable", detail="line 1: not JSON",
                                 action="Fix it.", run_id="r1", s3_client=client)
    finally:
        s3.delete(client, [src])
    folder = tmp_path / "q" / "orders" / "2024-01-09"
    assert result.target == str(folder / "bad.jsonl")
    assert (folder / "bad.jsonl").read_bytes() == b"{not json\n"
    assert json.loads((folder / "bad.jsonl.reason.json").read_text())["file"] == "orders/2024-01-09/bad.jsonl"
    assert sorted(p.name for p in folder.iterdir()) == ["bad.jsonl", "bad.jsonl.reason.json"]  # no temporary left


@pytest.fixture
def sensor_settings(tmp_path, monkeypatch, s3_srv, pg):
    name = "sensor-" + uuid.uuid4().hex[:8]
    yield use_server(monkeypatch, tmp_path / "rt", s3_srv, pg, name)
    get_settings.cache_clear()


def test_landing_sensor_on_s3_pages_through_listings_and_sees_resent_files(sensor_settings, s3_srv):
    settings, client = sensor_settings, s3_srv.client()
    sources = load_sources(settings.sources_file)
    folder = s3.join(settings.landing, "orders", "2024-01-05")
    # More keys than one listing page (1,000): the sensor must see the last one too.
    for i in range(1005):
        s3.put_bytes(client, s3.join(folder, f"part-{i:04d}.jsonl"), b"{}\n")
    zone = landing_zone(settings.landing, settings)
    assert isinstance(zone, S3LandingZone)
    listed = list(zone.files(sources["orders"]))
    assert len(listed) == 1005 and {f.day for f in listed} == {"2024-01-05"}

    defs = build_definitions()
    with dg.instance_for_test() as instance:
        requests, cursor, keys = tick(defs, instance, None)
        assert requests == [("2024-01-05", ("bronze/orders",))]
        assert LandingCursor.decode(cursor, sources).days == {"orders": {"2024-01-05": state(listed)}}
        assert state(listed).endswith(":1005")
        assert all(time.time() - 600 < f.modified <= time.time() for f in listed)  # LastModified, as epoch seconds
        assert tick(defs, instance, cursor)[0] == []

        # A late file for an older day, then a re-sent file: same bytes (same ETag), new LastModified.
        s3.put_bytes(client, s3.join(settings.landing, "order_items", "2024-01-02", "late.parquet"), b"x")
        requests, cursor, _ = tick(defs, instance, cursor)
        assert requests == [("2024-01-02", ("bronze/order_items",))]
        time.sleep(1.1)  # LastModified has one-second resolution
        s3.put_bytes(client, s3.join(folder, "part-1004.jsonl"), b"{}\n")
        requests, cursor, new_keys = tick(defs, instance, cursor)
        assert requests == [("2024-01-05", ("bronze/orders",))] and new_keys[0] != keys[0]

        # Keys that are not partitions (no date, a future day) request nothing.
        s3.put_bytes(client, s3.join(settings.landing, "orders", "not-a-day", "c.jsonl"), b"{}\n")
        s3.put_bytes(client, s3.join(settings.landing, "orders", "2999-01-01", "d.jsonl"), b"{}\n")
        # A tick lists each source's prefix once, for its requests and its landing check alike.
        prefixes: list[str] = []
        sensor_client = s3.client(settings)
        handler = lambda params, **_: prefixes.append(params["Prefix"])  # noqa: E731
        sensor_client.meta.events.register("provide-client-params.s3.ListObjectsV2", handler)
        try:
            assert tick(defs, instance, cursor)[0] == []
        finally:
            sensor_client.meta.events.unregister("provide-client-params.s3.ListObjectsV2", handler)
        assert prefixes.count(prefixes[0]) == (2 if prefixes[0].endswith("orders/") else 1)  # 1,005 keys: two pages
        assert len(set(prefixes)) == len(sources)
        assert len(prefixes) == len(sources) + 1


D0 = dt.date(2024, 3, 1)


def _writer(settings_env: dict[str, str], props: dict, index: int, barrier, results) -> None:
    os.environ.update(settings_env)
    from pyiceberg.catalog.sql import SqlCatalog

    catalog = SqlCatalog("ratatouille", **props)
    day = D0 + dt.timedelta(days=index)
    data = pa.table({"id": pa.array(range(index * 1000, index * 1000 + 200), pa.int64()), "day": [day] * 200})
    # Everyone has loaded the same table version at the barrier: all but one first commits conflict.
    result = write_window(
        catalog, "bronze.concurrent", data, window=Window("day", day, day), run_id=f"writer-{index}",
        retry=RetryPolicy(attempts=30, base_delay_s=0.05, max_delay_s=1.0),
        on_attempt=lambda attempt: barrier.wait(timeout=120) if attempt == 1 else None,
    )
    results.put((index, result.attempts))


def test_eight_processes_commit_partitions_to_one_table_on_postgres(sensor_settings):
    settings = sensor_settings
    catalog = load_catalog(settings)
    seed = pa.table({"id": pa.array([-1], pa.int64()), "day": [D0 - dt.timedelta(days=1)]})
    write_window(catalog, "bronze.concurrent", seed, window=Window("day", D0 - dt.timedelta(days=1), D0 - dt.timedelta(days=1)),
                 run_id="seed")
    writers = 8
    env = {k: v for k, v in os.environ.items() if k.startswith("RATATOUILLE_")}
    attempts = race(_writer, lambda i: (env, catalog_properties(settings), i), writers)
    assert len(attempts) == writers and max(attempts.values()) > 1, attempts

    table = load_catalog(settings).load_table("bronze.concurrent")
    conn = duck.connect(settings)
    ids = [r[0] for r in conn.execute(f"SELECT id FROM iceberg_scan('{table.metadata_location}')").fetchall()]
    expected = [-1] + [i for k in range(writers) for i in range(k * 1000, k * 1000 + 200)]
    assert sorted(ids) == sorted(expected)  # every commit landed, no row twice
    runs = {s.summary.additional_properties.get("ratatouille.run-id") for s in table.snapshots()}
    assert {f"writer-{i}" for i in range(writers)} <= runs


def test_maintenance_on_s3_deletes_only_what_no_snapshot_references(sensor_settings, s3_srv):
    from ratatouille_assets.lakehouse.maintenance import Policy, maintain, sweep

    settings, client = sensor_settings, s3_srv.client()
    catalog = load_catalog(settings)
    day = dt.date(2024, 2, 1)
    data = pa.table({"id": pa.array([1, 2, 3], pa.int64()), "day": [day] * 3})
    for replay in range(5):  # replays: the replaced files stay until their snapshots expire
        write_window(catalog, "bronze.swept", data, window=Window("day", day, day), run_id=f"r{replay}")
    table = catalog.load_table("bronze.swept")
    stray = s3.join(table.location(), "data", "day=2024-02-01", "killed-writer.parquet")
    s3.put_bytes(client, stray, b"half")

    def objects() -> set[str]:
        return {o.uri for o in s3.list_objects(client, table.location() + "/")}

    def referenced() -> set[str]:
        inspect = catalog.load_table("bronze.swept").inspect
        return ({catalog.load_table("bronze.swept").metadata_location}
                | set(inspect.metadata_log_entries().column("file").to_pylist())
                | set(inspect.snapshots().column("manifest_list").to_pylist())
                | set(inspect.all_manifests().column("path").to_pylist())
                | set(inspect.all_files().column("file_path").to_pylist()))

    assert stray in objects() and objects() > referenced()
    # S3 cannot backdate an object: maintenance is run as if two hours later instead. Before
    # that, the stray is inside the safety window (an hour) and stays.
    policy = Policy(keep_days=0, keep_snapshots=2)
    young = maintain(catalog, "bronze.swept", policy, run_id="m0", settings=settings)
    # Five writes: the first an append, each replay a delete and an append; two kept.
    assert len(young.expired.expired) == 1 + 4 * 2 - 2 and young.expired.deleted_files > 0 and young.swept.orphans == []
    assert objects() == referenced() | {stray} and young.health.young_unreferenced == 1
    result = sweep(catalog, "bronze.swept", settings=settings, now=time.time() + 2 * 3600)
    assert {f.path for f in result.orphans} == {stray} and result.deleted
    assert objects() == referenced()
    conn = duck.connect(settings)
    assert conn.execute(f"SELECT count(*) FROM iceberg_scan('{catalog.load_table('bronze.swept').metadata_location}')"
                        ).fetchone() == (3,)