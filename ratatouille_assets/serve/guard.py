"""What a statement from the network may do: read the lakehouse's tables, nothing else.

Four walls, each sufficient against what the ones before it miss:

1. The statement is classified by DuckDB's own parser (``duckdb.extract_statements``): one
   SELECT or EXPLAIN, or it is refused with SQLSTATE 25006. ``SELECT * FROM read_csv('/etc/passwd')``
   is a SELECT, though, so that is not enough.
2. Its parse tree (``json_serialize_sql``) may call no table function but a few that read no files
   (``range``, ``unnest``...) and name no file as a table (``FROM 's3://bucket/x.csv'``). A tree
   that cannot be serialized is refused: unchecked means refused. What runs is the text checked
   (a PRAGMA, which DuckDB classifies as a SELECT, runs as the SELECT it expands to).
3. DuckDB itself runs with ``enable_external_access = false``: files only under the warehouse
   (``allowed_directories``), which the views' ``iceberg_scan`` needs, and its configuration
   locked. For a local warehouse that is sound on its own: DuckDB resolves ``..`` before it
   compares. For an S3 warehouse it is not: DuckDB compares the URL as written, and its S3 client
   then resolves ``s3://bucket/warehouse/../landing/x`` to ``/bucket/landing/x`` (or, with one more
   ``..``, to another bucket the keys can read). Wall 2 is what keeps paths out of queries; give the
   server S3 keys that can only read the warehouse prefix as well.
4. Each query runs in a read-only DuckDB transaction (``EXPLAIN ANALYZE CREATE ...`` is an EXPLAIN
   that writes; the transaction refuses the write).
"""

from __future__ import annotations

import json
import re

import duckdb

from ratatouille_assets.settings import Settings

READ_ONLY = "25006"
SYNTAX_ERROR = "42601"
INSUFFICIENT_PRIVILEGE = "42501"
FEATURE_NOT_SUPPORTED = "0A000"

_ALLOWED = (duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN)
# Table functions that compute rows and read nothing.
TABLE_FUNCTIONS = frozenset({"range", "generate_series", "unnest", "json_each", "json_tree"})
_EXPLAIN = re.compile(r"^\s*EXPLAIN\s+(?:ANALY[SZ]E\s+)?(?:\([^)]*\)\s*)?", re.IGNORECASE)
# A table name that is a path or a URL (DuckDB reads such a "table" as a file).
_PATH_LIKE = re.compile(r"[/\\:.]")


class Refused(Exception):
    """A statement the server does not run, with the SQLSTATE to answer."""

    def __init__(self, sqlstate: str, message: str) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate
        self.message = message


def check(conn: duckdb.DuckDBPyConnection, sql: str) -> tuple[str, int]:
    """Refuse ``sql`` unless it is one query that reads only the lakehouse's tables. Return the
    query to run, which is the query checked (DuckDB expands a PRAGMA into a SELECT of its own:
    that SELECT is what is checked and run), and how many parameters it takes (``$1``...)."""
    statement = _one_statement(sql)
    query = statement.query
    checked = query
    if statement.type == duckdb.StatementType.EXPLAIN:
        # What is explained must pass too: EXPLAIN ANALYZE runs it.
        checked = _EXPLAIN.sub("", query, count=1)
        _one_statement(checked)
    _check_reads(conn, checked)
    return query, _parameter_count(statement.named_parameters)


def _one_statement(sql: str):
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as exc:
        raise Refused(SYNTAX_ERROR, _first_line(exc)) from None
    if len(statements) != 1:
        raise Refused(FEATURE_NOT_SUPPORTED, "send one statement at a time")
    statement = statements[0]
    if statement.type not in _ALLOWED:
        raise Refused(READ_ONLY, f"cannot execute {statement.type.name} in a read-only server "
                                 "(only SELECT and EXPLAIN are run)")
    return statement


def _parameter_count(names) -> int:
    """``$1``..``$n`` (or ``?``): the highest number. Named ones (``$name``) cannot be bound."""
    if any(not name.isdigit() for name in names):
        raise Refused(FEATURE_NOT_SUPPORTED, "named parameters ($name) are not supported: use $1, $2...")
    return max((int(name) for name in names), default=0)


def _check_reads(conn: duckdb.DuckDBPyConnection, query: str) -> None:
    (serialized,) = conn.execute("SELECT json_serialize_sql(?)", [query]).fetchone()
    tree = json.loads(serialized)
    if tree.get("error"):
        raise Refused(FEATURE_NOT_SUPPORTED, f"this statement cannot be checked, so it is not run: "
                                             f"{tree.get('error_message', 'not a plain SELECT')}")
    for node in _nodes(tree):
        kind = node.get("type")
        if kind == "TABLE_FUNCTION":
            name = (node.get("function") or {}).get("function_name")
            if name not in TABLE_FUNCTIONS:
                raise Refused(INSUFFICIENT_PRIVILEGE, f"{name}() is not available here: queries read the "
                                                      "lakehouse's tables (bronze.x, silver.y, gold.z), not files")
        elif kind == "BASE_TABLE" and _PATH_LIKE.search(node.get("table_name") or ""):
            raise Refused(INSUFFICIENT_PRIVILEGE, f"{node['table_name']!r} is not a table: queries read the "
                                                  "lakehouse's tables (bronze.x, silver.y, gold.z), not files")


def _nodes(tree):
    """Every JSON object in ``tree`` (table references sit at any depth: joins, subqueries, CTEs)."""
    stack = [tree]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            yield item
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def lock_down(conn: duckdb.DuckDBPyConnection, settings: Settings) -> None:
    """Wall 3 on the lakehouse's connection (after the extensions are loaded, which reads their
    files): no file outside the warehouse, no configuration change, and what every cursor of it
    inherits set globally first (a cursor cannot SET anything afterwards)."""
    conn.execute("SET GLOBAL TimeZone = 'UTC'")
    # The Python client would otherwise read a pandas or Arrow variable of the calling thread's
    # frames when a query names a table that does not exist.
    conn.execute("SET GLOBAL python_enable_replacements = false")
    conn.execute(f"SET allowed_directories = [{_sql_text(warehouse_directory(settings))}]")
    conn.execute("SET enable_external_access = false")
    conn.execute("SET lock_configuration = true")


def warehouse_directory(settings: Settings) -> str:
    """The warehouse as an ``allowed_directories`` entry: a local path or ``s3://bucket/prefix/``."""
    return settings.warehouse.rstrip("/") + "/"


def _sql_text(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0]
