"""``python -m bench.merge [--rows 10000000] [--changes 1000000] [--reps 3] [--upsert-rows 100000]``:
what a merge (``strategy='merge'``) costs against plain DuckDB doing the same join and Parquet rewrite.

A table of ``--rows`` accounts; ``--changes`` changed rows, half updates of existing keys spread over
the table, half new keys. Interleaved, ``--reps`` times each:

- **ours**: what the dbt plugin does for a merge model, without dbt and Dagster: the changes
  merged into the Iceberg table by ``lakehouse.merge.plan_merge`` (DuckDB SQL over ``iceberg_scan``)
  and committed by the one write path (``write_window`` with ``expect_head``). Between repetitions
  the table's main is set back to the snapshot before the merge, so each merges the same changes
  into the same table;
- **plain DuckDB**: the same merged relation over Parquet files of the same table and changes
  (``read_parquet``), written with ``COPY ... TO`` Parquet. No catalog, no checks.

Both sides get the same DuckDB memory_limit and threads; the merged content is checked equal (row
count and a hash of every row) once. ``--upsert-rows``: pyiceberg's own ``Table.upsert`` at a
smaller size (that many rows in the table, a tenth of them changed the same way), once, for scale.
Results go to ``bench/results/<date>-<host>-merge.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import statistics
import time
from pathlib import Path

import duckdb

from ratatouille_assets.lakehouse import duck
from ratatouille_assets.lakehouse.catalog import load_catalog
from ratatouille_assets.lakehouse.merge import MergeSpec, plan_merge
from ratatouille_assets.lakehouse.write import STRATEGY_PROPERTY, write_window
from ratatouille_assets.settings import get_settings

ROOT = Path(__file__).resolve().parent.parent
SPEC = MergeSpec(("account_id",))
TABLE = "silver.accounts"


def accounts_sql(rows: int) -> str:
    return (f"SELECT range AS account_id, 'account ' || range AS name, ['free', 'team', 'pro'][range % 3 + 1] AS tier, "
            f"CAST(range % 97 AS INTEGER) AS seats, TIMESTAMP '2024-01-01' + to_seconds(range) AS updated_at FROM range({rows})")


def changes_sql(rows: int, changes: int) -> str:
    """Half updates of keys spread over the table (every (2·rows/changes)-th key), half new keys."""
    updates, step = changes // 2, max(1, (2 * rows) // max(changes, 1))
    return (f"SELECT range * {step} AS account_id, 'renamed ' || range AS name, 'pro' AS tier, CAST(7 AS INTEGER) AS seats, "
            f"TIMESTAMP '2025-01-01' AS updated_at FROM range({updates}) UNION ALL "
            f"SELECT {rows} + range AS account_id, 'new ' || range AS name, 'free' AS tier, CAST(1 AS INTEGER) AS seats, "
            f"TIMESTAMP '2025-01-01' AS updated_at FROM range({changes - updates})")


def _hash(conn: duckdb.DuckDBPyConnection, relation: str) -> tuple[int, int]:
    return conn.execute(f"SELECT count(*), sum(hash(account_id, name, tier, seats, updated_at)) FROM {relation}").fetchone()


def run(work: Path, rows: int, changes: int, reps: int, upsert_rows: int, log) -> dict:
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    os.environ["RATATOUILLE_HOME"] = str(work / "home")
    get_settings.cache_clear()
    settings = get_settings()
    catalog = load_catalog(settings)
    conn = duck.connect(settings)
    files = work / "parquet"
    files.mkdir()
    conn.execute(f"COPY ({accounts_sql(rows)}) TO '{files}/accounts.parquet' (FORMAT parquet)")
    conn.execute(f"COPY ({changes_sql(rows, changes)}) TO '{files}/changes.parquet' (FORMAT parquet)")
    log(f"table of {rows:,} rows, {changes:,} changes written as Parquet")
    reader = conn.execute(f"SELECT * FROM '{files}/accounts.parquet'").to_arrow_reader(500_000)
    base = write_window(catalog, TABLE, (b for b in _tables(reader)), window=None, run_id="bench-base")
    log(f"Iceberg table built: snapshot {base.snapshot_id}")

    def ours() -> tuple[float, dict]:
        table = catalog.load_table(TABLE)
        with table.manage_snapshots() as ms:
            ms.set_current_snapshot(snapshot_id=base.snapshot_id)
        c = duck.connect(settings)
        started = time.perf_counter()
        c.execute(f"CREATE VIEW target AS SELECT * FROM {duck.scan_sql(base.metadata_location, base.snapshot_id)}")
        c.execute(f"CREATE VIEW changes AS SELECT * FROM read_parquet('{files}/changes.parquet')")
        plan = plan_merge(c, "changes", "target", SPEC)
        stream = _tables(c.execute(f"SELECT * FROM ({plan.sql})").to_arrow_reader(500_000))
        result = write_window(catalog, TABLE, stream, window=None, run_id="bench-merge", expect_head=base.snapshot_id,
                              extra_properties={STRATEGY_PROPERTY: "merge", **plan.properties()})
        seconds = time.perf_counter() - started
        c.close()
        return seconds, {"snapshot_id": result.snapshot_id, "inserted": plan.inserted, "updated": plan.updated,
                         "kept": plan.kept, "metadata_location": result.metadata_location}

    def raw() -> float:
        c = duckdb.connect()
        c.execute(f"SET memory_limit = '{settings.duckdb_memory_limit}'")
        c.execute(f"SET threads = {settings.duckdb_threads}")
        started = time.perf_counter()
        c.execute(f"CREATE VIEW target AS SELECT * FROM read_parquet('{files}/accounts.parquet')")
        c.execute(f"CREATE VIEW changes AS SELECT * FROM read_parquet('{files}/changes.parquet')")
        plan = plan_merge(c, "changes", "target", SPEC)
        c.execute(f"COPY ({plan.sql}) TO '{files}/merged.parquet' (FORMAT parquet)")
        seconds = time.perf_counter() - started
        c.close()
        return seconds

    out: dict = {"rows": rows, "changes": changes, "ours_s": [], "raw_s": []}
    for rep in range(reps):
        for side in (("ours", "raw") if rep % 2 == 0 else ("raw", "ours")):
            if side == "ours":
                seconds, detail = ours()
                out["ours_s"].append(seconds)
                out["ours_detail"] = detail
            else:
                out["raw_s"].append(raw())
            log(f"  rep {rep + 1} {side:<4} {out[side + '_s'][-1]:6.2f}s")
    detail = out["ours_detail"]
    ours_hash = _hash(conn, duck.scan_sql(detail.pop("metadata_location")))
    raw_hash = _hash(conn, f"read_parquet('{files}/merged.parquet')")
    out["same_content"] = ours_hash == raw_hash
    out["merged_rows"] = ours_hash[0]
    assert ours_hash == raw_hash, (ours_hash, raw_hash)
    assert ours_hash[0] == rows + changes - changes // 2, ours_hash
    out["ours_median_s"] = statistics.median(out["ours_s"])
    out["raw_median_s"] = statistics.median(out["raw_s"])
    out["ratio_median"] = statistics.median(a / b for a, b in zip(out["ours_s"], out["raw_s"]))
    if upsert_rows:
        out["pyiceberg_upsert"] = _pyiceberg_upsert(catalog, conn, upsert_rows, log)
        out["ours_at_upsert_size_s"] = _ours_at(catalog, settings, conn, upsert_rows, log)
    conn.close()
    return out


def _tables(reader):
    import pyarrow as pa

    for batch in reader:
        yield pa.Table.from_batches([batch])


def _pyiceberg_upsert(catalog, conn, rows: int, log) -> dict:
    """pyiceberg's own Table.upsert of a tenth of ``rows`` changed into ``rows``."""
    target = write_window(catalog, "silver.upsert_target", conn.execute(accounts_sql(rows)).to_arrow_table(), window=None,
                          run_id="bench-upsert-base")
    table = catalog.load_table("silver.upsert_target")
    changes = conn.execute(changes_sql(rows, rows // 10)).to_arrow_table()
    changes = changes.cast(table.schema().as_arrow())
    started = time.perf_counter()
    result = table.upsert(changes, join_cols=["account_id"])
    seconds = time.perf_counter() - started
    log(f"  pyiceberg upsert of {rows // 10:,} changes into {rows:,} rows: {seconds:.2f}s "
        f"({result.rows_updated:,} updated, {result.rows_inserted:,} inserted)")
    del target
    return {"rows": rows, "changes": rows // 10, "seconds": seconds, "updated": result.rows_updated, "inserted": result.rows_inserted}


def _ours_at(catalog, settings, conn, rows: int, log) -> float:
    """Ours at the pyiceberg upsert's size, for the side-by-side."""
    base = write_window(catalog, "silver.merge_small", conn.execute(accounts_sql(rows)).to_arrow_table(), window=None,
                        run_id="bench-small-base")
    c = duck.connect(settings)
    c.register("changes_arrow", conn.execute(changes_sql(rows, rows // 10)).to_arrow_table())
    started = time.perf_counter()
    c.execute(f"CREATE VIEW target AS SELECT * FROM {duck.scan_sql(base.metadata_location, base.snapshot_id)}")
    plan = plan_merge(c, "changes_arrow", "target", SPEC)
    write_window(catalog, "silver.merge_small", _tables(c.execute(f"SELECT * FROM ({plan.sql})").to_arrow_reader(500_000)),
                 window=None, run_id="bench-small-merge", expect_head=base.snapshot_id)
    seconds = time.perf_counter() - started
    log(f"  ours at the same size: {seconds:.2f}s")
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.merge", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=10_000_000, help="rows in the table")
    parser.add_argument("--changes", type=int, default=1_000_000, help="changed rows (half updates, half new)")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--upsert-rows", type=int, default=100_000, help="table size for pyiceberg's upsert (0: skip)")
    parser.add_argument("--work", type=Path, default=ROOT / ".ratatouille" / "bench" / "merge")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args(argv)
    started = time.perf_counter()

    def log(message: str) -> None:
        print(f"[{time.perf_counter() - started:6.0f}s] {message}", flush=True)

    from bench.__main__ import machine

    results = {"date": dt.date.today().isoformat(), "machine": machine(),
               "merge": run(args.work, args.rows, args.changes, args.reps, args.upsert_rows, log)}
    m = results["merge"]
    results["seconds"] = time.perf_counter() - started
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"{results['date']}-{platform.node()}-merge-{dt.datetime.now():%H%M%S}.json"
    path.write_text(json.dumps(results, indent=2, default=str))
    print(f"\nMerge of {m['changes']:,} changes into {m['rows']:,} rows -> {m['merged_rows']:,}: ours {m['ours_median_s']:.2f}s, "
          f"plain DuckDB {m['raw_median_s']:.2f}s, ratio {m['ratio_median']:.2f} (median of {len(m['ours_s'])} pairs); "
          f"same content: {m['same_content']}")
    if "pyiceberg_upsert" in m:
        u = m["pyiceberg_upsert"]
        print(f"pyiceberg Table.upsert of {u['changes']:,} into {u['rows']:,}: {u['seconds']:.2f}s; "
              f"ours at that size: {m['ours_at_upsert_size_s']:.2f}s")
    shown = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
    print(f"results: {shown} ({results['seconds'] / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
