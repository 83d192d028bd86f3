"""The floor: plain DuckDB running our SQL on the same landing files, writing Parquet.

In-memory, one connection, no orchestration, no catalog, no checks: bronze is the landing files
read with the contract's types and the same lineage columns; silver and gold are the dbt models'
compiled SQL (``bench.sql``), rows with a ``_reject_reason`` split off as our plugin does; every
table is written to ``<out>/<schema>/<table>.parquet``.

``python -m bench.raw --landing L --days D1,D2 --models M.json --out O`` prints timings as JSON.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import time
from pathlib import Path

import duckdb

from bench.sql import REJECT_COLUMN, Model, load
from ratatouille_assets.ingest.sources import Source, load_sources


def _lit(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _scan(source: Source, pattern: str, landing: str) -> tuple[str, str, str]:
    """(relation over the files of ``pattern``, the contract's casts, _source_file)."""
    files = _lit(pattern)
    if source.format == "csv":
        relation = f"read_csv({files}, header = true, all_varchar = true, filename = true)"
    elif source.format == "jsonl":
        cols = ", ".join(f"{_lit(c)}: 'VARCHAR'" for c in source.columns)
        relation = f"read_json({files}, format = 'newline_delimited', columns = {{{cols}}}, filename = true)"
    else:
        relation = f"read_parquet({files}, filename = true)"
    casts = ", ".join(f'CAST("{c}" AS {t}) AS "{c}"' for c, t in source.columns.items())
    return relation, casts, f"replace(filename, {_lit(landing.rstrip('/') + '/')}, '')"


_LINEAGE = "now()::TIMESTAMP AS _ingested_at, 'raw-duckdb' AS _run_id"


def bronze_sql(source: Source, landing: str, day: str) -> str:
    """One landing day of ``source`` with the contract's types and the lineage columns."""
    relation, casts, file = _scan(source, os.path.join(landing, source.landing_glob(day)), landing)
    return f"SELECT {casts}, DATE {_lit(day)} AS _landing_date, {file} AS _source_file, {_LINEAGE} FROM {relation}"


def bronze_window_sql(source: Source, landing: str, first: str, last: str) -> str:
    """Landing days first..last of ``source`` in one scan of every day folder (the day from the path)."""
    relation, casts, file = _scan(source, os.path.join(landing, source.path.replace("{date}", "*")), landing)
    day = "CAST(regexp_extract(filename, '/(\\d{4}-\\d{2}-\\d{2})/', 1) AS DATE)"
    return (f"SELECT {casts}, {day} AS _landing_date, {file} AS _source_file, {_LINEAGE} FROM {relation} "
            f"WHERE {day} BETWEEN DATE {_lit(first)} AND DATE {_lit(last)}")


def reference_sql(source: Source, landing: str) -> str:
    """Every file of a reference source (no landing day), with the contract's types."""
    relation, casts, file = _scan(source, os.path.join(landing, source.path), landing)
    return f"SELECT {casts}, {file} AS _source_file, {_LINEAGE} FROM {relation}"


def _write(conn: duckdb.DuckDBPyConnection, table: str, out: Path) -> int:
    schema, name = table.split(".")
    (out / schema).mkdir(parents=True, exist_ok=True)
    conn.execute(f"COPY {table} TO {_lit(str(out / schema / (name + '.parquet')))} (FORMAT parquet)")
    return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


def run_model(conn: duckdb.DuckDBPyConnection, model: Model, start: str, end: str, out: Path) -> int:
    """Create ``schema.table`` from the model's SQL for the window, split rejects, write Parquet."""
    sql = model.for_window(start, end) if model.partition_by else model.sql
    if model.scd2_updated_at:  # a history built in one load: each version closes at the next
        u, key = f'"{model.scd2_updated_at}"', ", ".join(f'"{k}"' for k in model.scd2_key)
        sql = (f"SELECT *, {u} AS valid_from, lead({u}) OVER w AS valid_to, lead({u}) OVER w IS NULL AS is_current "
               f"FROM ({sql}) WINDOW w AS (PARTITION BY {key} ORDER BY {u})")
    table = model.identifier
    conn.execute(f"CREATE OR REPLACE TABLE {table}__staged AS {sql}")
    columns = [r[0] for r in conn.execute(f"DESCRIBE {table}__staged").fetchall()]
    if REJECT_COLUMN in columns:
        conn.execute(
            f"CREATE OR REPLACE TABLE {table} AS SELECT * EXCLUDE ({REJECT_COLUMN}) FROM {table}__staged "
            f"WHERE {REJECT_COLUMN} IS NULL"
        )
        conn.execute(f"CREATE OR REPLACE TABLE {table}__rejected AS SELECT * FROM {table}__staged WHERE {REJECT_COLUMN} IS NOT NULL")
        _write(conn, f"{table}__rejected", out)
    else:
        conn.execute(f"ALTER TABLE {table}__staged RENAME TO {model.name}")
    rows = _write(conn, table, out)
    conn.execute(f"DROP TABLE IF EXISTS {table}__staged")
    return rows


def run_raw(landing: str, days: list[str], models: list[Model], out: Path, sources_file: Path,
            memory_limit: str, threads: int) -> dict:
    """Bronze for ``days``, then every model over the window ``days[0]..days[-1]``; timings per layer."""
    t0 = time.perf_counter()
    conn = duckdb.connect(":memory:")
    conn.execute(f"SET memory_limit = '{memory_limit}'")
    conn.execute(f"SET threads = {threads}")
    conn.execute("SET TimeZone = 'UTC'")
    for schema in ("bronze", "silver", "gold"):
        conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
    seconds: dict[str, float] = {"connect": time.perf_counter() - t0}
    rows: dict[str, int] = {}

    t = time.perf_counter()
    for source in load_sources(sources_file).values():
        if not source.partitioned:
            if not glob.glob(os.path.join(landing, source.path), recursive=True):
                continue
            sql = reference_sql(source, landing)
        elif len(days) > 31:  # a history: one scan over every day folder
            sql = bronze_window_sql(source, landing, days[0], days[-1])
        else:
            parts = [bronze_sql(source, landing, day) for day in days
                     if glob.glob(os.path.join(landing, source.landing_glob(day)))]
            if not parts:
                continue
            sql = " UNION ALL ".join(parts)
        conn.execute(f"CREATE OR REPLACE TABLE bronze.{source.name} AS {sql}")
        rows[f"bronze.{source.name}"] = _write(conn, f"bronze.{source.name}", out)
    seconds["bronze"] = time.perf_counter() - t

    for layer in ("silver", "gold"):
        t = time.perf_counter()
        for model in (m for m in models if m.schema == layer):
            rows[model.identifier] = run_model(conn, model, days[0], days[-1], out)
        seconds[layer] = time.perf_counter() - t
    conn.close()
    return {"seconds": seconds, "rows": rows}


def main(argv: list[str] | None = None) -> int:
    started = time.time()
    parser = argparse.ArgumentParser(prog="python -m bench.raw")
    parser.add_argument("--landing", required=True)
    parser.add_argument("--days", required=True, help="comma-separated YYYY-MM-DD")
    parser.add_argument("--models", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--sources", type=Path, default=Path(__file__).resolve().parent.parent / "sources.yml")
    parser.add_argument("--memory-limit", default="2GB")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    args = parser.parse_args(argv)
    result = run_raw(args.landing, args.days.split(","), load(args.models), args.out, args.sources,
                     args.memory_limit, args.threads)
    launched = float(os.environ.get("BENCH_LAUNCHED_AT", started))
    result["seconds"]["process_start"] = started - launched
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
