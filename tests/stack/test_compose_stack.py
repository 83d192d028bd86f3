"""The compose stack for real (``make stack-test``): docker-compose.yml with the test override,
under podman, from images built here (tests/stack/stack.sh images). One day of sample data goes
into the stack's S3, a backfill is launched through the webserver's GraphQL API (as the UI does),
the daemon runs it in the code location's container, and gold is read back from the stack's S3
and Postgres and compared with the KPIs computed independently from the same files."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import duckdb
import pytest

from ratatouille_assets import client
from ratatouille_assets.ingest.generator import SampleSpec, generate
from ratatouille_assets.lakehouse import duck, s3
from ratatouille_assets.lakehouse.catalog import load_catalog
from ratatouille_assets.settings import get_settings
from tests import independent
from tests.conftest import use_home
from tests.services import free_port

pytestmark = pytest.mark.stack

ROOT = Path(__file__).resolve().parents[2]
STACK = ROOT / "tests" / "stack" / "stack.sh"
SPEC = SampleSpec(start=dt.date(2024, 2, 1), days=1, rows_per_day=300, seed=5)
DAY = SPEC.day(0)
# The stack's credentials for this run (the compose file's variables, as .env would set them).
CREDENTIALS = {"MINIO_ROOT_USER": "stacktest", "MINIO_ROOT_PASSWORD": "stack-test-minio-pw",
               "POSTGRES_USER": "stacktest", "POSTGRES_PASSWORD": "stack-test-pg-pw", "POSTGRES_DB": "lakehouse",
               "BUCKET": "lake", "SQL_PASSWORD": "stack-test-sql-pw", "JUPYTER_TOKEN": "stack-test-notebook-token"}


_RUNS = """
query Runs($filter: RunsFilter) {
  runsOrError(filter: $filter) { ... on Runs { results { status assetSelection { path } } } }
}
"""


_TICKS = """
query Ticks($selector: SensorSelector!) {
  sensorOrError(sensorSelector: $selector) { ... on Sensor { sensorState { ticks(limit: 1) { status } } } }
}
"""


def wait_for_first_landing_tick(url: str, timeout: float = 180) -> None:
    """The landing sensor's first tick counts files of days already materialized as processed: let it
    happen before files land, as on a server that has been up for a while."""
    selector = {"repositoryLocationName": "ratatouille", "repositoryName": "__repository__", "sensorName": "landing_files"}
    deadline = time.monotonic() + timeout
    while not client.graphql(url, _TICKS, {"selector": selector})["sensorOrError"]["sensorState"]["ticks"]:
        assert time.monotonic() < deadline, "the landing sensor never ticked: is the daemon running?"
        time.sleep(2)


def landing_runs(url: str, day: str) -> set[str]:
    """Sources whose bronze partition ``day`` (a one-day range) a landing-sensor run loaded successfully."""
    tags = [{"key": "ratatouille/trigger", "value": "landing"},
            {"key": "dagster/asset_partition_range_start", "value": day},
            {"key": "dagster/asset_partition_range_end", "value": day}]
    runs = client.graphql(url, _RUNS, {"filter": {"tags": tags}})["runsOrError"]["results"]
    return {key["path"][1] for run in runs if run["status"] == "SUCCESS" for key in run["assetSelection"] or []}


def tiny_profile() -> dict[str, str]:
    """The tiny resource profile as .env.example lists it: what a 2-core CI machine can hold."""
    line = re.search(r"^#\s+tiny:\s+(.*?)\s+\(", (ROOT / ".env.example").read_text(), re.MULTILINE)
    return dict(pair.split("=", 1) for pair in line[1].split())


def _stack(command: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([str(STACK), command], env=env, text=True, capture_output=True, timeout=900)


@pytest.fixture(scope="module")
def stack_env():
    if shutil.which("podman") is None or shutil.which("podman-compose") is None:
        pytest.fail("podman/podman-compose missing: run `make stack-test`, which installs them")
    if not os.environ.get("CONTAINERS_CONF"):
        pytest.fail("CONTAINERS_CONF is not set: run `make stack-test` (it writes and selects containers.conf)")
    ports = {"WEBSERVER_PORT": free_port(), "MINIO_PORT": free_port(), "MINIO_CONSOLE_PORT": free_port(),
             "POSTGRES_PORT": free_port(), "SQL_PORT": free_port(), "JUPYTER_PORT": free_port()}
    # One project name per session: a stack left by a killed run, or another checkout's stack on
    # the same machine (they share podman's storage), has other container names.
    project = os.environ.get("STACK_PROJECT") or f"ratatouille-test-{os.getpid()}"
    env = {
        **os.environ, **CREDENTIALS, **{k: str(v) for k, v in ports.items()}, "STACK_PROJECT": project,
        "S3_ACCESS_KEY_ID": CREDENTIALS["MINIO_ROOT_USER"], "S3_SECRET_ACCESS_KEY": CREDENTIALS["MINIO_ROOT_PASSWORD"],
        **tiny_profile(), "SCHEDULE_ENABLED": "false",
    }
    up = _stack("up", env)
    try:
        # The stack's own lines first: the container logs after them can be long.
        steps = "\n".join(line for line in up.stderr.splitlines() if line.startswith("[stack "))
        assert up.returncode == 0, f"stack did not come up:\n{steps}\n{up.stdout}\n{up.stderr[-6000:]}"
        yield env
    finally:
        if up.returncode != 0 or os.environ.get("STACK_KEEP") != "1":
            code = f"{project}_code_1"  # stack.sh's names
            logs = subprocess.run(["podman", "logs", "--tail", "60", code], text=True,
                                  capture_output=True)
            print(logs.stdout[-4000:], logs.stderr[-4000:])
            _stack("down", env)


def executed_starter_notebook(env: dict[str, str]) -> dict:
    """docs/notebooks/gold.ipynb as the jupyter service copied it in, run top to bottom by nbconvert
    in that container (its kernel, its settings: the stack's S3 and catalog)."""
    container = f"{env['STACK_PROJECT']}_jupyter_1"  # stack.sh's names
    run = subprocess.run(["podman", "exec", container, "jupyter", "nbconvert", "--to", "notebook", "--execute",
                          "--ExecutePreprocessor.timeout=300", "--output", "/tmp/gold-executed.ipynb",
                          "/home/ratatouille/notebooks/gold.ipynb"], text=True, capture_output=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    out = subprocess.run(["podman", "exec", container, "cat", "/tmp/gold-executed.ipynb"], text=True,
                         capture_output=True, timeout=60, check=True)
    return json.loads(out.stdout)


def test_webserver_has_the_code_location_loaded(stack_env):
    url = f"http://127.0.0.1:{stack_env['WEBSERVER_PORT']}"
    data = client.graphql(url, "{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus "
                               "locationOrLoadError { __typename } } } } }")
    entries = data["workspaceOrError"]["locationEntries"]
    assert [(e["name"], e["loadStatus"], e["locationOrLoadError"]["__typename"]) for e in entries] == [
        ("ratatouille", "LOADED", "RepositoryLocation")]


def test_a_day_runs_through_the_stack_and_gold_is_right(stack_env, tmp_path, monkeypatch):
    url = f"http://127.0.0.1:{stack_env['WEBSERVER_PORT']}"
    # The host sees the stack's S3 and Postgres on loopback; the same settings the containers use.
    monkeypatch.setenv("RATATOUILLE_WAREHOUSE", "s3://lake/warehouse")
    monkeypatch.setenv("RATATOUILLE_S3_ENDPOINT", f"http://127.0.0.1:{stack_env['MINIO_PORT']}")
    monkeypatch.setenv("RATATOUILLE_S3_ACCESS_KEY_ID", CREDENTIALS["MINIO_ROOT_USER"])
    monkeypatch.setenv("RATATOUILLE_S3_SECRET_ACCESS_KEY", CREDENTIALS["MINIO_ROOT_PASSWORD"])
    monkeypatch.setenv("RATATOUILLE_CATALOG_URI",
                       f"postgresql://stacktest:stack-test-pg-pw@127.0.0.1:{stack_env['POSTGRES_PORT']}/lakehouse")
    settings = use_home(monkeypatch, tmp_path / "host")
    try:
        # The same day's files: in the stack's landing zone, and in a local folder for the reference.
        wait_for_first_landing_tick(url)
        generate(SPEC, settings.landing)
        local = tmp_path / "landing"
        generate(SPEC, str(local))
        keys = [o.key for o in s3.list_objects(s3.client(settings), "s3://lake/landing/")]
        assert len(keys) >= 5, keys

        backfill = client.launch_backfill(url, DAY.isoformat(), DAY.isoformat(), title="stack test")
        status = client.wait_for_backfill(url, backfill, timeout=900)
        assert status["status"] == "COMPLETED_SUCCESS", status
        assert status["runs"] and {r["status"] for r in status["runs"]} == {"SUCCESS"}

        conn = duck.connect(settings)
        duck.register_iceberg_views(conn, load_catalog(settings))
        got = conn.execute(
            "SELECT order_date, country, orders, order_lines, units, revenue, avg_order_value "
            f"FROM gold.kpi_daily_sales WHERE order_date = DATE '{DAY}' ORDER BY country"
        ).fetchall()
        expected = independent.kpi_daily_sales(duckdb.connect(), str(local), DAY)
        assert len(expected) >= 3
        assert got == expected
        # The stack's SQL endpoint (the `sql` service, what a BI tool connects to) serves the same gold.
        import psycopg2

        with psycopg2.connect(host="127.0.0.1", port=stack_env["SQL_PORT"], user="ratatouille", dbname="lakehouse",
                              password=CREDENTIALS["SQL_PASSWORD"], connect_timeout=10) as bi:
            cursor = bi.cursor()
            cursor.execute("SELECT order_date, country, orders, order_lines, units, revenue, avg_order_value "
                           "FROM gold.kpi_daily_sales WHERE order_date = %s ORDER BY country", (DAY,))
            assert cursor.fetchall() == got
        # JupyterLab (the `jupyter` service) answers with its token, and its starter notebook runs
        # in the container's kernel against the stack's gold: the day's revenue is the sum above.
        status_url = f"http://127.0.0.1:{stack_env['JUPYTER_PORT']}/api/status?token={CREDENTIALS['JUPYTER_TOKEN']}"
        with urllib.request.urlopen(status_url, timeout=10) as response:
            assert response.status == 200
        notebook = executed_starter_notebook(stack_env)
        errors = [o for c in notebook["cells"] for o in c.get("outputs", []) if o["output_type"] == "error"]
        assert errors == [], errors
        daily = next(c for c in notebook["cells"] if c.get("id") == "daily")["outputs"][0]["data"]["text/plain"]
        shown = [float(x) for x in re.findall(r"\d+\.\d+", "".join(daily))]
        assert any(abs(x - float(sum(row[5] for row in got))) < 0.005 for x in shown), daily
        snapshot = load_catalog(settings).load_table("gold.kpi_daily_sales").current_snapshot()
        assert snapshot.summary.additional_properties.get("ratatouille.run-id") in {r["runId"] for r in status["runs"]}

        # The backfill loaded the day after its files landed, so the sensor owes nothing for them.
        # Without any click, a file that lands afterwards is listed in the stack's S3 by the daemon's
        # landing sensor and loaded: a one-day run of that source.
        late = {"order_id": "O-LATE-STACK", "customer_id": 1, "order_ts": f"{DAY}T12:00:00", "status": "placed",
                "currency": "USD", "ship_country": "us", "updated_at": f"{DAY}T12:00:00"}
        s3.put_bytes(s3.client(settings), f"s3://lake/landing/orders/{DAY}/late-arrival.jsonl",
                     (json.dumps(late) + "\n").encode())
        def late_rows() -> int:
            conn = duck.connect(settings)
            duck.register_iceberg_views(conn, load_catalog(settings))
            return conn.execute("SELECT count(*) FROM bronze.orders WHERE order_id = 'O-LATE-STACK'").fetchone()[0]

        deadline = time.monotonic() + 240
        while late_rows() == 0 and time.monotonic() < deadline:
            time.sleep(5)
        assert late_rows() == 1
        assert "orders" in landing_runs(url, DAY.isoformat())
    finally:
        get_settings.cache_clear()
