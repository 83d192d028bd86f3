"""``rat serve``: the lakehouse over the PostgreSQL protocol, as BI tools use it.

A real server (``rat serve`` in a subprocess, on a free port of 127.0.0.1) over tables written by
the write path (a library's loans, not the shop), on the local default and on S3 + PostgreSQL,
and real clients: psql, psycopg 3, SQLAlchemy with psycopg2 and with psycopg (what Superset does),
pgjdbc (what Metabase and DBeaver use). Expected values are computed from the data written, in
Python, or by DuckDB directly over the same tables.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import decimal
import inspect
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import tomllib
import uuid
from collections.abc import Iterator
from pathlib import Path

import duckdb
import psycopg
import pyarrow as pa
import pytest
import sqlalchemy as sa

from ratatouille_assets.lakehouse import duck
from ratatouille_assets.lakehouse.catalog import load_catalog, table_locations
from ratatouille_assets.lakehouse.write import Window, write_window
from ratatouille_assets.serve import catalog as shim
from ratatouille_assets.serve import guard, mimic
from ratatouille_assets.serve.engine import ServedLakehouse
from ratatouille_assets.serve.rewrite import Rewriter
from ratatouille_assets.settings import Settings, get_settings
from tests.conftest import use_backend
from tests.services import free_port

ROOT = Path(__file__).resolve().parent.parent
PSQL = "/usr/bin/psql"
D1, D2, D3 = dt.date(2025, 9, 1), dt.date(2025, 9, 2), dt.date(2025, 9, 3)
BRANCHES = ("north", "south", "harbour", None)
TIMEOUT_SECONDS = 3
ROW_LIMIT = 500


def loans(day: dt.date, n: int, first: int) -> pa.Table:
    ids = range(first, first + n)
    return pa.table({
        "loan_id": pa.array(ids, pa.int64()),
        "loan_date": [day] * n,
        "branch": [BRANCHES[i % 4] for i in ids],
        "fee": pa.array([None if i % 11 == 0 else decimal.Decimal(i % 7) + decimal.Decimal("0.25") * (i % 4) for i in ids],
                        pa.decimal128(8, 2)),
        "minutes": pa.array([5 + i % 50 for i in ids], pa.int32()),
        "returned_at": pa.array([None if i % 5 == 0 else dt.datetime.combine(day, dt.time(9)) + dt.timedelta(hours=i % 30)
                                 for i in ids], pa.timestamp("us")),
        "scanned_at": pa.array([dt.datetime.combine(day, dt.time(8), dt.timezone.utc) + dt.timedelta(minutes=i) for i in ids],
                               pa.timestamp("us", tz="UTC")),
        "on_time": [i % 3 != 0 for i in ids],
        "score": [i / 8 for i in ids],
    })


LOANS = pa.concat_tables([loans(D1, 40, 0), loans(D2, 40, 100)])


def branch_fees(data: pa.Table) -> pa.Table:
    """Per branch: loans, the sum of fees and the mean minutes (computed here, in Python)."""
    groups: dict[str, list[dict]] = {}
    for row in data.to_pylist():
        if row["branch"] is not None:
            groups.setdefault(row["branch"], []).append(row)
    names = sorted(groups)
    return pa.table({
        "branch": names,
        "loans": pa.array([len(groups[b]) for b in names], pa.int64()),
        "fees": pa.array([sum((r["fee"] for r in groups[b] if r["fee"] is not None), decimal.Decimal(0)) for b in names],
                         pa.decimal128(10, 2)),
        "avg_minutes": [sum(r["minutes"] for r in groups[b]) / len(groups[b]) for b in names],
    })


@dataclasses.dataclass
class Served:
    backend: str
    port: int
    password: str
    settings: Settings
    home: Path
    log: Path
    bucket: str

    def connect(self, **options) -> psycopg.Connection:
        options = {"user": "ratatouille", "password": self.password, **options}
        return psycopg.connect(host="127.0.0.1", port=self.port, dbname="lakehouse", connect_timeout=10, **options)

    def url(self, driver: str) -> sa.URL:
        return sa.URL.create(driver, username="ratatouille", password=self.password, host="127.0.0.1", port=self.port,
                             database="lakehouse")


@contextlib.contextmanager
def rat_serve(env: dict[str, str], port: int, log: Path) -> Iterator[subprocess.Popen]:
    """``rat serve`` in a subprocess, once its port is open; stopped with SIGTERM on the way out."""
    with log.open("w") as out:
        process = subprocess.Popen([sys.executable, "-m", "ratatouille_assets.cli", "serve"], cwd=ROOT, env=env,
                                   stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for_port(port, process, log)
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)


def wait_for_port(port: int, process: subprocess.Popen, log: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            pass
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=0.05)  # returns at once when the server died
        if process.returncode is not None:
            pytest.fail(f"rat serve exited with {process.returncode}:\n{log.read_text()}")
    pytest.fail(f"rat serve did not open port {port} in {timeout} s:\n{log.read_text()}")


def wait_until(condition, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the condition never held"
        time.sleep(0.01)  # the poll interval


def serve_env(port: int, password: str, **extra: str) -> dict[str, str]:
    return {**os.environ, "RATATOUILLE_SQL_PASSWORD": password, "RATATOUILLE_SQL_PORT": str(port),
            "RATATOUILLE_SQL_STATEMENT_TIMEOUT_SECONDS": str(TIMEOUT_SECONDS),
            "RATATOUILLE_SQL_ROW_LIMIT": str(ROW_LIMIT), **extra}


@pytest.fixture(scope="module", params=["local", "s3"])
def served(request, tmp_path_factory) -> Iterator[Served]:
    """Loans (two days), their gold summary and a bronze table, written by the write path, and
    ``rat serve`` over them. The password is recognisable and full of quoting characters."""
    home = tmp_path_factory.mktemp(f"serve-{request.param}")
    bucket = "library-" + uuid.uuid4().hex[:8]
    with pytest.MonkeyPatch.context() as mp:
        settings = use_backend(request, mp, home / "rt", bucket)
        catalog = load_catalog(settings)
        for day, first in ((D1, 0), (D2, 100)):
            write_window(catalog, "silver.loans", loans(day, 40, first), window=Window("loan_date", day, day),
                         run_id=f"r-{day}")
        write_window(catalog, "gold.branch_fees", branch_fees(LOANS), window=None, run_id="r-gold")
        write_window(catalog, "bronze.scans", pa.table({"scan_id": pa.array([1, 2], pa.int64()), "desk": ["a", "b"]}),
                     window=None, run_id="r-bronze")
        if request.param == "s3":  # a file beside the warehouse that queries must not reach
            request.getfixturevalue("s3_srv").client().put_object(Bucket=bucket, Key="landing/secret.csv", Body=b"a\n42\n")
        password = f"Pw-{uuid.uuid4().hex[:12]}'@%:x"
        port = free_port()
        log = home / "serve.log"
        with rat_serve(serve_env(port, password), port, log) as process:
            yield Served(request.param, port, password, settings, home, log, bucket)
        output = log.read_text()
        assert process.returncode == 0, output
        assert "rat serve: stopped" in output
        assert password not in output and password[:15] not in output
    get_settings.cache_clear()


def psql(served: Served, *commands: str, password: str | None = None, user: str = "ratatouille") -> list[str]:
    """``psql -c`` for each command, unaligned and tuples only: one ``a|b|c`` line per row."""
    argv = [PSQL, "-X", "-A", "-t", "-F", "|", "-h", "127.0.0.1", "-p", str(served.port), "-U", user, "-d", "lakehouse"]
    for command in commands:
        argv += ["-c", command]
    env = {**os.environ, "PGPASSWORD": served.password if password is None else password, "PGCONNECT_TIMEOUT": "10"}
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


# --- the clients BI tools are built on ------------------------------------------------------------


def test_psql_runs_a_query_and_lists_and_describes_the_tables(served):
    counts = psql(served, "SELECT branch, count(*) FROM silver.loans WHERE branch IS NOT NULL GROUP BY branch ORDER BY branch")
    assert counts == [f"{row['branch']}|{row['loans']}" for row in branch_fees(LOANS).to_pylist()]
    gold = psql(served, r"\dt gold.*")
    assert "gold|branch_fees|table|ratatouille" in gold and all(line.startswith("gold|") for line in gold)
    # Without a pattern: the search_path (gold) only, which pg_table_is_visible decides.
    assert psql(served, r"\dt") == gold
    everything = psql(served, r"\dt *.*")
    assert {"bronze|scans|table|ratatouille", "silver|loans|table|ratatouille"} <= set(everything)
    assert psql(served, r"\dn") == ["bronze|ratatouille", "gold|ratatouille", "silver|ratatouille"]
    described = [line.split("|")[:2] for line in psql(served, r"\d silver.loans")]
    assert described == [["loan_id", "bigint"], ["loan_date", "date"], ["branch", "text"], ["fee", "numeric(8,2)"],
                         ["minutes", "integer"], ["returned_at", "timestamp without time zone"],
                         ["scanned_at", "timestamp with time zone"], ["on_time", "boolean"], ["score", "double precision"]]
    assert [line.split("|")[:2] for line in psql(served, r"\d gold.branch_fees")] == [
        ["branch", "text"], ["loans", "bigint"], ["fees", "numeric(10,2)"], ["avg_minutes", "double precision"]]


def test_psycopg_binds_parameters_of_each_type_and_reuses_a_prepared_statement(served):
    sql = ("SELECT loan_id, fee, %s::VARCHAR AS label, %s + 1 AS next FROM silver.loans "
           "WHERE loan_date = %s AND (branch = %s OR %s::VARCHAR IS NULL) ORDER BY loan_id")
    with served.connect() as conn:
        for branch in ("north", None, "north"):  # the same prepared statement, executed again
            rows = conn.execute(sql, ["tag", 41, D2, branch, branch], prepare=True).fetchall()
            expected = [(r["loan_id"], r["fee"], "tag", 42) for r in LOANS.to_pylist()
                        if r["loan_date"] == D2 and (branch is None or r["branch"] == branch)]
            assert rows == expected
        # Binary results, every column type of the table, NULLs included.
        with conn.cursor(binary=True) as cursor:
            assert cursor.execute("SELECT * FROM silver.loans ORDER BY loan_id").fetchall() == [
                tuple(row.values()) for row in LOANS.to_pylist()]
        assert [(c.name, c.type_code) for c in conn.execute("SELECT * FROM silver.loans LIMIT 0").description] == [
            ("loan_id", 20), ("loan_date", 1082), ("branch", 25), ("fee", 1700), ("minutes", 23), ("returned_at", 1114),
            ("scanned_at", 1184), ("on_time", 16), ("score", 701)]


@pytest.mark.parametrize("driver", ["postgresql+psycopg2", "postgresql+psycopg"])
def test_sqlalchemy_reflects_schemas_tables_and_column_types_as_superset_does(served, driver):
    engine = sa.create_engine(served.url(driver))
    try:
        inspector = sa.inspect(engine)
        assert {"bronze", "silver", "gold"} <= set(inspector.get_schema_names())
        assert "branch_fees" in inspector.get_table_names(schema="gold")
        assert "loans" in inspector.get_table_names(schema="silver") and "loans" not in inspector.get_table_names(schema="gold")
        columns = {c["name"]: c["type"] for c in inspector.get_columns("loans", schema="silver")}
        assert list(columns) == LOANS.column_names
        expected = {"loan_id": sa.BIGINT, "loan_date": sa.DATE, "branch": sa.TEXT, "fee": sa.NUMERIC, "minutes": sa.INTEGER,
                    "returned_at": sa.TIMESTAMP, "scanned_at": sa.TIMESTAMP, "on_time": sa.BOOLEAN,
                    "score": sa.DOUBLE_PRECISION}
        assert all(isinstance(columns[name], kind) for name, kind in expected.items()), columns
        assert (columns["fee"].precision, columns["fee"].scale) == (8, 2)
        assert (columns["returned_at"].timezone, columns["scanned_at"].timezone) == (False, True)
        assert inspector.get_pk_constraint("loans", schema="silver")["constrained_columns"] == []
        assert inspector.get_foreign_keys("loans", schema="silver") == []
        assert inspector.get_indexes("loans", schema="silver") == []
        assert engine.dialect.server_version_info >= (15, 0) and engine.dialect.default_schema_name == "gold"
        # Superset's next step: a SELECT over the reflected table.
        table = sa.Table("loans", sa.MetaData(), schema="silver", autoload_with=engine)
        with engine.connect() as conn:
            query = sa.select(table.c.loan_id, table.c.fee).where(table.c.branch == sa.bindparam("b")).order_by(table.c.loan_id)
            assert conn.execute(query, {"b": "harbour"}).fetchall() == [
                (r["loan_id"], r["fee"]) for r in LOANS.to_pylist() if r["branch"] == "harbour"]
    finally:
        engine.dispose()


JDBC_PROBE = """
import java.sql.*;
public class Probe {
  public static void main(String[] a) throws Exception {
    java.util.Properties p = new java.util.Properties();
    p.setProperty("user", "ratatouille"); p.setProperty("password", System.getenv("PROBE_PASSWORD"));
    try (Connection c = DriverManager.getConnection(a[0], p)) {
      DatabaseMetaData md = c.getMetaData();
      ResultSet t = md.getTables(null, "gold", "%", new String[]{"TABLE", "VIEW"});
      while (t.next()) System.out.println("table " + t.getString("TABLE_SCHEM") + "." + t.getString("TABLE_NAME"));
      ResultSet k = md.getColumns(null, "silver", "loans", "%");
      while (k.next()) System.out.println("column " + k.getString("COLUMN_NAME") + " " + k.getString("TYPE_NAME"));
      PreparedStatement ps = c.prepareStatement("SELECT count(*) FROM silver.loans WHERE loan_id < ?");
      for (int i = 1; i <= 6; i++) {
        ps.setLong(1, 100); ResultSet r = ps.executeQuery(); r.next(); System.out.println("count " + r.getLong(1));
      }
      c.setAutoCommit(false);
      Statement s = c.createStatement(); s.setFetchSize(7);
      ResultSet r = s.executeQuery("SELECT loan_id FROM silver.loans ORDER BY loan_id"); int n = 0; while (r.next()) n++;
      System.out.println("fetched " + n);
    }
  }
}
"""


@pytest.mark.slow  # a JVM compiles and starts (~2 s)
def test_pgjdbc_reads_the_metadata_metabase_and_dbeaver_sync_and_runs_prepared_statements(served, tmp_path):
    jar = Path("/usr/share/java/postgresql.jar")
    if shutil.which("java") is None or not jar.exists():
        pytest.skip("needs java and Debian's libpostgresql-jdbc-java")
    (tmp_path / "Probe.java").write_text(JDBC_PROBE)
    result = subprocess.run(["java", "-cp", str(jar), str(tmp_path / "Probe.java"),
                             f"jdbc:postgresql://127.0.0.1:{served.port}/lakehouse"],
                            env={**os.environ, "PROBE_PASSWORD": served.password}, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "table gold.branch_fees" in lines
    assert [line for line in lines if line.startswith("column ")] == [
        "column loan_id int8", "column loan_date date", "column branch text", "column fee numeric", "column minutes int4",
        "column returned_at timestamp", "column scanned_at timestamptz", "column on_time bool", "column score float8"]
    # Six executions: pgjdbc switches to a server-side prepared statement at the fifth.
    assert [line for line in lines if line.startswith("count ")] == ["count 40"] * 6
    assert "fetched 80" in lines  # in portions of 7 rows (portal suspension)


# --- what the server refuses ----------------------------------------------------------------------


def test_writes_are_refused_with_25006_and_change_nothing(served):
    catalog = load_catalog(served.settings)
    before = table_locations(catalog)
    target = served.home / "copied.csv"
    writes = ["INSERT INTO silver.loans (loan_id) VALUES (1)", "CREATE TABLE gold.intruder AS SELECT 1 AS a",
              "DROP VIEW silver.loans", f"COPY silver.loans TO '{target}'", "ATTACH ':memory:' AS other",
              "UPDATE silver.loans SET fee = 0", "DELETE FROM silver.loans", "CREATE SCHEMA intruders",
              "EXPLAIN ANALYZE CREATE TABLE gold.intruder AS SELECT 1 AS a", "LOAD httpfs", "SET VARIABLE x = 1"]
    with served.connect(autocommit=True) as conn:
        for sql in writes:
            with pytest.raises(psycopg.errors.ReadOnlySqlTransaction, match="read-only server"):
                conn.execute(sql)
        assert conn.execute("SELECT count(*) FROM silver.loans").fetchone() == (LOANS.num_rows,)
        assert conn.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = 'intruder'").fetchone() == (0,)
    assert table_locations(catalog) == before
    assert not target.exists()


def test_a_query_cannot_read_files_only_the_tables(served):
    catalog = load_catalog(served.settings)
    metadata = catalog.load_table("silver.loans").metadata_location
    attempts = ["SELECT * FROM read_csv('/etc/passwd')", "SELECT * FROM '/etc/passwd'", "SELECT * FROM read_text('/etc/passwd')",
                "SELECT * FROM glob('/etc/*')", f"SELECT * FROM iceberg_scan('{metadata}')",
                "SELECT * FROM gold.branch_fees WHERE branch IN (SELECT column0 FROM read_csv('/etc/passwd'))",
                "SELECT * FROM query('SELECT 1')", "SELECT * FROM duckdb_secrets()", "PRAGMA version"]
    if served.backend == "s3":
        # A path through the warehouse: DuckDB's allowed_directories compares it as written and
        # its S3 client then resolves the '..'; the guard refuses it before DuckDB sees it.
        landing = f"s3://{served.bucket}/warehouse/../landing/secret.csv"
        attempts += [f"SELECT * FROM read_csv('{landing}')", f"SELECT * FROM '{landing}'"]
    with served.connect(autocommit=True) as conn:
        for sql in attempts:
            with pytest.raises(psycopg.Error) as refused:
                conn.execute(sql)
            assert refused.value.sqlstate in ("42501", "0A000"), (sql, refused.value)
        # DuckDB's own lock: no file outside the warehouse, whatever the query (wall 3).
        assert conn.execute("SELECT current_setting('enable_external_access'), current_setting('lock_configuration'), "
                            "list_contains(current_setting('allowed_directories'), %s)",
                            [served.settings.warehouse.rstrip("/") + "/"]).fetchone() == (False, True, True)


def test_duckdb_s_own_lockdown_holds_for_a_local_warehouse_but_not_against_a_dotted_s3_path(served):
    """Why the guard keeps paths out of queries (wall 2 in serve/guard.py): with the warehouse
    as the only allowed directory, DuckDB resolves '..' in a local path before it compares, but
    compares an S3 URL as written, and its S3 client then resolves the '..'. Should this start to
    fail on S3, DuckDB closed the hole, and the guard is a second wall there too."""
    lakehouse = ServedLakehouse(served.settings)
    try:
        lakehouse.refresh()
        cursor = lakehouse.cursor()
        if served.backend == "local":
            with pytest.raises(duckdb.PermissionException):
                cursor.execute(f"SELECT * FROM read_text('{served.settings.warehouse}/../catalog.db')")
        else:
            outside = f"s3://{served.bucket}/warehouse/../landing/secret.csv"
            assert cursor.execute(f"SELECT * FROM read_csv('{outside}')").fetchall() == [(42,)]
            with pytest.raises(duckdb.PermissionException):
                cursor.execute(f"SELECT * FROM read_csv('s3://{served.bucket}/landing/secret.csv')")
    finally:
        lakehouse.close()


def test_a_wrong_password_and_an_unknown_user_are_refused_with_28p01(served):
    assert login_error(served.port, "ratatouille", "not-the-password")["C"] == "28P01"
    assert login_error(served.port, "mallory", served.password)["C"] == "28P01"
    # pg-mimic's SCRAM takes an unknown user's password for the empty one: not here.
    assert login_error(served.port, "mallory", "")["C"] == "28P01"
    refused = subprocess.run([PSQL, "-X", "-h", "127.0.0.1", "-p", str(served.port), "-U", "ratatouille", "-d", "lakehouse",
                              "-c", "SELECT 1"], env={**os.environ, "PGPASSWORD": "wrong"}, capture_output=True, text=True,
                             timeout=60)
    assert refused.returncode == 2 and 'password authentication failed for user "ratatouille"' in refused.stderr
    log = served.log.read_text()
    assert "SCRAM-SHA-256 exchange failed for user 'mallory'" in log and "Traceback" not in log


def login_error(port: int, user: str, password: str) -> dict[str, str]:
    """The ErrorResponse fields a SCRAM-SHA-256 login as ``user`` gets (a client of its own:
    drivers do not hand the SQLSTATE of a refused login over)."""
    import scramp

    def message(tag: bytes, payload: bytes) -> bytes:
        return tag + struct.pack("!i", len(payload) + 4) + payload

    def read(sock) -> tuple[bytes, bytes]:
        header = sock.recv(5, socket.MSG_WAITALL)
        length = struct.unpack("!i", header[1:])[0]
        return header[:1], sock.recv(length - 4, socket.MSG_WAITALL) if length > 4 else b""

    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        startup = struct.pack("!i", 196608) + b"user\0" + user.encode() + b"\0database\0lakehouse\0\0"
        sock.sendall(struct.pack("!i", len(startup) + 4) + startup)
        client = scramp.ScramClient(["SCRAM-SHA-256"], user, password)
        tag, payload = read(sock)
        assert tag == b"R" and struct.unpack("!i", payload[:4])[0] == 10  # AuthenticationSASL
        first = client.get_client_first().encode()
        sock.sendall(message(b"p", b"SCRAM-SHA-256\0" + struct.pack("!i", len(first)) + first))
        tag, payload = read(sock)
        assert tag == b"R" and struct.unpack("!i", payload[:4])[0] == 11  # AuthenticationSASLContinue
        client.set_server_first(payload[4:].decode())
        sock.sendall(message(b"p", client.get_client_final().encode()))
        tag, payload = read(sock)
    assert tag == b"E", tag
    return {field[:1].decode(): field[1:].decode() for field in payload.split(b"\0") if field}


# --- limits, concurrency, freshness ---------------------------------------------------------------


@pytest.mark.slow  # waits out the statement timeout
def test_a_long_query_times_out_cleanly_without_holding_up_other_clients(served):
    slow = served.connect(autocommit=True)
    outcome: dict = {}

    def run_long_query() -> None:
        start = time.monotonic()
        try:
            slow.execute("SELECT count(*) FROM range(1000000) a, range(1000000) b")
        except psycopg.Error as exc:
            outcome["error"] = exc
        outcome["seconds"] = time.monotonic() - start

    thread = threading.Thread(target=run_long_query)
    thread.start()
    try:
        with served.connect(autocommit=True) as other:
            for _ in range(10):
                start = time.monotonic()
                assert other.execute("SELECT count(*) FROM gold.branch_fees").fetchone() == (3,)
                assert time.monotonic() - start < 2
        assert thread.is_alive()  # the quick queries ran while the long one did
    finally:
        thread.join(timeout=60)
    assert isinstance(outcome.get("error"), psycopg.errors.QueryCanceled), outcome
    assert "statement timeout" in str(outcome["error"])
    assert TIMEOUT_SECONDS - 0.5 < outcome["seconds"] < TIMEOUT_SECONDS + 10
    assert slow.execute("SELECT count(*) FROM silver.loans").fetchone() == (LOANS.num_rows,)  # the connection goes on
    slow.close()


def test_the_row_limit_refuses_a_larger_result_with_54000(served):
    with served.connect(autocommit=True) as conn:
        assert len(conn.execute(f"SELECT * FROM range({ROW_LIMIT})").fetchall()) == ROW_LIMIT
        with pytest.raises(psycopg.errors.ProgramLimitExceeded, match="RATATOUILLE_SQL_ROW_LIMIT"):
            conn.execute(f"SELECT * FROM range({ROW_LIMIT + 1})")
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_a_new_snapshot_and_a_new_table_are_visible_to_the_next_query_without_reconnecting(served):
    catalog = load_catalog(served.settings)
    first = pa.table({"desk": ["a", "b"], "visits": pa.array([3, 4], pa.int64())})
    write_window(catalog, "gold.desk_visits", first, window=None, run_id="r-v1")
    with served.connect(autocommit=True) as conn:
        assert conn.execute("SELECT sum(visits) FROM gold.desk_visits").fetchone() == (7,)
        write_window(catalog, "gold.desk_visits", pa.table({"desk": ["a", "b", "c"], "visits": pa.array([3, 4, 10], pa.int64())}),
                     window=None, run_id="r-v2")
        assert conn.execute("SELECT sum(visits) FROM gold.desk_visits").fetchone() == (17,)
        # A table written while the connection is open is in the catalog BI tools read.
        write_window(catalog, "silver.renewals", pa.table({"loan_id": pa.array([1], pa.int64())}), window=None, run_id="r-r")
        listed = conn.execute("SELECT n.nspname || '.' || c.relname FROM pg_catalog.pg_class c "
                              "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace ORDER BY 1").fetchall()
        assert ("silver.renewals",) in listed and ("gold.desk_visits",) in listed
    assert "gold|desk_visits|table|ratatouille" in psql(served, r"\dt gold.*")


def test_results_equal_what_duckdb_computes_over_the_same_tables(served):
    summary = ("SELECT branch, loan_date, count(*) AS loans, sum(fee) AS fees, round(avg(minutes), 4) AS minutes, "
               "count(returned_at) AS returned, bool_and(on_time) AS all_on_time FROM silver.loans "
               "GROUP BY ALL ORDER BY branch NULLS FIRST, loan_date")
    ranked = ("SELECT l.loan_id, l.branch, g.fees, rank() OVER (PARTITION BY l.branch ORDER BY l.minutes DESC, l.loan_id) AS r "
              "FROM silver.loans l JOIN gold.branch_fees g USING (branch) QUALIFY r <= 3 ORDER BY l.branch, r")
    with served.connect(autocommit=True) as conn:
        served_summary = conn.execute(summary).fetchall()
        served_ranked = conn.execute(ranked).fetchall()
    # The same SQL, straight on DuckDB over the same Iceberg tables.
    direct = duck.connect(served.settings)
    duck.register_iceberg_views(direct, load_catalog(served.settings))
    assert served_ranked == direct.execute(ranked).fetchall()
    assert served_summary == direct.execute(summary).fetchall()
    direct.close()
    # And the summary from the data as written, in Python.
    groups: dict = {}
    for row in LOANS.to_pylist():
        groups.setdefault((row["branch"], row["loan_date"]), []).append(row)
    nulls_first = sorted(groups, key=lambda key: (key[0] is not None, key[0] or "", key[1]))
    expected = [(branch, day, len(rows), sum((r["fee"] for r in rows if r["fee"] is not None), decimal.Decimal(0)),
                 round(sum(r["minutes"] for r in rows) / len(rows), 4), sum(r["returned_at"] is not None for r in rows),
                 all(r["on_time"] for r in rows))
                for branch, day in nulls_first for rows in [groups[(branch, day)]]]
    assert served_summary == expected


# --- the pieces, without a server -----------------------------------------------------------------


@pytest.mark.parametrize(("sql", "sqlstate"), [
    ("SELECT 1", None), ("SELECT * FROM gold.t WHERE a = $1 AND b = $2", None), ("EXPLAIN SELECT 1", None),
    ("WITH x AS (SELECT * FROM range(3)) SELECT * FROM x, unnest([1, 2]) u(v)", None), ("DESCRIBE gold.t", None),
    ("INSERT INTO t VALUES (1)", "25006"), ("COPY t TO 'x.csv'", "25006"), ("CALL pragma_version()", "25006"),
    ("EXPLAIN ANALYZE INSERT INTO t VALUES (1)", "25006"), ("SELECT 1; DROP TABLE t", "0A000"),
    ("SELECT * FROM read_parquet('s3://bucket/x.parquet')", "42501"), ("FROM 'x.csv'", "42501"),
    ("SELECT (SELECT count(*) FROM read_text('/etc/hosts'))", "42501"), ("PRAGMA show_tables", None), ("PRAGMA version", "42501"),
    ("SELECT * FROM t WHERE a = $name", "0A000"), ("SELEC 1", "42601"),
])
def test_the_guard_lets_through_only_queries_that_read_tables(sql, sqlstate):
    conn = duckdb.connect()
    if sqlstate is None:
        query, _ = guard.check(conn, sql)
        assert query == sql or sql.startswith("PRAGMA")
    else:
        with pytest.raises(guard.Refused) as refused:
            guard.check(conn, sql)
        assert refused.value.sqlstate == sqlstate


def test_the_catalog_shim_macros_do_not_capture_the_callers_aliases():
    """``pg_table_is_visible(c.oid)`` from a query whose ``pg_class`` is aliased ``c``, as psql
    writes it: true for the search_path's tables only (a macro with a ``c`` of its own made it
    true for every table)."""
    conn = duckdb.connect()
    for layer in ("bronze", "silver", "gold"):
        conn.execute(f"CREATE SCHEMA {layer}")
        conn.execute(f"CREATE VIEW {layer}.t_{layer} AS SELECT 1::BIGINT AS id, 2.5::DECIMAL(6,2) AS amount")
    shim.install(conn, ("bronze", "silver", "gold"))
    conn.execute("SET VARIABLE pg_search_path = ['silver']")
    conn.execute("SET VARIABLE pg_user = 'u'")
    psql_dt = ("SELECT n.nspname, c.relname FROM pg_catalog.pg_class c LEFT JOIN pg_catalog.pg_namespace n "
               "ON n.oid = c.relnamespace WHERE c.relkind IN ('r','p','') AND pg_catalog.pg_table_is_visible(c.oid) "
               "ORDER BY 1, 2")
    rewritten = Rewriter("u", "lakehouse", "PostgreSQL 15.0").rewrite(psql_dt)
    assert conn.execute(rewritten).fetchall() == [("silver", "t_silver")]
    columns = conn.execute(Rewriter("u", "lakehouse", "PostgreSQL 15.0").rewrite(
        "SELECT a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod) FROM pg_catalog.pg_attribute a "
        "JOIN pg_catalog.pg_class c ON c.oid = a.attrelid WHERE c.relname = 't_gold' ORDER BY a.attnum")).fetchall()
    assert columns == [("id", "bigint"), ("amount", "numeric(6,2)")]


def test_the_lakehouse_connection_is_locked_down_and_its_views_still_refresh(settings):
    catalog = load_catalog(settings)
    write_window(catalog, "gold.t", pa.table({"a": pa.array([1], pa.int64())}), window=None, run_id="r1")
    lakehouse = ServedLakehouse(settings)
    try:
        lakehouse.refresh()
        cursor = lakehouse.cursor()
        with pytest.raises(duckdb.PermissionException):
            cursor.execute("SELECT * FROM read_csv('/etc/passwd')")
        with pytest.raises(duckdb.InvalidInputException, match="locked"):
            cursor.execute("SET enable_external_access = true")
        shadow = pa.table({"x": [1]})  # noqa: F841 - a Python variable a query must not read
        with pytest.raises(duckdb.CatalogException):
            cursor.execute("SELECT * FROM shadow")
        write_window(catalog, "gold.t", pa.table({"a": pa.array([1, 2], pa.int64())}), window=None, run_id="r2")
        lakehouse.refresh()  # re-creates the view after the lockdown
        assert cursor.execute("SELECT count(*) FROM gold.t").fetchone() == (2,)
        assert cursor.execute("SELECT current_setting('TimeZone')").fetchone() == ("UTC",)
        # Clients' SQL runs where DuckDB verifies extension signatures; the run's own databases skip it.
        assert cursor.execute("SELECT current_setting('allow_unsigned_extensions')").fetchone() == (False,)
        own = duck.session(settings)
        try:
            assert own.execute("SELECT current_setting('allow_unsigned_extensions')").fetchone() == (True,)
        finally:
            own.close()
    finally:
        lakehouse.close()


def test_pg_mimic_is_the_pinned_version_with_the_internals_the_adapter_uses():
    import pg_mimic
    from pg_mimic import PgServer, messages
    from pg_mimic.connection import Connection

    assert pg_mimic.__version__ == mimic.PINNED_VERSION == "0.1.3"
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "pg-mimic==0.1.3" in project["project"]["dependencies"]
    assert list(inspect.signature(PgServer._negotiate_startup).parameters) == ["self", "stream"]
    assert (messages.SSL_REQUEST_CODE, messages.GSSENC_REQUEST_CODE, messages.CANCEL_REQUEST_CODE) == (
        80877103, 80877104, 80877102)
    for name in ("make_error_response", "parse_cancel_request", "parse_startup_message"):
        assert callable(getattr(messages, name))
    source = inspect.getsource(Connection)
    for attribute in ("self.username", "self.database", "self.tx_status", "self.stream"):
        assert attribute in source
    assert hasattr(asyncio.StreamWriter, "start_tls")


def test_the_transaction_status_a_client_reads_follows_begin_errors_and_savepoints(served):
    with served.connect() as conn:  # psycopg 3 opens a transaction before the first statement
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        assert conn.execute("SELECT current_user, current_database()").fetchone() == ("ratatouille", "lakehouse")
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
        with pytest.raises(psycopg.errors.UndefinedTable), conn.transaction():  # a savepoint
            conn.execute("SELECT * FROM gold.nothing_here")
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS  # ROLLBACK TO SAVEPOINT
        with pytest.raises(psycopg.errors.UndefinedTable):
            conn.execute("SELECT * FROM gold.nothing_here")
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INERROR
        conn.rollback()
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        assert conn.execute("SELECT count(*) FROM bronze.scans").fetchone() == (2,)


@pytest.mark.slow  # a server of its own
def test_with_a_certificate_the_server_speaks_tls_only(settings, tmp_path):
    if shutil.which("openssl") is None:
        pytest.skip("needs openssl to make a certificate")
    cert, key = tmp_path / "server.crt", tmp_path / "server.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "2", "-subj", "/CN=127.0.0.1"], check=True, capture_output=True)
    write_window(load_catalog(settings), "gold.t", pa.table({"a": pa.array([5], pa.int64())}), window=None, run_id="r1")
    port, password = free_port(), "tls-" + uuid.uuid4().hex
    env = serve_env(port, password, RATATOUILLE_SQL_TLS_CERT=str(cert), RATATOUILLE_SQL_TLS_KEY=str(key))
    with rat_serve(env, port, tmp_path / "serve.log"):
        options = {"host": "127.0.0.1", "port": port, "user": "ratatouille", "password": password, "dbname": "lakehouse"}
        with psycopg.connect(sslmode="require", **options) as conn:
            assert conn.pgconn.ssl_in_use
            assert conn.execute("SELECT a FROM gold.t").fetchone() == (5,)
        with pytest.raises(psycopg.OperationalError, match="TLS connections only"):
            psycopg.connect(sslmode="disable", **options)
    assert "TLS only" in (tmp_path / "serve.log").read_text()


def test_serve_refuses_to_start_without_a_password_and_names_the_variable(settings):
    env = {k: v for k, v in os.environ.items() if k != "RATATOUILLE_SQL_PASSWORD"}
    result = subprocess.run([sys.executable, "-m", "ratatouille_assets.cli", "serve"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "RATATOUILLE_SQL_PASSWORD is not set" in result.stderr


def test_the_sql_password_is_a_secret_and_the_settings_have_their_defaults(monkeypatch, tmp_path):
    from tests.conftest import use_home

    monkeypatch.setenv("RATATOUILLE_SQL_PASSWORD", "Secr3tZZ'@")
    settings = use_home(monkeypatch, tmp_path / "rt")
    shown = "\n".join(f"{k}={v}" for k, v in settings.public_dict().items()) + repr(settings)
    assert "Secr3tZZ" not in shown and "sql_password=***" in shown
    assert (settings.sql_host, settings.sql_port, settings.sql_user, settings.sql_statement_timeout_seconds,
            settings.sql_row_limit, settings.sql_tls_cert) == ("127.0.0.1", 5433, "ratatouille", 30, 100_000, None)
    monkeypatch.setenv("RATATOUILLE_SQL_TLS_CERT", str(tmp_path / "c.pem"))
    get_settings.cache_clear()
    with pytest.raises(ValueError, match="SQL_TLS_CERT and RATATOUILLE_SQL_TLS_KEY go together"):
        get_settings()
    get_settings.cache_clear()


def test_the_serve_room_imports_no_dagster():
    code = ("import sys; import ratatouille_assets.serve.server, ratatouille_assets.serve.session; "
            "print(sorted(m for m in sys.modules if m.split('.')[0].startswith('dagster')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT).stdout.strip()
    assert out == "[]"


@pytest.mark.slow  # a server of its own
def test_sigint_interrupts_a_running_query_and_stops_the_server_cleanly(settings, tmp_path):
    port, password = free_port(), "int-" + uuid.uuid4().hex
    log = tmp_path / "serve.log"
    with rat_serve(serve_env(port, password), port, log) as process:
        conn = psycopg.connect(host="127.0.0.1", port=port, user="ratatouille", password=password, dbname="lakehouse",
                               autocommit=True)
        outcome: dict = {}

        def run_long_query() -> None:
            try:
                conn.execute("SELECT count(*) FROM range(1000000) a, range(1000000) b")
            except psycopg.Error as exc:
                outcome["error"] = exc

        thread = threading.Thread(target=run_long_query)
        thread.start()
        # The query is on the wire and the client waits for its answer.
        wait_until(lambda: conn.info.transaction_status == psycopg.pq.TransactionStatus.ACTIVE)
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=TIMEOUT_SECONDS + 20) == 0
        thread.join(timeout=30)
    assert isinstance(outcome.get("error"), (psycopg.errors.AdminShutdown, psycopg.OperationalError)), outcome
    assert log.read_text().rstrip().endswith("rat serve: stopped")
