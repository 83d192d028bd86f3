"""DuckDB connections: in-memory per run, extensions from the pip wheels, limits from settings.

There is no shared ``.duckdb`` file, so runs never fight over a lock. Iceberg tables are exposed
as views over ``iceberg_scan(<metadata location>)`` so that filters on partition columns prune
data files, and nothing is copied into DuckDB.
"""

from __future__ import annotations

import importlib.util
import queue
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path

import duckdb
from pyiceberg.catalog import Catalog

from ratatouille_assets.lakehouse.catalog import table_locations
from ratatouille_assets.settings import Settings, get_settings

DUCKDB_VERSION = "v" + duckdb.__version__
# Order matters: iceberg needs avro loaded first.
EXTENSIONS = ("avro", "iceberg", "httpfs")


def extension_path(name: str) -> Path:
    """Where the ``duckdb-extension-<name>`` wheel put the binary (DuckDB cannot download here)."""
    spec = importlib.util.find_spec(f"duckdb_extension_{name}")
    if spec is None or spec.origin is None:
        raise RuntimeError(
            f"DuckDB extension '{name}' is not installed: add duckdb-extension-{name}=={duckdb.__version__}"
            " to the environment (uv sync)."
        )
    path = Path(spec.origin).parent / "extensions" / DUCKDB_VERSION / f"{name}.duckdb_extension"
    if not path.exists():
        raise RuntimeError(f"DuckDB extension binary missing at {path}: its wheel does not match duckdb {duckdb.__version__}")
    return path


def configure(conn: duckdb.DuckDBPyConnection, settings: Settings | None = None) -> None:
    """Apply limits and load extensions on an existing connection (also used by the dbt plugin)."""
    settings = settings or get_settings()
    conn.execute("SET autoinstall_known_extensions = false")
    conn.execute("SET autoload_known_extensions = false")
    conn.execute(f"SET memory_limit = '{settings.duckdb_memory_limit}'")
    conn.execute(f"SET threads = {int(settings.duckdb_threads)}")
    conn.execute(f"SET temp_directory = {_sql_text(settings.duckdb_temp_directory)}")
    conn.execute("SET TimeZone = 'UTC'")
    for name in EXTENSIONS:
        conn.execute(f"LOAD '{extension_path(name)}'")
    if settings.uses_s3:
        _create_s3_secret(conn, settings)


def _sql_text(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _create_s3_secret(conn: duckdb.DuckDBPyConnection, settings: Settings) -> None:
    # A secret, not SET s3_access_key_id: secrets do not show in duckdb_settings(). DuckDB takes no
    # parameters in CREATE SECRET, so the values are SQL-quoted (a quote in a key cannot end the
    # literal), and an error is re-raised without DuckDB's message, which quotes the statement.
    parts = ["TYPE s3", "URL_STYLE 'path'"]
    if settings.s3_endpoint:
        endpoint = settings.s3_endpoint
        use_ssl = endpoint.startswith("https://")
        endpoint = endpoint.split("://", 1)[-1]
        parts += [f"ENDPOINT {_sql_text(endpoint)}", f"USE_SSL {str(use_ssl).lower()}"]
    if settings.s3_region:
        parts.append(f"REGION {_sql_text(settings.s3_region)}")
    if settings.s3_access_key_id:
        parts.append(f"KEY_ID {_sql_text(settings.s3_access_key_id.reveal())}")
        parts.append(f"SECRET {_sql_text(settings.s3_secret_access_key.reveal())}")
    try:
        conn.execute(f"CREATE OR REPLACE SECRET ratatouille_s3 ({', '.join(parts)})")
    except duckdb.Error as exc:
        raise RuntimeError(
            f"DuckDB refused the S3 settings ({type(exc).__name__}; its message is not shown because it quotes "
            "the credentials): check RATATOUILLE_S3_ENDPOINT and RATATOUILLE_S3_REGION"
        ) from None


# The config of the databases a run opens for its own work (bronze, Soda, dbt): DuckDB does not
# verify the signatures of the extension binaries loaded by path above. Verifying hashes all 83 MB
# of them, 0.2 s for every database, three or more per run; they come from the pip wheels, whose
# hashes uv checked against uv.lock when it installed them. The databases that run other people's
# SQL (the Postgres endpoint, notebooks, `rat query`) keep DuckDB's check.
RUN_CONFIG = {"allow_unsigned_extensions": "true"}


def connect(settings: Settings | None = None, *, config: dict[str, str] | None = None) -> duckdb.DuckDBPyConnection:
    """A fresh in-memory DuckDB connection, configured; ``config``: DuckDB's options at start."""
    conn = duckdb.connect(":memory:", config=config or {})
    configure(conn, settings)
    return conn


_SHARED: dict[tuple, duckdb.DuckDBPyConnection] = {}
_SHARED_LOCK = threading.Lock()


def open_databases() -> int:
    """How many shared databases this process holds open (a process about to fork must hold none)."""
    with _SHARED_LOCK:
        return len(_SHARED)


def session(settings: Settings | None = None) -> duckdb.DuckDBPyConnection:
    """A new connection to this process's shared in-memory database, configured once.

    Opening a configured database costs time (loading the extensions); a connection to an open
    one costs nothing, and a run opens dozens (every bronze asset, every Soda scan). Connections
    share tables and views but not TEMP objects, so work that must not be seen by others (a scan's
    views, CSV reject tables) uses TEMP objects. Close it when done; the database stays open.
    """
    settings = settings or get_settings()
    key = (
        settings.duckdb_memory_limit, settings.duckdb_threads, settings.s3_endpoint, settings.s3_region,
        settings.s3_access_key_id.reveal(), settings.s3_secret_access_key.reveal(),
    )
    with _SHARED_LOCK:
        root = _SHARED.get(key)
        if root is None:
            root = _SHARED[key] = connect(settings, config=RUN_CONFIG)
    conn = root.cursor()
    conn.execute("SET TimeZone = 'UTC'")
    return conn


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def register_iceberg_views(conn: duckdb.DuckDBPyConnection, catalog: Catalog, branch: str = "main") -> list[str]:
    """Create ``<namespace>.<table>`` views over every Iceberg table in the catalog: main's current
    snapshots, or each table's ``branch`` where it has one (dev mode: main where it has none)."""
    created = []
    if branch != "main":
        from ratatouille_assets.lakehouse.branches import branch_views

        for name, (location, snapshot_id) in sorted(branch_views(catalog, branch).items()):
            namespace, _, table = name.partition(".")
            point_view(conn, namespace, table, location, snapshot_id)
            created.append(name)
        return created
    for (namespace, name), location in sorted(table_locations(catalog).items()):
        point_view(conn, namespace, name, location)
        created.append(f"{namespace}.{name}")
    return created


def point_view(
    conn: duckdb.DuckDBPyConnection, namespace: str, name: str, metadata_location: str, snapshot_id: int | None = None
) -> None:
    """(Re)point ``namespace.name`` at one Iceberg metadata file: its current snapshot, or
    ``snapshot_id`` (a branch head, a tag, a point in the table's past)."""
    conn.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_ident(namespace)}")
    conn.execute(f"CREATE OR REPLACE VIEW {quote_ident(namespace)}.{quote_ident(name)} AS SELECT * FROM "
                 + scan_sql(metadata_location, snapshot_id))


def scan_sql(metadata_location: str, snapshot_id: int | None = None) -> str:
    """``iceberg_scan(...)`` of a table's current snapshot, or of ``snapshot_id``."""
    location = metadata_location.replace("'", "''")
    at = f", snapshot_from_id = {int(snapshot_id)}" if snapshot_id is not None else ""
    return f"iceberg_scan('{location}'{at})"


def prefetched(batches: Iterable, depth: int) -> Iterator:
    """``batches``' items, the next ``depth`` computed by a thread while the caller works on the
    current one (DuckDB and Parquet encoding both release the GIL). An error of the thread is
    raised here, in order; the thread has ended whenever this generator has."""
    items: queue.Queue = queue.Queue(depth)
    stop = threading.Event()
    end = object()

    def produce() -> None:
        try:
            for item in batches:
                while not stop.is_set():
                    try:
                        items.put((item, None), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            items.put((end, None))
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            items.put((end, exc))

    thread = threading.Thread(target=produce, name="stream-ahead", daemon=True)
    thread.start()
    try:
        while True:
            item, error = items.get()
            if item is end:
                if error is not None:
                    raise error
                return
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting for room
            try:
                items.get(timeout=0.1)
            except queue.Empty:
                pass
        thread.join()
