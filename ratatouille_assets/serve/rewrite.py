"""PostgreSQL catalog SQL, as BI clients send it, rewritten for DuckDB and the shim (:mod:`.catalog`).

Only a statement that mentions a catalog construct (``pg_*``, ``information_schema``,
``OPERATOR(pg_catalog.~)``, ``::regclass``, ``version()``, ``current_user``...) is parsed with
sqlglot as PostgreSQL and written back as DuckDB; any other statement goes to DuckDB untouched
(its parser is PostgreSQL's, so user SQL needs nothing, and a round trip through sqlglot could
only change it). A statement sqlglot cannot parse also goes through untouched, for DuckDB to
report on.

The rewrites: catalog tables to the shim's (``pg_catalog.pg_class`` -> ``pgshim.pg_class AS
pg_class``), catalog functions to the shim's macros, ``OPERATOR(pg_catalog.~)`` to a regular
expression match (DuckDB's ``~`` matches the whole string, PostgreSQL's any part), ``COLLATE``
dropped, ``reg*`` casts to lookups, PostgreSQL type names (``pg_catalog.text``, ``name``, ``oid``)
to DuckDB's, and ``version()``, ``current_user`` and ``current_database()`` to the session's values.
"""

from __future__ import annotations

import re

import sqlglot
from sqlglot import exp

from ratatouille_assets.serve.catalog import CATALOG_TABLES, FUNCTIONS, INFORMATION_SCHEMA, SCHEMA

_CATALOG_CONSTRUCT = re.compile(
    r"pg_|information_schema|OPERATOR\s*\(|::\s*(reg|name\b|\"char\")|\bregclass\b|version\s*\(|"
    r"current_user|session_user|current_database|current_catalog|\buser\b|json_build_object|"
    r"to_regtype|array_upper|COLLATE",
    re.IGNORECASE,
)
# `'pg_catalog.pg_class'::regclass` names a catalog table: its OID in PostgreSQL.
_CATALOG_OIDS = {"pg_class": 1259, "pg_constraint": 2606, "pg_namespace": 2615, "pg_type": 1247, "pg_proc": 1255,
                 "pg_attribute": 1249}
_DUCKDB_TYPES = {"name": "VARCHAR", "text": "VARCHAR", '"char"': "VARCHAR", "char": "VARCHAR", "oid": "INTEGER",
                 "int2": "SMALLINT", "int4": "INTEGER", "int8": "BIGINT", "int2[]": "SMALLINT[]",
                 "int4[]": "INTEGER[]", "oid[]": "INTEGER[]", "text[]": "VARCHAR[]", "name[]": "VARCHAR[]",
                 "bool": "BOOLEAN", "float8": "DOUBLE"}
_REGEX_OPERATORS = {"~": (exp.RegexpLike, False), "!~": (exp.RegexpLike, True),
                    "~*": (exp.RegexpILike, False), "!~*": (exp.RegexpILike, True)}
_COMPARISONS = {"=": exp.EQ, "<>": exp.NEQ, "<": exp.LT, ">": exp.GT, "<=": exp.LTE, ">=": exp.GTE}
_CATALOG_SCHEMAS = ("pg_catalog", "information_schema")


class Rewriter:
    """Rewrites one session's statements (it knows the session's user, database and version)."""

    def __init__(self, user: str, database: str, version: str) -> None:
        self.user = user
        self.database = database
        self.version = version

    def rewrite(self, sql: str) -> str:
        if not _CATALOG_CONSTRUCT.search(sql):
            return sql
        try:
            statements = [s for s in sqlglot.parse(sql, read="postgres") if s is not None]
        except sqlglot.errors.SqlglotError:
            return sql
        if not statements or any(isinstance(s, exp.Command) for s in statements):
            return sql
        return ";\n".join(s.transform(self._visit).sql("duckdb") for s in statements)

    def _visit(self, node: exp.Expression) -> exp.Expression:
        new = self._replace(node)
        if new is not node:
            # transform() does not descend into a node it was handed back: do it here.
            for child in list(new.iter_expressions()):
                child.replace(child.transform(self._visit, copy=False))
        return new

    def _replace(self, node: exp.Expression) -> exp.Expression:
        if isinstance(node, exp.Table):
            return _table(node)
        if isinstance(node, exp.Column):
            return _column(node)
        if isinstance(node, exp.Dot):
            return self._qualified_call(node)
        if isinstance(node, exp.Anonymous):
            return self._function(node)
        if isinstance(node, exp.Operator):
            return _operator(node)
        if isinstance(node, exp.Collate):
            return node.this
        if isinstance(node, exp.Cast):
            return _cast(node)
        literal = self._session_value(node)
        if literal is not None:
            return _keep_name(node, exp.Literal.string(literal[1]), literal[0])
        return node

    def _qualified_call(self, node: exp.Dot) -> exp.Expression:
        """``pg_catalog.version()``: the function, without the schema DuckDB would take for a column."""
        if isinstance(node.this, exp.Identifier) and node.this.name.lower() in _CATALOG_SCHEMAS \
                and isinstance(node.expression, exp.Func):
            return self._replace(node.expression)
        return node

    def _function(self, node: exp.Anonymous) -> exp.Expression:
        name = str(node.this).lower()
        parent = node.parent
        if isinstance(parent, exp.Dot) and isinstance(parent.this, exp.Identifier) and parent.this.name == SCHEMA:
            return node  # already the shim's
        if name in FUNCTIONS:
            return _shim_call(name, node.expressions)
        if name == "version":
            return _keep_name(node, exp.Literal.string(self.version), "version")
        if name == "json_build_object":
            return exp.Anonymous(this="json_object", expressions=node.expressions)
        return node

    def _session_value(self, node: exp.Expression) -> tuple[str, str] | None:
        """(column name, value) of a function only the session can answer."""
        if isinstance(node, exp.CurrentVersion):
            return "version", self.version
        if isinstance(node, exp.CurrentUser):
            return "current_user", self.user
        if isinstance(node, exp.SessionUser):
            return "session_user", self.user
        if isinstance(node, (exp.CurrentDatabase, exp.CurrentCatalog)):
            return "current_database", self.database
        return None


def _table(node: exp.Table) -> exp.Expression:
    schema, name = (node.db or "").lower(), node.name.lower()
    if schema in ("pg_catalog", "") and name in CATALOG_TABLES:
        return _shim_table(name, node.alias or name)
    if schema == "information_schema" and name in INFORMATION_SCHEMA:
        return _shim_table(INFORMATION_SCHEMA[name], node.alias or name)
    if isinstance(node.this, exp.Func):
        return _table_function(node, schema)
    return node


def _shim_table(name: str, alias: str) -> exp.Table:
    return exp.Table(this=exp.to_identifier(name), db=exp.to_identifier(SCHEMA),
                     alias=exp.TableAlias(this=exp.to_identifier(alias)))


def _table_function(node: exp.Table, schema: str) -> exp.Table:
    """``FROM pg_catalog.generate_series(...) AS s``: without the schema, and with PostgreSQL's
    naming, where a scalar function's alias also names its one column (``s`` is a value)."""
    node = node.copy()
    if schema == "pg_catalog":
        node.set("db", None)
    alias = node.args.get("alias")
    if alias is not None and not alias.columns:
        alias.set("columns", [exp.to_identifier(alias.name)])
    return node


def _column(node: exp.Column) -> exp.Column:
    """``pg_catalog.pg_class.relname`` -> ``pg_class.relname`` (the table's alias in the shim)."""
    schema = node.args.get("db")
    if schema is not None and str(schema.name).lower() in _CATALOG_SCHEMAS:
        node = node.copy()
        node.set("db", None)
        node.set("catalog", None)
    return node


def _operator(node: exp.Operator) -> exp.Expression:
    """``a OPERATOR(pg_catalog.~) b`` (psql's patterns) as DuckDB's equivalent."""
    symbol = str(node.args.get("operator", "")).split(".")[-1].strip()
    left, right = node.this, node.expression
    if isinstance(right, exp.Collate):
        right = right.this
    if symbol in _REGEX_OPERATORS:
        kind, negated = _REGEX_OPERATORS[symbol]
        match = kind(this=left, expression=right)
        return exp.Not(this=match) if negated else match
    if symbol in _COMPARISONS:
        return _COMPARISONS[symbol](this=left, expression=right)
    return node


def _cast(node: exp.Cast) -> exp.Expression:
    target = _type_name(node.to)
    inner = node.this
    if target == "regclass":
        return _regclass(inner)
    if target == "regtype":
        return _shim_call("format_type", [inner, exp.Null()])
    if target == "regnamespace":
        return _shim_call("regnamespace_out", [inner])
    if target in ("regproc", "regprocedure", "regrole", "regoper"):
        return exp.Cast(this=inner, to=exp.DataType.build("VARCHAR"))
    if target in _DUCKDB_TYPES:
        return exp.Cast(this=inner, to=exp.DataType.build(_DUCKDB_TYPES[target]))
    return node


def _regclass(inner: exp.Expression) -> exp.Expression:
    """``x::regclass``: a name to its OID (``'gold.t'::regclass``), an OID to its name (``c.oid::regclass``)."""
    if isinstance(inner, exp.Literal) and inner.is_string:
        catalog_oid = _CATALOG_OIDS.get(inner.name.lower().removeprefix("pg_catalog."))
        if catalog_oid is not None:
            return exp.Literal.number(catalog_oid)
        return _shim_call("regclass_in", [inner])
    if isinstance(inner, exp.Column) or (isinstance(inner, exp.Cast) and _type_name(inner.to) == "oid"):
        return _shim_call("regclass_out", [inner])
    return _shim_call("regclass_in", [inner])


def _type_name(data_type: exp.Expression) -> str:
    return data_type.sql("postgres").lower().removeprefix("pg_catalog.")


def _shim_call(name: str, args: list[exp.Expression]) -> exp.Expression:
    return exp.Dot(this=exp.to_identifier(SCHEMA), expression=exp.Anonymous(this=name, expressions=args))


def _keep_name(old: exp.Expression, new: exp.Expression, name: str) -> exp.Expression:
    """``new`` in place of ``old``, aliased as PostgreSQL names that column when it is a bare
    select-list item (``SELECT version()`` has a column ``version``, not ``'PostgreSQL ...'``)."""
    target = old.parent if isinstance(old.parent, exp.Dot) else old
    if isinstance(target.parent, exp.Select) and target.arg_key == "expressions":
        return exp.alias_(new, name, quoted=True)
    return new
