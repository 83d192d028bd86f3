"""Read one day of landing files for a source into Arrow, cast to the source's contract.

DuckDB does the parsing (CSV, JSON lines, Parquet), in memory, through the same configured
connection as everything else, so the reader works the same on a local folder and on S3.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os

import duckdb
import pyarrow as pa

from ratatouille_assets.ingest.sources import Source
from ratatouille_assets.lakehouse.duck import quote_ident

LINEAGE_COLUMNS = ("_landing_date", "_source_file", "_ingested_at", "_run_id")
PARTITION_COLUMN = "_landing_date"


class IngestError(Exception):
    """A landing file could not be read against its contract. The message names file and fix."""


@dataclasses.dataclass(frozen=True)
class Batch:
    data: pa.Table
    files: tuple[str, ...]


def _lit(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def join_landing(root: str, relative: str) -> str:
    return f"{root.rstrip('/')}/{relative}" if root.startswith("s3://") else os.path.join(root, relative)


def list_files(conn: duckdb.DuckDBPyConnection, landing_root: str, source: Source, day: str) -> list[str]:
    """The day's files for ``source``, sorted by name (the order they are read and deduplicated in)."""
    pattern = join_landing(landing_root, source.landing_glob(day))
    if not landing_root.startswith("s3://") and not os.path.isdir(os.path.dirname(pattern)):
        return []
    rows = conn.execute(f"SELECT file FROM glob({_lit(pattern)}) ORDER BY file").fetchall()
    return [r[0] for r in rows]


def _raw_relation(source: Source, path: str) -> str:
    if source.format == "csv":
        return f"read_csv({_lit(path)}, header = true, all_varchar = true)"
    if source.format == "jsonl":
        cols = ", ".join(f"{_lit(c)}: 'VARCHAR'" for c in source.columns)
        return f"read_json({_lit(path)}, format = 'newline_delimited', columns = {{{cols}}})"
    return f"read_parquet({_lit(path)})"


def read_file(
    conn: duckdb.DuckDBPyConnection, source: Source, path: str, *, landing_root: str, day: str, run_id: str,
    ingested_at: dt.datetime,
) -> pa.Table:
    """One landing file -> Arrow with the declared columns (cast) and the lineage columns."""
    relative = os.path.relpath(path, landing_root) if not landing_root.startswith("s3://") else path
    try:
        present = {row[0] for row in conn.execute(f"DESCRIBE SELECT * FROM {_raw_relation(source, path)}").fetchall()}
    except duckdb.Error as exc:
        raise IngestError(
            f"{relative}: cannot be read as {source.format} for source '{source.name}': {exc}. "
            "Fix or replace the file, then re-materialize the partition."
        ) from exc
    missing = [c for c in source.columns if c not in present]
    if missing:
        raise IngestError(
            f"{relative}: column(s) {', '.join(missing)} declared for source '{source.name}' are missing "
            f"(found: {', '.join(sorted(present))}). Send the columns, or change the contract in sources.yml."
        )
    select = ", ".join(f"CAST({quote_ident(c)} AS {t}) AS {quote_ident(c)}" for c, t in source.columns.items())
    sql = (
        f"SELECT {select}, DATE {_lit(day)} AS _landing_date, {_lit(relative)} AS _source_file, "
        f"TIMESTAMP {_lit(ingested_at.strftime('%Y-%m-%d %H:%M:%S.%f'))} AS _ingested_at, {_lit(run_id)} AS _run_id "
        f"FROM {_raw_relation(source, path)}"
    )
    try:
        return conn.execute(sql).to_arrow_table()
    except duckdb.Error as exc:
        raise IngestError(
            f"{relative}: values do not match the contract of source '{source.name}': {exc}. "
            "Correct the file, or the column type in sources.yml."
        ) from exc


def read_partition(
    conn: duckdb.DuckDBPyConnection, source: Source, landing_root: str, day: str, run_id: str
) -> Batch:
    """All of one day's files for ``source`` as one Arrow table (empty, with the schema, if none)."""
    files = list_files(conn, landing_root, source, day)
    ingested_at = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    tables = [
        read_file(conn, source, f, landing_root=landing_root, day=day, run_id=run_id, ingested_at=ingested_at)
        for f in files
    ]
    if not tables:
        return Batch(data=empty_table(conn, source), files=())
    return Batch(data=pa.concat_tables(tables), files=tuple(files))


def empty_table(conn: duckdb.DuckDBPyConnection, source: Source) -> pa.Table:
    select = ", ".join(f"CAST(NULL AS {t}) AS {quote_ident(c)}" for c, t in source.columns.items())
    sql = (
        f"SELECT {select}, CAST(NULL AS DATE) AS _landing_date, CAST(NULL AS VARCHAR) AS _source_file, "
        "CAST(NULL AS TIMESTAMP) AS _ingested_at, CAST(NULL AS VARCHAR) AS _run_id LIMIT 0"
    )
    return conn.execute(sql).to_arrow_table()
