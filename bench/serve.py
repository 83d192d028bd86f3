"""``python -m bench.serve [--home DIR] [--reps 20] [--clients 20] [--seconds 60]``: the dashboard
queries through the SQL endpoint (``rat serve``), against the same queries in DuckDB directly.

``--home`` is a lakehouse to read (``RATATOUILLE_HOME``; default: the year of history the
incremental benchmark builds, ``.ratatouille/bench/history``). ``rat serve`` runs in a process of
its own on a free loopback port, as in production; clients use psycopg 3 (what a Python BI tool
or notebook uses; Superset's psycopg2 is the same protocol).

1. **Latency**: the five dashboard queries of ``bench.queries`` on ``gold.kpi_daily_sales``,
   ``--reps`` times each after a warm-up, one client: p50 and p95 through the endpoint, and the
   same queries through the SDK's DuckDB (``rat.sql``: the views the endpoint uses, refreshed per
   query) and through a bare DuckDB cursor on ``iceberg_scan`` (no refresh) in this process.
2. **Concurrency**: ``--clients`` connections, each running the five queries in a loop for
   ``--seconds``: queries done, errors, p50 and p95.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import secrets
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from bench.measure import elapsed_log, save_results
from bench.queries import DASHBOARD, KPI, percentile

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _queries() -> dict[str, str]:
    return {name: sql.replace("FROM kpi", f"FROM {KPI} kpi") for name, sql in DASHBOARD.items()}


def start_server(home: Path, port: int, password: str) -> subprocess.Popen:
    env = {**os.environ, "RATATOUILLE_HOME": str(home), "RATATOUILLE_SQL_PORT": str(port),
           "RATATOUILLE_SQL_PASSWORD": password}
    proc = subprocess.Popen([sys.executable, "-m", "ratatouille_assets.cli", "serve"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"rat serve ended: {proc.stdout.read()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return proc
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("rat serve did not listen within 120 s")


def _timed(run, reps: int) -> list[float]:
    out = []
    for _ in range(reps):
        started = time.perf_counter()
        run()
        out.append((time.perf_counter() - started) * 1000)
    return out


def latency(connect, home: Path, reps: int) -> dict:
    from ratatouille_assets.lakehouse import duck
    from ratatouille_assets.lakehouse.catalog import load_catalog
    from ratatouille_assets.sdk import Lakehouse
    from ratatouille_assets.settings import get_settings

    os.environ["RATATOUILLE_HOME"] = str(home)
    get_settings.cache_clear()
    settings = get_settings()
    rat = Lakehouse(settings)
    location = load_catalog(settings).load_table(KPI).metadata_location
    bare = duck.connect(settings)
    bare.execute(f"CREATE SCHEMA gold; CREATE VIEW {KPI} AS SELECT * FROM {duck.scan_sql(location)}")
    sides: dict[str, dict[str, list[float]]] = {"endpoint": {}, "sdk": {}, "duckdb": {}}
    with connect() as conn:
        for name, sql in _queries().items():
            runs = {
                "endpoint": lambda sql=sql: conn.execute(sql).fetchall(),
                "sdk": lambda sql=sql: rat.sql(sql).fetchall(),
                "duckdb": lambda sql=sql: bare.execute(sql).fetchall(),
            }
            for side, run in runs.items():
                run()  # warm-up
            for side, run in runs.items():  # each query's repetitions side by side
                sides[side][name] = _timed(run, reps)
    rat.close()
    bare.close()
    summary = {}
    for side, timings in sides.items():
        every = [v for vs in timings.values() for v in vs]
        summary[side] = {"p50_ms": statistics.median(every), "p95_ms": percentile(every, 0.95),
                         "per_query_p50_ms": {k: statistics.median(v) for k, v in timings.items()}}
    summary["endpoint_over_duckdb_p50"] = summary["endpoint"]["p50_ms"] / summary["duckdb"]["p50_ms"]
    return summary


def concurrency(connect, clients: int, seconds: float) -> dict:
    queries = list(_queries().values())
    timings: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(clients)

    def client(index: int) -> None:
        mine, failed = [], []
        try:
            with connect() as conn:
                start.wait()
                deadline = time.monotonic() + seconds
                i = index
                while time.monotonic() < deadline:
                    began = time.perf_counter()
                    try:
                        conn.execute(queries[i % len(queries)]).fetchall()
                        mine.append((time.perf_counter() - began) * 1000)
                    except Exception as exc:  # noqa: BLE001 - counted and reported
                        failed.append(f"{type(exc).__name__}: {exc}")
                    i += 1
        except Exception as exc:  # noqa: BLE001 - a client that could not connect is an error too
            failed.append(f"{type(exc).__name__}: {exc}")
        with lock:
            timings.extend(mine)
            errors.extend(failed)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {"clients": clients, "seconds": seconds, "queries": len(timings), "errors": len(errors),
            "error_samples": errors[:5], "p50_ms": statistics.median(timings) if timings else None,
            "p95_ms": percentile(timings, 0.95) if timings else None,
            "queries_per_s": len(timings) / seconds}


def main(argv: list[str] | None = None) -> int:
    import psycopg

    parser = argparse.ArgumentParser(prog="python -m bench.serve", description=__doc__.split("\n\n")[0])
    parser.add_argument("--home", type=Path, default=ROOT / ".ratatouille" / "bench" / "history")
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args(argv)
    log = elapsed_log()
    from bench.__main__ import machine

    port, password = _free_port(), secrets.token_urlsafe(16)
    server = start_server(args.home, port, password)

    def connect():
        return psycopg.connect(host="127.0.0.1", port=port, user="ratatouille", password=password, dbname="lakehouse",
                               autocommit=True)

    try:
        log(f"rat serve on 127.0.0.1:{port} over {args.home}")
        lat = latency(connect, args.home, args.reps)
        log(f"latency: endpoint p50 {lat['endpoint']['p50_ms']:.1f} ms, DuckDB p50 {lat['duckdb']['p50_ms']:.1f} ms")
        conc = concurrency(connect, args.clients, args.seconds)
        log(f"{conc['clients']} clients x {conc['seconds']:.0f} s: {conc['queries']} queries, {conc['errors']} errors")
    finally:
        server.terminate()
        server.wait(timeout=60)
    results = {"date": dt.date.today().isoformat(), "machine": machine(), "home": str(args.home), "latency": lat,
               "concurrency": conc}
    path = save_results(args.out, f"serve-{dt.datetime.now():%H%M%S}", results)
    print(f"\nDashboard queries on {KPI}, p50 / p95 over {args.reps} runs of each of 5 queries, one client:")
    for side in ("endpoint", "sdk", "duckdb"):
        print(f"  {side:<9} {lat[side]['p50_ms']:7.1f} ms  {lat[side]['p95_ms']:7.1f} ms   "
              + ", ".join(f"{k} {v:.1f}" for k, v in lat[side]["per_query_p50_ms"].items()))
    print(f"  endpoint / DuckDB (p50): {lat['endpoint_over_duckdb_p50']:.2f}")
    print(f"{conc['clients']} clients for {conc['seconds']:.0f} s: {conc['queries']} queries ({conc['queries_per_s']:.1f}/s), "
          f"{conc['errors']} errors, p50 {conc['p50_ms']:.1f} ms, p95 {conc['p95_ms']:.1f} ms")
    shown = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
    print(f"results: {shown}")
    return 0 if conc["errors"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
