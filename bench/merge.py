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
import os
import shutil
import statistics
import time
from pathlib import Path

import duckdb

from bench.measure import elapsed_log, save_results
from ratatouille_assets.lakehouse import duck
from ratatouille_assets.lakehouse.catalog import load_catalog
from ratatouille_assets.lakehouse.merge import MergeSpec, plan_merge, touched_days
from ratatouille_assets.lakehouse.write import STRATEGY_PROPERTY, Window, write_window
from ratatouille_assets.settings import get_settings

ROOT = Path(__file__).resolve().parent.parent
SPEC = MergeSpec(("account_id",))
TABLE = "silver.accounts"


def accounts_sql(rows: int, days: int = 0) -> str:
    """The table; with ``days``, a DATE column ``day`` spreads the keys over that many days in order."""
    day = f", DATE '2024-01-01' + CAST(range * {days} // {rows} AS INTEGER) AS day" if days else ""
    return (f"SELECT range AS account_id, 'account ' || range AS name, ['free', 'team', 'pro'][range % 3 + 1] AS tier, "
            f"CAST(range % 97 AS INTEGER) AS seats, TIMESTAMP '2024-01-01' + to_seconds(range) AS updated_at{day} FROM range({rows})")


def changes_sql(rows: int, changes: int, days: int = 0, touched: int = 0) -> str:
    """Half updates of keys spread over the table (every (2·rows/changes)-th key), half new keys.
    With ``days``: the updates are spread over the keys of the last ``touched`` days (keeping their
    day), the new keys fall on the day after the table's last."""
    updates = changes // 2
    if not days:
        first, span, day, new_day = 0, rows, "", ""
    else:
        first = rows - rows * touched // days
        span, new_day = rows - first, f", DATE '2024-01-01' + {days} AS day"
        if updates > span:
            raise SystemExit(f"{updates:,} updates do not fit in the {span:,} rows of the last {touched} days: "
                             "raise --touched or lower --changes")
        day = f", DATE '2024-01-01' + CAST(({first} + range * {max(1, span // max(updates, 1))}) * {days} // {rows} AS INTEGER) AS day"
    step = max(1, span // max(updates, 1))
    return (f"SELECT {first} + range * {step} AS account_id, 'renamed ' || range AS name, 'pro' AS tier, CAST(7 AS INTEGER) AS seats, "
            f"TIMESTAMP '2025-01-01' AS updated_at{day} FROM range({updates}) UNION ALL "
            f"SELECT {rows} + range AS account_id, 'new ' || range AS name, 'free' AS tier, CAST(1 AS INTEGER) AS seats, "
            f"TIMESTAMP '2025-01-01' AS updated_at{new_day} FROM range({changes - updates})")


def _hash(conn: duckdb.DuckDBPyConnection, relation: str) -> tuple[int, int]:
    return conn.execute(f"SELECT count(*), sum(hash(account_id, name, tier, seats, updated_at)) FROM {relation}").fetchone()


def run(work: Path, rows: int, changes: int, reps: int, upsert_rows: int, log, days: int = 0, touched: int = 0) -> dict:
    """``days`` > 0: the table is partitioned by day over that many days and the updates touch the
    last ``touched`` of them; both sides then rewrite only the days the changes touch (ours: the
    plugin's partitioned merge; plain DuckDB: the same days, Parquet files partitioned by day)."""
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    os.environ["RATATOUILLE_HOME"] = str(work / "home")
    get_settings.cache_clear()
    settings = get_settings()
    catalog = load_catalog(settings)
    conn = duck.connect(settings)
    files = work / "parquet"
    files.mkdir()
    by_day = " (FORMAT parquet, PARTITION_BY (day))" if days else " (FORMAT parquet)"
    table_files = f"{files}/accounts" + ("" if days else ".parquet")
    conn.execute(f"COPY ({accounts_sql(rows, days)}) TO '{table_files}'{by_day}")
    conn.execute(f"COPY ({changes_sql(rows, changes, days, touched)}) TO '{files}/changes.parquet' (FORMAT parquet)")
    read_table = f"read_parquet('{table_files}/*/*.parquet', hive_partitioning = true)" if days else f"read_parquet('{table_files}')"
    log(f"table of {rows:,} rows{f' over {days} days' if days else ''}, {changes:,} changes written as Parquet")
    window = Window("day", dt.date(2024, 1, 1), dt.date(2024, 1, 1) + dt.timedelta(days=days - 1)) if days else None
    reader = conn.execute(f"SELECT * FROM ({accounts_sql(rows, days)})").to_arrow_reader(500_000)
    base = write_window(catalog, TABLE, (b for b in _tables(reader)), window=window, run_id="bench-base")
    log(f"Iceberg table built: snapshot {base.snapshot_id}")

    def merge_in(c, target: str) -> tuple:
        """The plan over ``target`` as the plugin makes it (partitioned: the touched days only)."""
        if not days:
            return plan_merge(c, "changes", target, SPEC), None
        chosen = Window.of_days("day", touched_days(c, "changes", target, SPEC, "day"))
        restricted = f"(SELECT * FROM {target} WHERE {chosen.to_sql('day')})"
        return plan_merge(c, "changes", restricted, SPEC, table_rows=rows, days=len(chosen.days())), chosen

    def ours() -> tuple[float, dict]:
        table = catalog.load_table(TABLE)
        with table.manage_snapshots() as ms:
            ms.set_current_snapshot(snapshot_id=base.snapshot_id)
        c = duck.connect(settings)
        started = time.perf_counter()
        c.execute(f"CREATE VIEW target AS SELECT * FROM {duck.scan_sql(base.metadata_location, base.snapshot_id)}")
        c.execute(f"CREATE VIEW changes AS SELECT * FROM read_parquet('{files}/changes.parquet')")
        plan, chosen = merge_in(c, "target")
        stream = _tables(c.execute(f"SELECT * FROM ({plan.sql})").to_arrow_reader(500_000))
        result = write_window(catalog, TABLE, stream, window=chosen, run_id="bench-merge", expect_head=base.snapshot_id,
                              extra_properties={STRATEGY_PROPERTY: "merge", **plan.properties()})
        seconds = time.perf_counter() - started
        c.close()
        return seconds, {"snapshot_id": result.snapshot_id, "inserted": plan.inserted, "updated": plan.updated,
                         "kept": plan.kept, "days_rewritten": plan.days, "metadata_location": result.metadata_location}

    def raw() -> float:
        c = duckdb.connect()
        c.execute(f"SET memory_limit = '{settings.duckdb_memory_limit}'")
        c.execute(f"SET threads = {settings.duckdb_threads}")
        shutil.rmtree(files / "merged", ignore_errors=True)
        started = time.perf_counter()
        c.execute(f"CREATE VIEW target AS SELECT * FROM {read_table}")
        c.execute(f"CREATE VIEW changes AS SELECT * FROM read_parquet('{files}/changes.parquet')")
        plan, _ = merge_in(c, "target")
        c.execute(f"COPY ({plan.sql}) TO '{files}/merged' {by_day}" if days else
                  f"COPY ({plan.sql}) TO '{files}/merged.parquet' (FORMAT parquet)")
        seconds = time.perf_counter() - started
        c.close()
        return seconds

    out: dict = {"rows": rows, "changes": changes, "days": days, "touched": touched, "ours_s": [], "raw_s": []}
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
    if days:  # the untouched days' files as they were, and the merged days
        merged = f"read_parquet('{files}/merged/*/*.parquet', hive_partitioning = true)"
        conn.execute(f"CREATE TEMP TABLE rewritten AS SELECT DISTINCT day FROM {merged}")
        raw_hash = _hash(conn, f"(SELECT * FROM {read_table} WHERE day NOT IN (SELECT day FROM rewritten) "
                               f"UNION ALL SELECT * FROM {merged})")
    else:
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
    parser.add_argument("--days", type=int, default=0, help="partition the table by day over this many days (0: unpartitioned)")
    parser.add_argument("--touched", type=int, default=7, help="with --days: the updates touch the last this many days")
    parser.add_argument("--work", type=Path, default=ROOT / ".ratatouille" / "bench" / "merge")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    log = elapsed_log()

    from bench.__main__ import machine

    results = {"date": dt.date.today().isoformat(), "machine": machine(),
               "merge": run(args.work, args.rows, args.changes, args.reps, args.upsert_rows, log, args.days, args.touched)}
    m = results["merge"]
    results["seconds"] = time.perf_counter() - started
    path = save_results(args.out, f"merge-{dt.datetime.now():%H%M%S}", results)
    where = f" ({m['days']} days, {m['ours_detail']['days_rewritten']} rewritten)" if m["days"] else ""
    print(f"\nMerge of {m['changes']:,} changes into {m['rows']:,} rows{where} -> {m['merged_rows']:,}: ours {m['ours_median_s']:.2f}s, "
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
