"""The PostgreSQL catalog that BI tools read, as views over DuckDB's own (schema ``pgshim``).

psql's ``\\dt`` and ``\\d``, SQLAlchemy's inspector (Superset) and pgjdbc's DatabaseMetaData
(Metabase, DBeaver) learn which tables and columns exist from PostgreSQL's catalog. DuckDB has a
``pg_catalog`` of its own, but not one they can use: ``pg_attribute.atttypid`` holds DuckDB's type
ids instead of PostgreSQL OIDs, views are always ``relkind 'v'`` (and every lakehouse table is a
view), ``pg_roles``, ``pg_inherits``, ``pg_policy`` and others are missing, and several tables lack
the PostgreSQL 15 columns the clients pick their queries for. So the server creates PostgreSQL 15
shaped views of its own, limited to the layers, and :mod:`.rewrite` points catalog references at
them.

Every lakehouse table is reported as a table (``relkind 'r'``): BI tools list tables, and a view
of a layer is what a table is to them.

A table's OID is a hash of its name, not DuckDB's OID: a refresh re-creates the view of a table
that got a new snapshot, which gives it a new DuckDB OID, and psql's ``\\d`` looks the table up by
OID in a later statement than the one that found it.

DuckDB macros are not hygienic: a macro's body is pasted into the query that calls it, so an alias
inside the body captures the caller's. ``pg_table_is_visible(c.oid)`` with a ``pg_class c`` in its
body compared each row with itself and was always true. Every alias and parameter inside a macro
starts with ``_shim_``.
"""

from __future__ import annotations

import json

SCHEMA = "pgshim"

TEXT = 25
JSON = 114
NUMERIC = 1700

# The PostgreSQL types the server reports: oid -> (typname, typlen, typcategory, element oid,
# array oid, the name format_type() gives it).
PG_TYPES = {
    16: ("bool", 1, "B", 0, 1000, "boolean"),
    17: ("bytea", -1, "U", 0, 1001, "bytea"),
    18: ("char", 1, "Z", 0, 1002, '"char"'),
    19: ("name", 64, "S", 0, 1003, "name"),
    20: ("int8", 8, "N", 0, 1016, "bigint"),
    21: ("int2", 2, "N", 0, 1005, "smallint"),
    23: ("int4", 4, "N", 0, 1007, "integer"),
    25: ("text", -1, "S", 0, 1009, "text"),
    26: ("oid", 4, "N", 0, 1028, "oid"),
    114: ("json", -1, "U", 0, 199, "json"),
    700: ("float4", 4, "N", 0, 1021, "real"),
    701: ("float8", 8, "N", 0, 1022, "double precision"),
    1043: ("varchar", -1, "S", 0, 1015, "character varying"),
    1082: ("date", 4, "D", 0, 1182, "date"),
    1083: ("time", 8, "D", 0, 1183, "time without time zone"),
    1114: ("timestamp", 8, "D", 0, 1115, "timestamp without time zone"),
    1184: ("timestamptz", 8, "D", 0, 1185, "timestamp with time zone"),
    1186: ("interval", 16, "T", 0, 1187, "interval"),
    1700: ("numeric", -1, "N", 0, 1231, "numeric"),
    2950: ("uuid", 16, "U", 0, 2951, "uuid"),
    1000: ("_bool", -1, "A", 16, 0, "boolean[]"),
    1005: ("_int2", -1, "A", 21, 0, "smallint[]"),
    1007: ("_int4", -1, "A", 23, 0, "integer[]"),
    1009: ("_text", -1, "A", 25, 0, "text[]"),
    1016: ("_int8", -1, "A", 20, 0, "bigint[]"),
    1021: ("_float4", -1, "A", 700, 0, "real[]"),
    1022: ("_float8", -1, "A", 701, 0, "double precision[]"),
}

# DuckDB types, as cursor.description and duckdb_columns() spell them -> PostgreSQL type OID.
_SCALAR_OIDS = {
    "BOOLEAN": 16,
    "TINYINT": 21,
    "UTINYINT": 21,
    "SMALLINT": 21,
    "USMALLINT": 23,
    "INTEGER": 23,
    "UINTEGER": 20,
    "BIGINT": 20,
    "UBIGINT": NUMERIC,
    "HUGEINT": NUMERIC,
    "UHUGEINT": NUMERIC,
    "BIGNUM": NUMERIC,
    "FLOAT": 700,
    "DOUBLE": 701,
    "VARCHAR": TEXT,
    "BLOB": 17,
    "UUID": 2950,
    "JSON": JSON,
    "DATE": 1082,
    "TIME": 1083,
    "TIMESTAMP": 1114,
    "TIMESTAMP_S": 1114,
    "TIMESTAMP_MS": 1114,
    "TIMESTAMP_NS": 1114,
    "TIMESTAMP WITH TIME ZONE": 1184,
    "INTERVAL": 1186,
}
# Lists of these go out as PostgreSQL arrays (BIGINT[] -> int8[]); other lists, structs and
# maps as JSON documents.
_LIST_OIDS = {f"{duck}[]": PG_TYPES[_SCALAR_OIDS[duck]][4]
              for duck in ("BOOLEAN", "SMALLINT", "INTEGER", "BIGINT", "FLOAT", "DOUBLE", "VARCHAR")}
_EXACT_OIDS = {**_SCALAR_OIDS, **_LIST_OIDS}


def type_oid(duck_type: str) -> int:
    """The PostgreSQL type OID a column of this DuckDB type is sent as (``pgshim.type_oid`` in SQL)."""
    if duck_type in _EXACT_OIDS:
        return _EXACT_OIDS[duck_type]
    if duck_type.startswith("DECIMAL"):
        return NUMERIC
    if duck_type.startswith(("STRUCT", "MAP", "UNION")) or duck_type.endswith("]"):
        return JSON
    return TEXT


def wire_values(duck_type: str):
    """A function turning a DuckDB value of this type into what the client is told it is, or
    None when pg-mimic encodes the value as it comes (scalars, arrays of scalars, JSON text)."""
    if type_oid(duck_type) == JSON and duck_type != "JSON":
        return _json_document
    return None


def _json_document(value) -> str:
    # Nested values hold dates, decimals and UUIDs, which JSON has no type for: their text.
    return json.dumps(value, default=str, separators=(",", ":"))


def _sql_text(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _type_oid_case(column: str) -> str:
    """``type_oid`` as a SQL expression over ``column`` (one rule set for results and catalog)."""
    exact = " ".join(f"WHEN {column} = {_sql_text(name)} THEN {oid}" for name, oid in _EXACT_OIDS.items())
    return (f"CASE {exact} WHEN {column} LIKE 'DECIMAL%' THEN {NUMERIC} "
            f"WHEN {column} LIKE 'STRUCT%' OR {column} LIKE 'MAP%' OR {column} LIKE 'UNION%' "
            f"OR {column} LIKE '%]' THEN {JSON} ELSE {TEXT} END")


def _empty(name: str, columns: str) -> str:
    """A catalog table the lakehouse has no rows for (indexes, constraints, policies...), with
    the columns clients select from it."""
    selected = ", ".join(f"CAST(NULL AS {kind}) AS {column}" for column, kind in
                         (part.strip().split(" ", 1) for part in columns.split(",")))
    return f"CREATE OR REPLACE VIEW {SCHEMA}.{name} AS SELECT {selected} WHERE false"


def _macros() -> dict[str, str]:
    """Functions the clients call that DuckDB lacks or gets wrong: name -> ``(params) AS body``."""
    computed = {
        "type_oid": f"(_shim_t) AS {_type_oid_case('_shim_t')}",
        "type_modifier": "(_shim_t, _shim_p, _shim_s) AS CASE "
                         "WHEN _shim_t LIKE 'DECIMAL%' THEN ((_shim_p << 16) | _shim_s) + 4 "
                         "WHEN _shim_t IN ('HUGEINT', 'UHUGEINT') THEN (38 << 16) + 4 "
                         "WHEN _shim_t = 'UBIGINT' THEN (20 << 16) + 4 ELSE -1 END",
        "relation_oid": "(_shim_schema, _shim_name) AS "
                        "CAST(16384 + hash(_shim_schema || '.' || _shim_name) % 2000000000 AS BIGINT)",
        "format_type": "(_shim_oid, _shim_mod) AS CASE WHEN _shim_oid = 1700 AND _shim_mod >= 4 "
                       "THEN 'numeric(' || ((_shim_mod - 4) >> 16) || ',' || ((_shim_mod - 4) & 65535) || ')' "
                       f"ELSE (SELECT _shim_d.display FROM {SCHEMA}.pg_type_data _shim_d "
                       "WHERE _shim_d.oid = _shim_oid) END",
        "pg_get_userbyid": "(_shim_oid) AS getvariable('pg_user')",
        "array_upper": "(_shim_list, _shim_dim) AS len(_shim_list)",
        "array_lower": "(_shim_list, _shim_dim) AS CASE WHEN len(_shim_list) > 0 THEN 1 END",
        "_pg_expandarray": "(_shim_list) AS unnest(list_transform(range(1, len(_shim_list) + 1), "
                           "_shim_i -> {'x': _shim_list[_shim_i], 'n': _shim_i}))",
    }
    constants = {name: _overloads(arities, value) for name, (arities, value) in _CONSTANT_FUNCTIONS.items()}
    return {**computed, **constants}


# Functions whose answer here is always the same, with the argument counts clients call them
# with: whatever the lakehouse has none of (defaults, indexes, constraints, comments, sequences)
# is NULL, everything is visible and readable.
_CONSTANT_FUNCTIONS = {
    "pg_type_is_visible": ((1,), "true"),
    "pg_collation_is_visible": ((1,), "true"),
    "pg_relation_is_publishable": ((1,), "false"),
    "has_table_privilege": ((2, 3), "true"),
    "has_schema_privilege": ((2, 3), "true"),
    "pg_encoding_to_char": ((1,), "'UTF8'"),
    "to_regtype": ((1,), "CAST(NULL AS INTEGER)"),
    "to_regclass": ((1,), "CAST(NULL AS INTEGER)"),
    "pg_get_serial_sequence": ((2,), "CAST(NULL AS VARCHAR)"),
    "pg_get_indexdef": ((1, 3), "CAST(NULL AS VARCHAR)"),
    "pg_get_constraintdef": ((1, 2), "CAST(NULL AS VARCHAR)"),
    "pg_get_expr": ((2, 3), "CAST(NULL AS VARCHAR)"),
    "pg_get_viewdef": ((1, 2), "CAST(NULL AS VARCHAR)"),
    "pg_get_statisticsobjdef_columns": ((1,), "CAST(NULL AS VARCHAR)"),
    "obj_description": ((1, 2), "CAST(NULL AS VARCHAR)"),
    "col_description": ((2,), "CAST(NULL AS VARCHAR)"),
    "shobj_description": ((2,), "CAST(NULL AS VARCHAR)"),
}


def _overloads(arities: tuple[int, ...], value: str) -> str:
    """``(_shim_a) AS v, (_shim_a, _shim_b) AS v``: a macro answering ``value`` for each arity."""
    return ", ".join("(" + ", ".join(f"_shim_{chr(97 + i)}" for i in range(arity)) + f") AS {value}" for arity in arities)


# Macros over the catalog views: created after them.
_CATALOG_MACROS = {
    "pg_table_is_visible": f"(_shim_oid) AS EXISTS (SELECT 1 FROM {SCHEMA}.pg_class _shim_c "
                           f"JOIN {SCHEMA}.pg_namespace _shim_n ON _shim_n.oid = _shim_c.relnamespace "
                           "WHERE _shim_c.oid = _shim_oid "
                           "AND list_contains(getvariable('pg_search_path'), _shim_n.nspname))",
    "regclass_out": f"(_shim_oid) AS (SELECT _shim_c.relname FROM {SCHEMA}.pg_class _shim_c "
                    "WHERE _shim_c.oid = _shim_oid)",
    "regclass_in": f"(_shim_name) AS (SELECT _shim_c.oid FROM {SCHEMA}.pg_class _shim_c "
                   f"JOIN {SCHEMA}.pg_namespace _shim_n ON _shim_n.oid = _shim_c.relnamespace "
                   "WHERE _shim_c.relname = split_part(_shim_name, '.', -1) "
                   "AND (NOT contains(_shim_name, '.') OR _shim_n.nspname = split_part(_shim_name, '.', 1)) LIMIT 1)",
    "current_setting": f"(_shim_name) AS (SELECT _shim_s.setting FROM {SCHEMA}.pg_settings _shim_s "
                       "WHERE _shim_s.name = _shim_name)",
    "regnamespace_out": f"(_shim_oid) AS (SELECT _shim_n.nspname FROM {SCHEMA}.pg_namespace _shim_n "
                        "WHERE _shim_n.oid = _shim_oid)",
}


def _views(schemas: str) -> dict[str, str]:
    """The catalog tables with rows: name -> SELECT (``schemas``: the layers, as a SQL list)."""
    return {
        "pg_namespace": f"""
            SELECT oid, schema_name AS nspname, 10 AS nspowner, CAST(NULL AS VARCHAR[]) AS nspacl
            FROM duckdb_schemas() WHERE database_name = current_database() AND schema_name IN ({schemas})
            UNION ALL SELECT 11, 'pg_catalog', 10, NULL
            UNION ALL SELECT 13000, 'information_schema', 10, NULL""",
        "pg_class": f"""
            WITH relations AS (
                SELECT schema_name, table_name AS relname, schema_oid, column_count, CAST(estimated_size AS REAL) AS reltuples
                FROM duckdb_tables() WHERE database_name = current_database() AND NOT internal AND NOT temporary
                UNION ALL
                SELECT schema_name, view_name, schema_oid, column_count, CAST(-1 AS REAL)
                FROM duckdb_views() WHERE database_name = current_database() AND NOT internal AND NOT temporary)
            SELECT {SCHEMA}.relation_oid(schema_name, relname) AS oid, relname, schema_oid AS relnamespace, 0 AS reltype,
                   0 AS reloftype, 10 AS relowner, 2 AS relam, 0 AS relfilenode, 0 AS reltablespace, 0 AS relpages,
                   reltuples, 0 AS relallvisible, 0 AS reltoastrelid, false AS relhasindex, false AS relisshared,
                   'p' AS relpersistence, 'r' AS relkind, CAST(column_count AS SMALLINT) AS relnatts, 0 AS relchecks,
                   false AS relhasrules, false AS relhastriggers, false AS relhassubclass, false AS relrowsecurity,
                   false AS relforcerowsecurity, true AS relispopulated, 'd' AS relreplident, false AS relispartition,
                   0 AS relrewrite, 0 AS relfrozenxid, 0 AS relminmxid, CAST(NULL AS VARCHAR[]) AS relacl,
                   CAST(NULL AS VARCHAR[]) AS reloptions, CAST(NULL AS VARCHAR) AS relpartbound
            FROM relations WHERE schema_name IN ({schemas})""",
        "pg_attribute": f"""
            SELECT {SCHEMA}.relation_oid(schema_name, table_name) AS attrelid, column_name AS attname,
                   {SCHEMA}.type_oid(data_type) AS atttypid, -1 AS attstattarget, CAST(-1 AS SMALLINT) AS attlen,
                   CAST(column_index AS SMALLINT) AS attnum, 0 AS attndims, -1 AS attcacheoff,
                   {SCHEMA}.type_modifier(data_type, numeric_precision, numeric_scale) AS atttypmod, false AS attbyval,
                   'x' AS attstorage, 'i' AS attalign, NOT is_nullable AS attnotnull, false AS atthasdef,
                   false AS atthasmissing, '' AS attidentity, '' AS attgenerated, false AS attisdropped,
                   true AS attislocal, 0 AS attinhcount, 0 AS attcollation, CAST(NULL AS VARCHAR[]) AS attacl,
                   CAST(NULL AS VARCHAR[]) AS attoptions, CAST(NULL AS VARCHAR[]) AS attfdwoptions,
                   CAST(NULL AS VARCHAR) AS attmissingval, '' AS attcompression
            FROM duckdb_columns() WHERE database_name = current_database() AND schema_name IN ({schemas})""",
        "pg_type": f"""
            SELECT oid, typname, 11 AS typnamespace, 10 AS typowner, CAST(typlen AS SMALLINT) AS typlen, true AS typbyval,
                   'b' AS typtype, typcategory, false AS typispreferred, true AS typisdefined, ',' AS typdelim,
                   0 AS typrelid, typelem, typarray,
                   CASE WHEN typcategory = 'A' THEN 'array_in' ELSE typname || 'in' END AS typinput,
                   CASE WHEN typcategory = 'A' THEN 'array_out' ELSE typname || 'out' END AS typoutput,
                   false AS typnotnull, 0 AS typbasetype, -1 AS typtypmod, 0 AS typndims,
                   CASE WHEN typname IN ('text', 'varchar', 'name') THEN 100 ELSE 0 END AS typcollation,
                   CAST(NULL AS VARCHAR) AS typdefault
            FROM {SCHEMA}.pg_type_data""",
        "pg_database": """
            SELECT 16384 AS oid, getvariable('pg_dbname') AS datname, 10 AS datdba, 6 AS encoding, 'c' AS datlocprovider,
                   false AS datistemplate, true AS datallowconn, -1 AS datconnlimit, 'C' AS datcollate, 'C' AS datctype,
                   CAST(NULL AS VARCHAR) AS daticulocale, CAST(NULL AS VARCHAR) AS datcollversion,
                   CAST(NULL AS VARCHAR[]) AS datacl, 0 AS dattablespace""",
        "pg_roles": """
            SELECT 10 AS oid, getvariable('pg_user') AS rolname, false AS rolsuper, false AS rolinherit,
                   false AS rolcreaterole, false AS rolcreatedb, true AS rolcanlogin, false AS rolreplication,
                   -1 AS rolconnlimit, CAST(NULL AS TIMESTAMP) AS rolvaliduntil, false AS rolbypassrls,
                   CAST(NULL AS VARCHAR[]) AS rolconfig""",
        "pg_user": f"SELECT rolname AS usename, oid AS usesysid, false AS usesuper FROM {SCHEMA}.pg_roles",
        "pg_am": "SELECT * FROM (VALUES (2, 'heap', 'heap_tableam_handler', 't'), (403, 'btree', 'bthandler', 'i')) "
                 "AS am(oid, amname, amhandler, amtype)",
        "pg_settings": """
            SELECT name, setting, short_desc, vartype FROM (VALUES
                ('max_index_keys', '32', '', 'integer'), ('max_identifier_length', '63', '', 'integer'),
                ('server_version_num', '150000', '', 'integer'), ('server_version', '15.0', '', 'string'),
                ('standard_conforming_strings', 'on', '', 'bool'), ('integer_datetimes', 'on', '', 'bool'),
                ('default_transaction_read_only', 'on', '', 'bool'), ('transaction_read_only', 'on', '', 'bool'),
                ('default_table_access_method', 'heap', '', 'string'), ('TimeZone', 'UTC', '', 'string'))
                AS settings(name, setting, short_desc, vartype)""",
        "pg_tables": f"""
            SELECT n.nspname AS schemaname, c.relname AS tablename, getvariable('pg_user') AS tableowner,
                   CAST(NULL AS VARCHAR) AS tablespace, false AS hasindexes, false AS hasrules, false AS hastriggers,
                   false AS rowsecurity
            FROM {SCHEMA}.pg_class c JOIN {SCHEMA}.pg_namespace n ON n.oid = c.relnamespace""",
        # information_schema, limited to the layers, the views reported as the tables they are.
        "is_schemata": f"SELECT * FROM information_schema.schemata WHERE schema_name IN ({schemas})",
        "is_tables": f"SELECT * REPLACE ('BASE TABLE' AS table_type) FROM information_schema.tables "
                     f"WHERE table_schema IN ({schemas})",
        "is_columns": f"SELECT * FROM information_schema.columns WHERE table_schema IN ({schemas})",
    }


_EMPTY = {
    "pg_views": "schemaname VARCHAR, viewname VARCHAR, viewowner VARCHAR, definition VARCHAR",
    "pg_matviews": "schemaname VARCHAR, matviewname VARCHAR, matviewowner VARCHAR, definition VARCHAR",
    "pg_index": "indexrelid INTEGER, indrelid INTEGER, indnatts SMALLINT, indnkeyatts SMALLINT, indisunique BOOLEAN, "
                "indnullsnotdistinct BOOLEAN, indisprimary BOOLEAN, indisexclusion BOOLEAN, indimmediate BOOLEAN, "
                "indisclustered BOOLEAN, indisvalid BOOLEAN, indcheckxmin BOOLEAN, indisready BOOLEAN, indislive BOOLEAN, "
                "indisreplident BOOLEAN, indkey SMALLINT[], indcollation INTEGER[], indclass INTEGER[], "
                "indoption SMALLINT[], indexprs VARCHAR, indpred VARCHAR",
    "pg_constraint": "oid INTEGER, conname VARCHAR, connamespace INTEGER, contype VARCHAR, condeferrable BOOLEAN, "
                     "condeferred BOOLEAN, convalidated BOOLEAN, conrelid INTEGER, contypid INTEGER, conindid INTEGER, "
                     "conparentid INTEGER, confrelid INTEGER, confupdtype VARCHAR, confdeltype VARCHAR, "
                     "confmatchtype VARCHAR, conislocal BOOLEAN, coninhcount INTEGER, connoinherit BOOLEAN, "
                     "conkey SMALLINT[], confkey SMALLINT[], conbin VARCHAR",
    "pg_attrdef": "oid INTEGER, adrelid INTEGER, adnum SMALLINT, adbin VARCHAR",
    "pg_description": "objoid INTEGER, classoid INTEGER, objsubid INTEGER, description VARCHAR",
    "pg_collation": "oid INTEGER, collname VARCHAR, collnamespace INTEGER, collowner INTEGER, collprovider VARCHAR",
    "pg_inherits": "inhrelid INTEGER, inhparent INTEGER, inhseqno INTEGER, inhdetachpending BOOLEAN",
    "pg_policy": "oid INTEGER, polname VARCHAR, polrelid INTEGER, polcmd VARCHAR, polpermissive BOOLEAN, "
                 "polroles INTEGER[], polqual VARCHAR, polwithcheck VARCHAR",
    "pg_statistic_ext": "oid INTEGER, stxrelid INTEGER, stxname VARCHAR, stxnamespace INTEGER, stxowner INTEGER, "
                        "stxstattarget INTEGER, stxkeys SMALLINT[], stxkind VARCHAR[]",
    "pg_publication": "oid INTEGER, pubname VARCHAR, pubowner INTEGER, puballtables BOOLEAN, pubinsert BOOLEAN, "
                      "pubupdate BOOLEAN, pubdelete BOOLEAN, pubtruncate BOOLEAN, pubviaroot BOOLEAN",
    "pg_publication_namespace": "oid INTEGER, pnpubid INTEGER, pnnspid INTEGER",
    "pg_publication_rel": "oid INTEGER, prpubid INTEGER, prrelid INTEGER, prqual VARCHAR, prattrs SMALLINT[]",
    "pg_opclass": "oid INTEGER, opcmethod INTEGER, opcname VARCHAR, opcnamespace INTEGER, opcdefault BOOLEAN",
    "pg_trigger": "oid INTEGER, tgrelid INTEGER, tgname VARCHAR, tgisinternal BOOLEAN, tgenabled VARCHAR",
    "pg_rewrite": "oid INTEGER, rulename VARCHAR, ev_class INTEGER",
    "pg_sequence": "seqrelid INTEGER, seqtypid INTEGER, seqstart BIGINT, seqincrement BIGINT, seqmax BIGINT, "
                   "seqmin BIGINT, seqcache BIGINT, seqcycle BOOLEAN",
    "pg_extension": "oid INTEGER, extname VARCHAR, extowner INTEGER, extnamespace INTEGER, extversion VARCHAR",
    "pg_enum": "oid INTEGER, enumtypid INTEGER, enumsortorder REAL, enumlabel VARCHAR",
    "pg_auth_members": "oid INTEGER, roleid INTEGER, member INTEGER, grantor INTEGER, admin_option BOOLEAN, "
                       "inherit_option BOOLEAN, set_option BOOLEAN",
    "pg_foreign_table": "ftrelid INTEGER, ftserver INTEGER",
    "pg_partitioned_table": "partrelid INTEGER",
    "pg_tablespace": "oid INTEGER, spcname VARCHAR, spcowner INTEGER",
    "is_views": "table_catalog VARCHAR, table_schema VARCHAR, table_name VARCHAR, view_definition VARCHAR",
}

# What the rewriter points at the shim: catalog tables, information_schema views, functions.
CATALOG_TABLES = frozenset(name for name in [*_views(""), *_EMPTY] if name.startswith("pg_"))  # names only
INFORMATION_SCHEMA = {"schemata": "is_schemata", "tables": "is_tables", "columns": "is_columns", "views": "is_views"}
_HELPERS = ("type_oid", "type_modifier", "relation_oid", "regclass_in", "regclass_out", "regnamespace_out")
FUNCTIONS = frozenset(name for name in [*_macros(), *_CATALOG_MACROS] if name not in _HELPERS)


def install(conn, schemas: tuple[str, ...]) -> None:
    """Create (or re-create) the shim on ``conn`` for ``schemas`` (the layers)."""
    for statement in _statements(schemas):
        conn.execute(statement)


def _statements(schemas: tuple[str, ...]) -> list[str]:
    listed = ", ".join(_sql_text(schema) for schema in schemas)
    types = ", ".join(f"({oid}, {_sql_text(name)}, {length}, '{category}', {element}, {array}, {_sql_text(display)})"
                      for oid, (name, length, category, element, array, display) in PG_TYPES.items())
    return [
        f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}",
        f"CREATE OR REPLACE TABLE {SCHEMA}.pg_type_data AS SELECT * FROM (VALUES {types}) "
        "AS types(oid, typname, typlen, typcategory, typelem, typarray, display)",
        *(f"CREATE OR REPLACE MACRO {SCHEMA}.{name}{definition}" for name, definition in _macros().items()),
        *(f"CREATE OR REPLACE VIEW {SCHEMA}.{name} AS {select}" for name, select in _views(listed).items()),
        *(_empty(name, columns) for name, columns in _EMPTY.items()),
        *(f"CREATE OR REPLACE MACRO {SCHEMA}.{name}{definition}" for name, definition in _CATALOG_MACROS.items()),
    ]
