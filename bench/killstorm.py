"""``python -m bench.killstorm [--writers 50] [--maintenance-kills 8]``: what kill -9 leaves in a
warehouse, and what maintenance leaves after it.

1. **Writers killed**: ``--writers`` writes of one day each into a table, each a forked process
   killed with SIGKILL at a random point of its write (uniform over 1.2 times an uninterrupted
   write), so some die before writing, some mid-file, some after committing.
2. **Maintenance killed**: ``--maintenance-kills`` times, a process writing and maintaining a
   month-partitioned table in a loop (compaction, expiry, the sweep) is killed at a random point.
3. Each table's orphans (files under its folder that no metadata references) are counted from
   the table's own ``health`` figures, then the maintenance job's work runs once per table
   (``maintain``, safety window 0: nothing else writes), and the figures are read again. The rows
   are read by DuckDB before and after: maintenance must not change one.

Prints a table and writes ``bench/results/<date>-<host>-killstorm-<time>.json``. The machinery
(forked writers, the killer) is shared with ``tests/test_maintenance.py``, which asserts what this
measures.
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import multiprocessing as mp
import os
import random
import signal
import statistics
import time
from pathlib import Path

import pyarrow as pa

from bench.measure import elapsed_log, save_results
from ratatouille_assets.lakehouse import duck
from ratatouille_assets.lakehouse.catalog import load_catalog
from ratatouille_assets.lakehouse.write import Window, write_window
from ratatouille_assets.settings import get_settings

ROOT = Path(__file__).resolve().parent.parent
WRITTEN = "bronze.killed"  # writers killed
MAINTAINED = "gold.killed"  # maintenance killed
D0 = dt.date(2024, 1, 1)
DAYS = 5


def rows_of(write: int) -> pa.Table:
    """Write number ``write``'s rows: its own day, its own count, labelled with its number."""
    day = D0 + dt.timedelta(days=write % DAYS)
    n = 50 + write % 13
    return pa.table({"id": pa.array(range(n), pa.int64()), "day": [day] * n, "write": pa.array([write] * n, pa.int64())})


def write_one(write: int) -> None:
    day = D0 + dt.timedelta(days=write % DAYS)
    write_window(load_catalog(), WRITTEN, rows_of(write), window=Window("day", day, day), run_id=f"w{write}")


def killer(kills: int, seed: int, results) -> None:
    """Spawned: fork one writer per try and SIGKILL it at a random point of its write; puts
    (typical uninterrupted write seconds, [(write, exit code)]) on ``results``. The typical write
    is measured on three writes first, and shortened whenever a writer finished before its kill
    (those three were timed on a busier machine), so most kills land inside a write.

    Forked from a process that has imported everything but run nothing (no threads yet), so a
    writer starts in milliseconds and the kill lands inside the write, not inside imports."""
    rng = random.Random(seed)
    outcomes = []

    def fork_write(write: int) -> int:
        pid = os.fork()
        if pid == 0:
            try:
                write_one(write)
                os._exit(0)
            except BaseException:  # noqa: BLE001 - the child reports by exit code
                os._exit(1)
        return pid

    durations = []
    for write in range(3):  # uninterrupted writes: the table exists, and how long one takes
        started = time.monotonic()
        _, status = os.waitpid(fork_write(write), 0)
        assert os.waitstatus_to_exitcode(status) == 0
        durations.append(time.monotonic() - started)
    typical = statistics.median(durations)
    for write in range(3, 3 + kills):
        pid = fork_write(write)
        time.sleep(rng.uniform(0, 1.2 * typical))
        os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        outcomes.append((write, os.waitstatus_to_exitcode(status)))
        if outcomes[-1][1] == 0:  # done before the kill: writes got faster than measured (a load
            typical *= 0.9        # on the machine when they were timed), so aim earlier
    results.put((typical, outcomes))


def kill_writers(kills: int, seed: int) -> tuple[float, list[tuple[int, int]]]:
    """Run :func:`killer` in a spawned process (the settings come from the environment)."""
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    proc = ctx.Process(target=killer, args=(kills, seed, results))
    proc.start()
    typical, outcomes = results.get(timeout=900)
    proc.join(timeout=60)
    if proc.exitcode != 0:
        raise RuntimeError(f"the killer process ended with {proc.exitcode}")
    return typical, outcomes


def month_rows(day: dt.date, n: int = 40) -> pa.Table:
    base = (day - D0).days * 1000
    return pa.table({"id": pa.array(range(base, base + n), pa.int64()), "day": [day] * n,
                     "amount": pa.array([(base + i) * 0.25 for i in range(n)], pa.float64()),
                     "note": [f"{day:%a} #{i}" for i in range(n)]})


def write_days(catalog, identifier: str, days: list[dt.date], tag: str = "w") -> None:
    """One write per day into a month-partitioned table: each day adds a file to its month."""
    for d in days:
        write_window(catalog, identifier, month_rows(d), window=Window("day", d, d), run_id=f"{tag}-{d}",
                     granularity="month")


def maintain_forever(policy_args: dict, seed: int) -> None:
    """Spawned child: a write and maintenance of ``MAINTAINED`` in a loop (killed from outside)."""
    from ratatouille_assets.lakehouse.maintenance import Policy, maintain

    catalog = load_catalog()
    for i in itertools.count():
        write_days(catalog, MAINTAINED, [D0 + dt.timedelta(days=(seed + i) % 60)], tag=f"k{seed}-{i}")
        maintain(catalog, MAINTAINED, Policy(**policy_args), run_id=f"maint-{seed}-{i}")


def kill_maintenance(kills: int, seed: int, policy_args: dict, after_each=None) -> None:
    """``kills`` times: start :func:`maintain_forever`, kill it with SIGKILL after 2-6 s (imports
    take ~2 s; then writes and maintenance run), then ``after_each(kill)``."""
    ctx = mp.get_context("spawn")
    rng = random.Random(seed)
    for kill in range(kills):
        proc = ctx.Process(target=maintain_forever, args=(policy_args, kill))
        proc.start()
        time.sleep(rng.uniform(2.0, 6.0))
        os.kill(proc.pid, signal.SIGKILL)
        proc.join(timeout=60)
        if after_each:
            after_each(kill)


def content(identifier: str) -> list[tuple]:
    """Every row, ordered, read by DuckDB (not pyiceberg): what any reader sees."""
    settings = get_settings()
    location = load_catalog(settings).load_table(identifier).metadata_location
    return duck.connect(settings).execute(f"SELECT * FROM iceberg_scan('{location}') ORDER BY ALL").fetchall()


def run(work: Path, writers: int, maintenance_kills: int, seed: int, log) -> dict:
    import shutil

    from ratatouille_assets.lakehouse.maintenance import Policy, health, maintain

    shutil.rmtree(work, ignore_errors=True)
    os.environ["RATATOUILLE_HOME"] = str(work)
    get_settings.cache_clear()
    settings = get_settings()
    catalog = load_catalog(settings)
    policy_args = {"keep_days": 0, "keep_snapshots": 3, "orphan_age": dt.timedelta(0)}
    policy = Policy(**policy_args)

    write_window(catalog, WRITTEN, rows_of(0), window=Window("day", D0, D0), run_id="create")
    typical, outcomes = kill_writers(writers, seed)
    killed = sum(1 for _, code in outcomes if code == -signal.SIGKILL)
    log(f"{writers} writers: {killed} killed mid-write, {writers - killed} finished first (a write takes {typical * 1000:.0f} ms)")
    write_days(catalog, MAINTAINED, [D0 + dt.timedelta(days=i) for i in range(60)])
    kill_maintenance(maintenance_kills, seed, policy_args)
    log(f"maintenance killed {maintenance_kills} times")

    tables = {}
    for identifier in (WRITTEN, MAINTAINED):
        before = health(catalog, identifier, policy, settings=settings)
        rows = content(identifier)
        started = time.perf_counter()
        result = maintain(catalog, identifier, policy, run_id="killstorm-final", settings=settings)
        seconds = time.perf_counter() - started
        after = health(catalog, identifier, policy, settings=settings)
        same = content(identifier) == rows
        tables[identifier] = {
            "orphan_files_before": before.orphan_files, "orphan_bytes_before": before.orphan_bytes,
            "data_files_before": before.data_files, "snapshots_before": before.snapshots,
            "orphan_files_after": after.orphan_files, "orphan_bytes_after": after.orphan_bytes,
            "data_files_after": after.data_files, "snapshots_after": after.snapshots,
            "rows": len(rows), "rows_unchanged": same, "maintain_s": seconds, "done": result.describe(),
        }
        log(f"{identifier}: {before.orphan_files} orphans ({before.orphan_bytes:,} bytes) -> {after.orphan_files} "
            f"({after.orphan_bytes:,} bytes) in {seconds:.2f}s; rows unchanged: {same}")
    return {"writers": writers, "writers_killed": killed, "typical_write_s": typical,
            "maintenance_kills": maintenance_kills, "seed": seed, "tables": tables}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.killstorm", description=__doc__.split("\n\n")[0])
    parser.add_argument("--writers", type=int, default=50)
    parser.add_argument("--maintenance-kills", type=int, default=8)
    parser.add_argument("--seed", type=int, default=1402)
    parser.add_argument("--work", type=Path, default=ROOT / ".ratatouille" / "bench" / "killstorm")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    log = elapsed_log()

    from bench.__main__ import machine

    out = run(args.work, args.writers, args.maintenance_kills, args.seed, log)
    results = {"date": dt.date.today().isoformat(), "machine": machine(), "killstorm": out,
               "seconds": time.perf_counter() - started}
    path = save_results(args.out, f"killstorm-{dt.datetime.now():%H%M%S}", results)
    print(f"\n{'table':<14} {'orphans before':>15} {'bytes before':>13} {'orphans after':>14} {'bytes after':>12} "
          f"{'data files':>11} {'rows same':>10}")
    for name, t in out["tables"].items():
        print(f"{name:<14} {t['orphan_files_before']:>15} {t['orphan_bytes_before']:>13,} {t['orphan_files_after']:>14} "
              f"{t['orphan_bytes_after']:>12,} {t['data_files_before']:>5} -> {t['data_files_after']:<3} {str(t['rows_unchanged']):>10}")
    shown = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
    print(f"results: {shown} ({results['seconds'] / 60:.1f} min)")
    ok = all(t["orphan_bytes_after"] == 0 and t["rows_unchanged"] for t in out["tables"].values())
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
