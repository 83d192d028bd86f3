"""One client connection: what it may run, and its queries run on DuckDB with a time and row limit.

pg-mimic speaks the protocol and hands each statement to :meth:`LakehouseSession.prepare`, for
the simple protocol (psql, psycopg2) and the extended one (psycopg 3, pgjdbc) alike. A statement
is one of:

- transaction control (BEGIN, COMMIT, ROLLBACK, SAVEPOINT...): nothing to undo in a read-only
  server, so only the status the client sees changes;
- a session setting (SET, SHOW, RESET, DISCARD...): answered here; ``search_path`` is applied to
  DuckDB, ``statement_timeout`` may lower the server's limit but never raise it, and the rest are
  kept and shown back, since clients set many that mean nothing here;
- a query: catalog SQL rewritten for the shim, checked by :mod:`.guard`, then run by
  :class:`~ratatouille_assets.serve.engine.Engine` on this connection's cursor.

pg-mimic asks a statement for its columns before it has parameters (Describe) and again right
after Bind, before Execute: a statement with parameters is described by DuckDB without running it;
one without is run at the first ask, and its result is kept for the Execute that follows.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import decimal
import logging
import re
import uuid

import duckdb
from pg_mimic import BaseSession, PgError, Portal, ResultColumn, Statement, StaticStatement

from ratatouille_assets.layers import LAYERS
from ratatouille_assets.serve import guard, mimic
from ratatouille_assets.serve.catalog import TEXT, type_oid
from ratatouille_assets.serve.engine import CatalogUnreadable, Column, Engine, Result
from ratatouille_assets.serve.rewrite import Rewriter

log = logging.getLogger("ratatouille.serve")

# Clients choose their catalog queries by the server's version; the shim answers PostgreSQL 15's.
SERVER_VERSION = "15.0"
DEFAULT_SCHEMA = "gold"

QUERY_CANCELED = "57014"
ADMIN_SHUTDOWN = "57P01"
PROGRAM_LIMIT_EXCEEDED = "54000"

_TRANSACTION = re.compile(r"^(?:BEGIN|START\s+TRANSACTION|COMMIT|END|ROLLBACK|ABORT)\b", re.IGNORECASE)
_SAVEPOINT = re.compile(r"^(?:SAVEPOINT|RELEASE)\b", re.IGNORECASE)
_ROLLBACK_TO = re.compile(r"^ROLLBACK\s+(?:WORK\s+|TRANSACTION\s+)?TO\b", re.IGNORECASE)
# Statements that change nothing a read-only session keeps: acknowledged.
_IGNORED = re.compile(r"^(?:DEALLOCATE|LISTEN|UNLISTEN|CLOSE|DISCARD\s+(?:PLANS|SEQUENCES|TEMP|TEMPORARY)|"
                      r"SET\s+SESSION\s+CHARACTERISTICS|SET\s+TRANSACTION)\b", re.IGNORECASE)
_DISCARD_ALL = re.compile(r"^DISCARD\s+ALL$", re.IGNORECASE)  # what a connection pool sends between clients
_SET = re.compile(r"^SET\s+(?:SESSION\s+|LOCAL\s+)?(?:(TIME\s+ZONE)|([\w.]+)\s*(?:\bTO\b|=))\s*(.+)$",
                  re.IGNORECASE | re.DOTALL)
_RESET = re.compile(r"^RESET\s+([\w.]+)$", re.IGNORECASE)
_SHOW = re.compile(r"^SHOW\s+(.+)$", re.IGNORECASE | re.DOTALL)

# SHOW answers for settings a client may ask about: its column's name and value.
_SHOWN = {
    "transaction isolation level": ("transaction_isolation", "read committed"),
    "transaction_isolation": ("transaction_isolation", "read committed"),
    "default_transaction_isolation": ("default_transaction_isolation", "read committed"),
    "transaction_read_only": ("transaction_read_only", "on"),
    "default_transaction_read_only": ("default_transaction_read_only", "on"),
    "server_version": ("server_version", SERVER_VERSION),
    "server_version_num": ("server_version_num", "150000"),
    "server_encoding": ("server_encoding", "UTF8"),
    "client_encoding": ("client_encoding", "UTF8"),
    "standard_conforming_strings": ("standard_conforming_strings", "on"),
    "integer_datetimes": ("integer_datetimes", "on"),
    "timezone": ("TimeZone", "UTC"),
    "time zone": ("TimeZone", "UTC"),
    "datestyle": ("DateStyle", "ISO, MDY"),
    "intervalstyle": ("IntervalStyle", "postgres"),
    "max_identifier_length": ("max_identifier_length", "63"),
    "max_index_keys": ("max_index_keys", "32"),
    "lc_collate": ("lc_collate", "C"),
    "lc_ctype": ("lc_ctype", "C"),
    "is_superuser": ("is_superuser", "off"),
}


@dataclasses.dataclass(frozen=True)
class Limits:
    timeout_seconds: float
    row_limit: int


class LakehouseSession(BaseSession):
    """One client connection: its DuckDB cursor, search_path and statement timeout."""

    def __init__(self, engine: Engine, limits: Limits) -> None:
        self.engine = engine
        self.limits = limits
        self.timeout = limits.timeout_seconds
        self.settings: dict[str, str] = {}
        self.connection = None
        self.cursor: duckdb.DuckDBPyConnection | None = None
        self.rewriter: Rewriter | None = None
        self.search_path = [DEFAULT_SCHEMA]

    async def init(self, connection) -> None:
        self.connection = connection
        user, database = mimic.user_of(connection), mimic.database_of(connection)
        self.cursor = self.engine.cursor()
        self.rewriter = Rewriter(user, database, version_text())
        self.cursor.execute("SET VARIABLE pg_user = ?", [user])
        self.cursor.execute("SET VARIABLE pg_dbname = ?", [database])
        self._use_schemas([DEFAULT_SCHEMA])
        log.info("%s connected as %s (database %s)", mimic.peer_of(connection), user, database)

    async def close(self) -> None:
        if self.cursor is not None:
            self.cursor.close()

    async def prepare(self, sql: str, param_oids: list[int | None]) -> Statement:
        text = sql.strip().rstrip(";").strip()
        if not text:
            return StaticStatement("", None, [])
        statement = self._session_statement(text)
        if statement is not None:
            return statement
        try:
            duck_sql, parameters = guard.check(self.cursor, self.rewriter.rewrite(text))
        except guard.Refused as refused:
            log.info("refused (%s): %s", refused.sqlstate, _abridged(text))
            raise PgError(refused.sqlstate, refused.message) from None
        return Query(self, duck_sql, param_oids, parameters)

    # --- transaction control and settings ---------------------------------------------------------

    def _session_statement(self, text: str) -> Statement | None:
        if _ROLLBACK_TO.match(text):
            return StaticStatement("ROLLBACK", None, [], self._recover)
        if _TRANSACTION.match(text):
            return self._transaction(text.split(None, 1)[0].upper())
        if _SAVEPOINT.match(text) or _IGNORED.match(text):
            return StaticStatement(text.split(None, 1)[0].upper(), None, [])
        if _DISCARD_ALL.match(text):
            return StaticStatement("DISCARD", None, [], lambda: self._reset("all"))
        if (match := _SET.match(text)) is not None:
            name = "timezone" if match.group(1) else match.group(2).lower()
            return StaticStatement("SET", None, [], lambda: self._set(name, match.group(3).strip()))
        if (match := _RESET.match(text)) is not None:
            return StaticStatement("RESET", None, [], lambda: self._reset(match.group(1).lower()))
        if (match := _SHOW.match(text)) is not None:
            return self._show(" ".join(match.group(1).strip('"').lower().split()))
        return None

    def _transaction(self, keyword: str) -> Statement:
        """BEGIN and START TRANSACTION open a transaction as the client sees it; COMMIT, END,
        ROLLBACK and ABORT close it. Nothing is ever written, so there is nothing to commit or undo."""
        opens = keyword in ("BEGIN", "START")
        status = mimic.IN_TRANSACTION if opens else mimic.IDLE
        return StaticStatement("BEGIN" if opens else keyword, None, [],
                               lambda: mimic.set_transaction_status(self.connection, status))

    def _recover(self) -> None:
        """ROLLBACK TO SAVEPOINT: a failed transaction is usable again (psycopg 3 wraps its
        probes in savepoints). Nothing was written, so there is nothing else to undo."""
        if mimic.transaction_status(self.connection) == mimic.FAILED:
            mimic.set_transaction_status(self.connection, mimic.IN_TRANSACTION)

    def _set(self, name: str, value: str) -> None:
        plain = value.strip().strip("'\"")
        default = plain.upper() == "DEFAULT"
        if name == "search_path":
            self._use_schemas([DEFAULT_SCHEMA] if default else _schema_list(value))
        elif name == "statement_timeout":
            self.timeout = self.limits.timeout_seconds if default else self._lowered_timeout(plain)
        elif default:
            self.settings.pop(name, None)
        else:
            self.settings[name] = plain

    def _reset(self, name: str) -> None:
        if name in ("all", "search_path"):
            self._use_schemas([DEFAULT_SCHEMA])
        if name in ("all", "statement_timeout"):
            self.timeout = self.limits.timeout_seconds
        if name == "all":
            self.settings.clear()
        self.settings.pop(name, None)

    def _lowered_timeout(self, value: str) -> float:
        """``SET statement_timeout``: a client may lower the server's limit, never raise it (0
        means the server's limit)."""
        seconds = _duration_seconds(value)
        if seconds <= 0:
            return self.limits.timeout_seconds
        return min(seconds, self.limits.timeout_seconds)

    def _use_schemas(self, schemas: list[str]) -> None:
        unknown = [schema for schema in schemas if schema not in LAYERS]
        if unknown:
            raise PgError("3F000", f'schema "{unknown[0]}" does not exist (the schemas are {", ".join(LAYERS)})')
        schemas = schemas or [DEFAULT_SCHEMA]
        self.cursor.execute("SET search_path = ?", [",".join(schemas)])
        self.cursor.execute("SET VARIABLE pg_search_path = ?", [schemas])
        self.search_path = schemas

    def _show(self, name: str) -> Statement:
        if name == "search_path":
            shown = ("search_path", ", ".join(self.search_path))
        elif name == "statement_timeout":
            shown = ("statement_timeout", f"{round(self.timeout * 1000)}ms")
        elif name in self.settings:
            shown = (name, self.settings[name])
        elif name in _SHOWN:
            shown = _SHOWN[name]
        else:
            raise PgError("42704", f'unrecognized configuration parameter "{name}"')
        column, value = shown
        return StaticStatement("SHOW", [ResultColumn(column, TEXT)], [(value,)])

    # --- running queries --------------------------------------------------------------------------

    async def run(self, sql: str, params: list) -> Result:
        limit = self.limits.row_limit
        result = await self._in_pool(lambda: self.engine.run(self.cursor, sql, params, limit))
        if len(result.rows) > limit:
            raise PgError(PROGRAM_LIMIT_EXCEEDED, f"the result has more than {limit} rows, this server's limit "
                                                  "(RATATOUILLE_SQL_ROW_LIMIT): aggregate, filter or add a LIMIT")
        return result

    async def describe(self, sql: str, parameters: int) -> list[Column]:
        return await self._in_pool(lambda: self.engine.describe(self.cursor, sql, parameters))

    async def _in_pool(self, work):
        """``work`` on the engine's threads, interrupted when the statement timeout passes, the
        client cancels (pg-mimic cancels this task on a CancelRequest) or the server stops."""
        if not self.engine.accepting:
            raise PgError(ADMIN_SHUTDOWN, "the server is shutting down")
        future = asyncio.get_running_loop().run_in_executor(self.engine.pool, work)
        self.engine.running.add(self.cursor)
        try:
            return await asyncio.wait_for(asyncio.shield(future), self.timeout)
        except TimeoutError:
            await self._interrupt(future)
            raise PgError(QUERY_CANCELED, f"canceling statement due to statement timeout: it ran longer than "
                                          f"{self.timeout:g} s") from None
        except asyncio.CancelledError:
            await self._interrupt(future)
            raise
        except duckdb.InterruptException:
            if self.engine.accepting:
                raise PgError(QUERY_CANCELED, "canceling statement due to user request") from None
            raise PgError(ADMIN_SHUTDOWN, "terminating the statement: the server is shutting down") from None
        except duckdb.Error as exc:
            raise PgError(sqlstate(exc), _first_line(exc)) from None
        except CatalogUnreadable as exc:
            log.warning("%s", exc)
            raise PgError("58000", str(exc)) from None
        finally:
            self.engine.running.discard(self.cursor)

    async def _interrupt(self, future) -> None:
        """Interrupt this connection's DuckDB query until its thread is free. Again and again: the
        work may still be waiting for a thread or re-pointing views when the first one lands."""
        while not future.done():
            self.cursor.interrupt()
            await asyncio.wait([future], timeout=0.05)
        if not future.cancelled():
            future.exception()  # the interrupt's error is expected: retrieved, so asyncio does not log it


class Query(Statement):
    """A SELECT or EXPLAIN, rewritten and checked, to run on DuckDB."""

    def __init__(self, session: LakehouseSession, sql: str, param_oids: list[int | None], parameters: int) -> None:
        self.session = session
        self.duck_sql = sql
        self.sql = "SELECT"  # pg-mimic derives the command tag (SELECT n) from it
        self.param_oids = list(param_oids) + [None] * (parameters - len(param_oids))
        self.parameters = parameters
        self._bound: Rows | None = None
        self._ahead: Result | None = None

    async def describe(self) -> list[ResultColumn]:
        if self._bound is not None:
            columns = (await self._bound.result()).columns
        elif self.parameters == 0:
            self._ahead = await self.session.run(self.duck_sql, [])
            columns = self._ahead.columns
        else:
            columns = await self.session.describe(self.duck_sql, self.parameters)
        return [ResultColumn(column.name, type_oid(column.duck_type)) for column in columns]

    def bind(self, params: list) -> Portal:
        if len(params) != self.parameters:
            raise PgError("08P01", f"bind message supplies {len(params)} parameters, "
                                   f"but the statement requires {self.parameters}")
        values = [typed_parameter(oid, value) for oid, value in zip(self.param_oids, params, strict=False)]
        ahead, self._ahead = (self._ahead if not values else None), None
        self._bound = Rows(self, values, ahead)
        return self._bound


class Rows(Portal):
    """A bound query: run once, at the first ask, then handed out in as many Executes as the
    client asks for (pgjdbc's fetch size)."""

    def __init__(self, query: Query, params: list, result: Result | None) -> None:
        self.query = query
        self.params = params
        self._result = result
        self._sent = 0

    async def result(self) -> Result:
        if self._result is None:
            self._result = await self.query.session.run(self.query.duck_sql, self.params)
        return self._result

    async def execute(self, max_rows: int) -> tuple[list[tuple], bool]:
        rows = (await self.result()).rows
        end = len(rows) if max_rows <= 0 else min(len(rows), self._sent + max_rows)
        batch = rows[self._sent:end]
        self._sent = end
        return batch, end < len(rows)


def typed_parameter(oid: int | None, value):
    """A parameter as DuckDB should see it. pg-mimic hands parameters over as text (binary ones
    decoded to the same text); with the client's declared type, DuckDB gets a value of that type
    (``$1 + 1`` with an int8 is arithmetic, not a string). Untyped ones stay text, which DuckDB
    casts where they are used, as PostgreSQL does with an unknown literal."""
    if value is None or oid is None or not isinstance(value, str):
        return value
    parse = _PARAMETER_TYPES.get(oid)
    if parse is None:
        return value
    try:
        return parse(value)
    except (ValueError, decimal.InvalidOperation):
        raise PgError("22P02", f"invalid input for a parameter of type OID {oid}: {value!r}") from None


def _timestamp(text: str, *, utc: bool) -> dt.datetime:
    value = dt.datetime.fromisoformat(text)
    if utc and value.tzinfo is None:
        value = value.replace(tzinfo=dt.timezone.utc)
    return value


def _boolean(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("t", "true", "y", "yes", "on", "1"):
        return True
    if lowered in ("f", "false", "n", "no", "off", "0"):
        return False
    raise ValueError(text)


_PARAMETER_TYPES = {
    16: _boolean,
    17: lambda text: bytes.fromhex(text.removeprefix("\\x")),
    20: int,
    21: int,
    23: int,
    26: int,
    700: float,
    701: float,
    1700: decimal.Decimal,
    1082: dt.date.fromisoformat,
    1083: dt.time.fromisoformat,
    1114: lambda text: _timestamp(text, utc=False),
    1184: lambda text: _timestamp(text, utc=True),
    2950: uuid.UUID,
}


def sqlstate(exc: duckdb.Error) -> str:
    """The SQLSTATE PostgreSQL would give for what DuckDB refused."""
    message = str(exc)
    if isinstance(exc, duckdb.InterruptException):
        return QUERY_CANCELED
    if isinstance(exc, duckdb.ParserException):
        return "42601"
    if isinstance(exc, duckdb.CatalogException):
        if "Function" in message:
            return "42883"
        if "Schema" in message:
            return "3F000"
        return "42P01"
    if isinstance(exc, duckdb.BinderException):
        return "42703" if "column" in message.lower() else "42804"
    if isinstance(exc, duckdb.PermissionException):
        return guard.INSUFFICIENT_PRIVILEGE
    if isinstance(exc, duckdb.TransactionException):
        return guard.READ_ONLY
    if isinstance(exc, duckdb.ConversionException):
        return "22P02"
    if isinstance(exc, duckdb.OutOfRangeException):
        return "22003"
    if isinstance(exc, duckdb.InvalidInputException):
        return "22023"
    if isinstance(exc, duckdb.OutOfMemoryException):
        return "53200"
    if isinstance(exc, (duckdb.IOException, duckdb.HTTPException)):
        return "58030"
    return "XX000"


def version_text() -> str:
    """What ``SELECT version()`` answers (clients parse the PostgreSQL version out of it)."""
    return f"PostgreSQL {SERVER_VERSION} (Ratatouille lakehouse, DuckDB {duckdb.__version__})"


_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "min": 60.0, "h": 3600.0, "d": 86400.0}


def _duration_seconds(value: str) -> float:
    """A PostgreSQL duration setting (``5000``, ``'5s'``, ``'1min'``; bare numbers are ms)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(us|ms|s|min|h|d)?\s*", value, re.IGNORECASE)
    if match is None:
        raise PgError("22023", f'invalid value for parameter "statement_timeout": "{value}"')
    return float(match.group(1)) * _UNITS[(match.group(2) or "ms").lower()]


def _schema_list(value: str) -> list[str]:
    """``SET search_path TO gold, "silver", public``: the layers named (PostgreSQL's own entries,
    ``$user``, ``public`` and ``pg_catalog``, have no counterpart here and are left out)."""
    names = [part.strip().strip("'\"") for part in value.split(",")]
    return [name for name in names if name and name not in ("$user", "public", "pg_catalog")]


def _abridged(sql: str) -> str:
    flat = " ".join(sql.split())
    return flat if len(flat) <= 200 else flat[:200] + "..."


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
