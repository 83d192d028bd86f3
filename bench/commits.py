"""``python -m bench.commits [--days 365] [--rows 1000] [--maintain-every 7]``: what one daily write
costs after a year of daily writes, with and without maintenance.

One day-partitioned table (20 numeric columns), one ``write_window`` a day (the window's delete
and the new file in one commit, as every daily run makes them), for ``--days`` days; twice: with
nothing else, and with the maintenance job's work (compaction, expiry keeping the newest 100
snapshots, the sweep) every ``--maintain-every`` days. Each write's CPU time (``process_time``,
this process: the machine's other load does not count) is kept; reported per stretch of days as
the median, and the last stretch over the first.

This is the platform's own cost of history, apart from any model's data: the whole-graph year
(``python -m bench --only-history``) also has models whose work grows with the data they hold.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import statistics
import time
from pathlib import Path

import pyarrow as pa

from bench.measure import elapsed_log, save_results

ROOT = Path(__file__).resolve().parent.parent
D0 = dt.date(2024, 1, 1)
TABLE = "silver.daily"


def day_rows(day: dt.date, rows: int) -> pa.Table:
    columns = {f"m{i}": pa.array([float(i)] * rows) for i in range(20)}
    return pa.table({"id": pa.array(range(rows), pa.int64()), "day": [day] * rows, **columns})


def year(work: Path, days: int, rows: int, maintain_every: int, log) -> dict:
    from ratatouille_assets.lakehouse.catalog import load_catalog
    from ratatouille_assets.lakehouse.maintenance import Policy, maintain
    from ratatouille_assets.lakehouse.write import Window, write_window
    from ratatouille_assets.settings import get_settings

    shutil.rmtree(work, ignore_errors=True)
    os.environ["RATATOUILLE_HOME"] = str(work)
    get_settings.cache_clear()
    catalog = load_catalog(get_settings())
    policy = Policy(keep_days=0, keep_snapshots=100, orphan_age=dt.timedelta(0))
    cpu: list[float] = []
    for i in range(days):
        day = D0 + dt.timedelta(days=i)
        started = time.process_time()
        write_window(catalog, TABLE, day_rows(day, rows), window=Window("day", day, day), run_id=f"day-{i}")
        cpu.append(time.process_time() - started)
        if maintain_every and (i + 1) % maintain_every == 0:
            maintain(catalog, TABLE, policy, run_id=f"maintain-{i}")
        if (i + 1) % 73 == 0:
            log(f"  {'maintained' if maintain_every else 'no maintenance'}: day {i + 1}, write {cpu[-1] * 1000:.0f} ms CPU")
    table = catalog.load_table(TABLE)
    stretch = max(1, days // 12)
    medians = {f"{s + 1}-{min(days, s + stretch)}": statistics.median(cpu[s:s + stretch]) for s in range(0, days, stretch)}
    first, last = list(medians.values())[0], list(medians.values())[-1]
    return {"maintain_every": maintain_every, "write_cpu_s": cpu, "median_cpu_s_by_days": medians,
            "last_over_first": last / first, "snapshots": len(table.metadata.snapshots),
            "metadata_bytes": len(table.io.new_input(table.metadata_location))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.commits", description=__doc__.split("\n\n")[0])
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--rows", type=int, default=1000, help="rows a day")
    parser.add_argument("--maintain-every", type=int, default=7, help="days between maintenance runs (the maintained year)")
    parser.add_argument("--work", type=Path, default=ROOT / ".ratatouille" / "bench" / "commits")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args(argv)
    log = elapsed_log()
    from bench.__main__ import machine

    runs = {}
    for every in (0, args.maintain_every):
        runs["maintained" if every else "unmaintained"] = year(args.work / str(every), args.days, args.rows, every, log)
    results = {"date": dt.date.today().isoformat(), "machine": machine(), "days": args.days, "rows": args.rows, "runs": runs}
    path = save_results(args.out, f"commits-{dt.datetime.now():%H%M%S}", results)
    print(f"\nCPU per daily write of {args.rows:,} rows, median per stretch of days:")
    for name, run in runs.items():
        spans = ", ".join(f"{k}: {v * 1000:.0f} ms" for k, v in run["median_cpu_s_by_days"].items())
        print(f"  {name:<12} {spans}\n  {'':<12} last/first {run['last_over_first']:.2f}; {run['snapshots']} snapshots, "
              f"metadata {run['metadata_bytes'] / 1024:.0f} KiB")
    shown = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
    print(f"results: {shown}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
