"""DuckDB for the server: the lakehouse's views, locked down, and the threads that run queries.

The server reads the lakehouse as the SDK does (:class:`ratatouille_assets.sdk.Lakehouse`): one
in-memory DuckDB per process, a view ``<layer>.<table>`` per Iceberg table, and before each query
the views of tables whose metadata changed re-pointed (one catalog query), so the next query sees
a new snapshot without a restart. Every client connection gets a cursor of its own on that
database. Queries run on a pool of threads: a slow one holds a thread, not the server, and the
event loop that speaks the protocol to every client never waits on DuckDB.
"""

from __future__ import annotations

import contextlib
import dataclasses
from concurrent.futures import ThreadPoolExecutor

import duckdb

from ratatouille_assets.layers import LAYERS
from ratatouille_assets.sdk import Lakehouse
from ratatouille_assets.serve import catalog, guard
from ratatouille_assets.settings import Settings

# Queries that can run at once, over all clients; more wait for a thread (their statement
# timeout runs while they wait). DuckDB spreads each one over RATATOUILLE_DUCKDB_THREADS.
WORKERS = 8


@dataclasses.dataclass(frozen=True)
class Column:
    name: str
    duck_type: str  # as DuckDB spells it: BIGINT, DECIMAL(10,2), STRUCT(a INTEGER)...


@dataclasses.dataclass(frozen=True)
class Result:
    columns: list[Column]
    rows: list[tuple]


_EXPLAIN_COLUMNS = (Column("explain_key", "VARCHAR"), Column("explain_value", "VARCHAR"))


class CatalogUnreadable(Exception):
    """The views could not be brought up to date (the catalog or a table's metadata unreadable)."""


class ServedLakehouse(Lakehouse):
    """The SDK's lakehouse, its DuckDB prepared for queries from the network: a schema per layer
    (so each exists before it has a table), the PostgreSQL catalog shim, and the lockdown."""

    def _connection(self) -> duckdb.DuckDBPyConnection:
        if self._conn is None:
            from ratatouille_assets.lakehouse import duck

            conn = duck.connect(self.settings)
            try:
                for layer in LAYERS:
                    conn.execute(f"CREATE SCHEMA IF NOT EXISTS {duck.quote_ident(layer)}")
                catalog.install(conn, LAYERS)
                guard.lock_down(conn, self.settings)
            except BaseException:
                conn.close()
                raise
            self._conn = conn
        return self._conn

    def refresh(self) -> None:
        """Re-point the views at the tables' current snapshots (see ``Lakehouse._refresh``)."""
        with self._lock:
            self._refresh()

    def cursor(self) -> duckdb.DuckDBPyConnection:
        with self._lock:
            return self._connection().cursor()


class Engine:
    """The lakehouse and the pool of threads the queries of every client run on."""

    def __init__(self, settings: Settings) -> None:
        self.lakehouse = ServedLakehouse(settings)
        self.pool = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="rat-serve")
        # Kept by the sessions on the event loop's thread: whether new statements may start, and
        # the cursors whose statement is on the pool (a shutdown interrupts them).
        self.accepting = True
        self.running: set[duckdb.DuckDBPyConnection] = set()

    def open(self) -> None:
        """Connect and read the catalog once, so that a server that cannot fails at its start."""
        self.lakehouse.refresh()

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.lakehouse.close()

    def cursor(self) -> duckdb.DuckDBPyConnection:
        return self.lakehouse.cursor()

    def run(self, cursor: duckdb.DuckDBPyConnection, sql: str, params: list, limit: int) -> Result:
        """Run ``sql`` on the current snapshots; at most ``limit + 1`` rows are fetched, so the
        caller can tell a result that reached the limit from one that went beyond it. Blocking:
        call it on :attr:`pool`."""
        self._refresh()
        cursor.execute("BEGIN TRANSACTION READ ONLY")
        try:
            cursor.execute(sql, params)
            columns = _columns(cursor.description)
            rows = cursor.fetchmany(limit + 1) if columns else []
        finally:
            # After an interrupt DuckDB may have ended the transaction already.
            with contextlib.suppress(duckdb.Error):
                cursor.execute("ROLLBACK")
        return Result(columns, _on_the_wire(rows, columns))

    def describe(self, cursor: duckdb.DuckDBPyConnection, sql: str, parameters: int) -> list[Column]:
        """The columns ``sql`` would return, without running it: DuckDB binds it with NULL for
        each parameter (a column that is a bare parameter is typed as DuckDB guesses). Blocking."""
        if duckdb.extract_statements(sql)[0].type == duckdb.StatementType.EXPLAIN:
            return list(_EXPLAIN_COLUMNS)  # DESCRIBE takes no EXPLAIN; its columns are always these
        self._refresh()
        described = cursor.execute(f"DESCRIBE {sql}", [None] * parameters).fetchall()
        return [Column(name, kind) for name, kind, *_ in described]

    def _refresh(self) -> None:
        try:
            self.lakehouse.refresh()
        except Exception as exc:
            raise CatalogUnreadable(f"the lakehouse's tables could not be brought up to date: "
                                    f"{type(exc).__name__}: {_first_line(exc)}") from exc


def _columns(description) -> list[Column]:
    if description is None:
        return []
    return [Column(name, str(kind)) for name, kind, *_ in description]


def _on_the_wire(rows: list[tuple], columns: list[Column]) -> list[tuple]:
    """``rows`` with the values of columns sent as JSON documents (structs, maps, other lists)
    turned into their text; the rest go to pg-mimic as DuckDB returned them."""
    converters = [catalog.wire_values(column.duck_type) for column in columns]
    if not any(converters):
        return rows
    return [tuple(value if value is None or convert is None else convert(value)
                  for convert, value in zip(converters, row, strict=True)) for row in rows]


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else ""
