"""``python -m bench.stress [--reps 20] [--days 60]``: writers at once, repeated; count failed runs.

Each repetition starts from an empty warehouse (so the catalog, its namespaces and the tables are
created by whichever writer gets there first) and runs, each pair at the same instant (a barrier)
in its own process, as two run workers or two ``rat materialize`` would:

- ``two_sources``: bronze ``orders`` and bronze ``order_items`` over every day;
- ``same_source``: two bronze ``orders`` backfills over different halves of the days;
- ``overlapping``: two bronze ``orders`` backfills over ranges that share a third of the days.

A run fails if Dagster reports it failed or its process dies. After each pair the table must hold
each landing day exactly once (one writer's rows for a day, never both), or the repetition counts as
wrong. Prints one line per repetition and a summary; exit 1 if any run failed or any table was wrong.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import multiprocessing as mp
import os
import queue
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import duckdb

from ratatouille_assets.ingest.generator import SampleSpec, generate
from ratatouille_assets.ingest.sources import load_sources_file

ROOT = Path(__file__).resolve().parent.parent
RANGE_START, RANGE_END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"


def _pairs(days: list[str]) -> dict[str, list[tuple[str, str, str]]]:
    half, third = len(days) // 2, len(days) // 3
    return {
        "two_sources": [("orders", days[0], days[-1]), ("order_items", days[0], days[-1])],
        "same_source": [("orders", days[0], days[half - 1]), ("orders", days[half], days[-1])],
        "overlapping": [("orders", days[0], days[2 * third - 1]), ("orders", days[third], days[-1])],
    }


def _writer(env: dict[str, str], source: str, first: str, last: str, barrier, results) -> None:
    os.environ.update(env)
    import dagster as dg

    from ratatouille_assets.definitions import build_definitions

    defs = build_definitions()
    barrier.wait(timeout=300)
    with dg.DagsterInstance.get() as instance:
        result = dg.materialize(
            list(defs.assets), selection=[dg.AssetKey(["bronze", source])], resources=dict(defs.resources),
            instance=instance, tags={RANGE_START: first, RANGE_END: last}, raise_on_error=False,
            run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}},
        )
    results.put(((source, first), result.success))


def _days_once(env: dict[str, str], table: str, days: int) -> bool:
    """Every one of the ``days`` landing days is in ``table``, each written by one run only."""
    from ratatouille_assets.lakehouse import duck
    from ratatouille_assets.lakehouse.catalog import load_catalog
    from ratatouille_assets.settings import get_settings

    with _environ(env):
        settings = get_settings()
        conn = duck.connect(settings)
        duck.register_iceberg_views(conn, load_catalog(settings))
        try:
            rows = conn.execute(f"SELECT _landing_date, count(DISTINCT _run_id) FROM {table} GROUP BY 1").fetchall()
        except duckdb.CatalogException:  # no writer created it
            rows = []
        finally:
            conn.close()
    return len(rows) == days and all(n == 1 for _, n in rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.stress", description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--days", type=int, default=60)
    parser.add_argument("--work", type=Path, default=ROOT / ".ratatouille" / "stress")
    args = parser.parse_args(argv)

    last = dt.date.today() - dt.timedelta(days=1)
    spec = SampleSpec(start=last - dt.timedelta(days=args.days - 1), days=args.days, rows_per_day=200)
    landing = args.work / "landing"
    shutil.rmtree(args.work, ignore_errors=True)
    generate(spec, str(landing))
    days = [spec.day(i).isoformat() for i in range(spec.days)]
    sources_file = args.work / "sources.yml"
    text = (ROOT / "sources.yml").read_text()
    start = f"start: {load_sources_file(ROOT / 'sources.yml').start}"
    if start not in text:
        raise ValueError(f"sources.yml: no line '{start}' to change for the stress history")
    sources_file.write_text(text.replace(start, f"start: {days[0]}", 1))

    ctx = mp.get_context("spawn")
    failed = wrong = runs = 0
    for rep in range(1, args.reps + 1):
        for scenario, pair in _pairs(days).items():
            home = args.work / "homes" / f"{scenario}-{rep}"
            env = {"RATATOUILLE_HOME": str(home), "RATATOUILLE_LANDING": str(landing),
                   "RATATOUILLE_SOURCES_FILE": str(sources_file), "DAGSTER_HOME": str(home / "dagster")}
            _instance(env)
            barrier, results = ctx.Barrier(len(pair)), ctx.Queue()
            procs = [ctx.Process(target=_writer, args=(env, *job, barrier, results)) for job in pair]
            started = time.perf_counter()
            for p in procs:
                p.start()
            for p in procs:
                p.join(timeout=900)
            outcomes = {}
            for _ in pair:  # a process that died put nothing: its run counts as failed
                try:
                    key, ok = results.get(timeout=10)
                except queue.Empty:
                    break
                outcomes[key] = ok
            ok_runs = sum(1 for ok in outcomes.values() if ok)
            bad_runs = len(pair) - ok_runs
            tables_ok = all(_days_once(env, f"bronze.{t}", len(days)) for t in {job[0] for job in pair})
            runs += len(pair)
            failed += bad_runs
            wrong += 0 if tables_ok else 1
            print(f"rep {rep:>2} {scenario:<12} runs ok {ok_runs}/{len(pair)}  tables "
                  f"{'ok' if tables_ok else 'WRONG'}  {time.perf_counter() - started:5.1f}s", flush=True)
            shutil.rmtree(home, ignore_errors=True)
    print(f"\n{runs} runs in {args.reps} repetitions x {len(_pairs(days))} scenarios: {failed} failed, "
          f"{wrong} repetitions with a wrong table")
    return 1 if failed or wrong else 0


def _instance(env: dict[str, str]) -> None:
    """The Dagster instance exists before its runs, as in a deployment."""
    import dagster as dg

    from ratatouille_assets.demo import ensure_dagster_home
    from ratatouille_assets.settings import get_settings

    with _environ(env):
        ensure_dagster_home(get_settings())
        with dg.DagsterInstance.get():
            pass


@contextlib.contextmanager
def _environ(env: dict[str, str]) -> Iterator[None]:
    """This process with ``env`` set (and the settings read again), restored after."""
    from ratatouille_assets.settings import get_settings

    saved = dict(os.environ)
    os.environ.update(env)
    get_settings.cache_clear()
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)
        get_settings.cache_clear()


if __name__ == "__main__":
    sys.exit(main())
