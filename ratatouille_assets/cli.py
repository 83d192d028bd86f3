"""``rat``: the command line. ``rat help`` (or no argument) lists the commands."""

from __future__ import annotations

import sys


def _tables(argv: list[str]) -> int:
    from ratatouille_assets.lakehouse.catalog import load_catalog
    from ratatouille_assets.lakehouse.tables import describe, list_tables

    catalog = load_catalog()
    for name in list_tables(catalog):
        info = describe(catalog, name)
        print(f"{name:<32} {info.total_rows:>12,}  {info.metadata_location}")
    return 0


def _settings(argv: list[str]) -> int:
    from ratatouille_assets.settings import ENV_PREFIX, get_settings

    for name, value in get_settings().public_dict().items():
        print(f"{ENV_PREFIX}{name.upper()}={value}")
    return 0


def _query(argv: list[str]) -> int:
    """Run SQL over every table (``bronze.x``, ``silver.y``, ``gold.z``: views on Iceberg) in DuckDB."""
    import argparse

    parser = argparse.ArgumentParser(prog="rat query", description=_query.__doc__)
    parser.add_argument("sql", help='e.g. "SELECT * FROM gold.kpi_daily_sales LIMIT 10"')
    parser.add_argument("--format", choices=FORMATS, default=None,
                        help="table (the default, on standard output), csv, json (JSON lines: decimals as exact "
                             "strings, times in ISO 8601) or parquet (needs --output)")
    parser.add_argument("--output", "-o", metavar="FILE",
                        help="write every row to FILE (csv, json or parquet; without --format, from its suffix: "
                             ".csv, .json/.jsonl, .parquet)")
    parser.add_argument("--csv", action="store_true", help="the same as --format csv")
    parser.add_argument("--max-rows", type=int, default=100, help="rows shown as a table (default 100)")
    parser.add_argument(
        "--as-of", action="append", default=[], metavar="POINT",
        help="read the tables as they were: a timestamp (2026-12-01T14:30:00, UTC unless it has an offset) reads "
             "every table then; a snapshot id the table that has it; a branch or tag the tables that have it; "
             "TABLE=POINT one table (repeatable)",
    )
    args = parser.parse_args(argv)
    fmt = "csv" if args.csv else (args.format or (_format_of(args.output) if args.output else "table"))
    if fmt == "parquet" and not args.output:
        print("error: --format parquet writes a file: give --output FILE", file=sys.stderr)
        return 2
    if fmt in ("table", None) and args.output:
        # A table shows the first --max-rows rows: a file of it would hold part of the result.
        print(f"error: {args.output}: give --format csv, json or parquet (a table is for the terminal; a file gets "
              "every row)", file=sys.stderr)
        return 2
    from ratatouille_assets.sdk import Lakehouse, NotFoundError, RatError

    lakehouse = Lakehouse()
    try:
        relation = lakehouse.sql(args.sql, as_of=_as_of(args.as_of))
        write_result(relation, fmt, args.output, args.max_rows)
    except RatError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, NotFoundError) else 1
    return 0


FORMATS = ("table", "csv", "json", "parquet")
_SUFFIXES = {".csv": "csv", ".json": "json", ".jsonl": "json", ".ndjson": "json", ".parquet": "parquet"}


def _format_of(path: str) -> str | None:
    import os

    return _SUFFIXES.get(os.path.splitext(path)[1].lower())


def write_result(relation, fmt: str, output: str | None, max_rows: int = 100) -> None:
    """``relation`` as a table (on the terminal), CSV, JSON lines or Parquet, to ``output`` or stdout.
    Rows stream in batches: a result larger than memory can go to a file."""
    import contextlib
    import csv
    import json

    if fmt == "parquet":
        import pyarrow.parquet as pq

        reader = relation.arrow()
        with pq.ParquetWriter(output, reader.schema) as writer:
            for batch in reader:
                writer.write_batch(batch)
        return
    if fmt == "table":
        relation.show(max_rows=max_rows, max_width=200)
        return
    with (open(output, "w", newline="") if output else contextlib.nullcontext(sys.stdout)) as out:
        columns = relation.columns
        writer = csv.writer(out, lineterminator="\n") if fmt == "csv" else None
        if writer:
            writer.writerow(columns)
        for batch in relation.arrow():
            for row in batch.to_pylist():
                if writer:
                    writer.writerow(row[c] for c in columns)
                else:
                    out.write(json.dumps(row, default=_json_value) + "\n")


def _json_value(value):
    import datetime as dt
    import decimal

    if isinstance(value, (dt.date, dt.datetime, dt.time)):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    return str(value)


def _schema(argv: list[str]) -> int:
    """A table's columns: name, type (as DuckDB reads them), nullable."""
    import argparse

    from ratatouille_assets.sdk import Lakehouse, RatError

    parser = argparse.ArgumentParser(prog="rat schema", description=_schema.__doc__)
    parser.add_argument("table", help="e.g. gold.kpi_daily_sales")
    args = parser.parse_args(argv)
    try:
        for name, kind, nullable in Lakehouse().schema(args.table).fetchall():
            print(f"{name:<32} {kind:<28} {'' if nullable else 'not null'}")
    except RatError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def _sql(argv: list[str]) -> int:
    """An interactive SQL shell over every table (DuckDB; end a statement with ';', .quit to leave)."""
    import argparse

    parser = argparse.ArgumentParser(prog="rat sql", description=_sql.__doc__)
    parser.add_argument("--max-rows", type=int, default=40, help="rows shown per result (default 40)")
    args = parser.parse_args(argv)
    from ratatouille_assets.sdk import Lakehouse, RatError

    try:
        import readline  # noqa: F401 - line editing and history for input()
    except ImportError:
        pass
    lakehouse = Lakehouse()
    tables = lakehouse.tables()
    interactive = sys.stdin.isatty()
    if interactive:
        print(f"rat sql: {len(tables)} tables ({', '.join(tables[:6])}{', ...' if len(tables) > 6 else ''}); "
              "end a statement with ';'. .tables lists them, .quit leaves.")
    pending: list[str] = []
    failed = False
    while True:
        try:
            line = input("rat> " if not pending else " ..> ") if interactive else sys.stdin.readline()
        except (EOFError, KeyboardInterrupt):
            print()
            break
        if not interactive and line == "":
            break
        line = line.rstrip("\n")
        if not pending and line.strip() in (".quit", ".exit", "\\q"):
            break
        if not pending and line.strip() == ".tables":
            print("\n".join(lakehouse.tables()))
            continue
        pending.append(line)
        text = "\n".join(pending).strip()
        if not text.endswith(";"):
            continue
        pending = []
        try:
            write_result(lakehouse.sql(text.rstrip(";")), "table", None, args.max_rows)
        except RatError as exc:
            failed = True
            print(f"error: {exc}", file=sys.stderr)
    return 1 if failed and not interactive else 0


def _as_of(points: list[str]) -> str | dict[str, str] | None:
    """``--as-of`` values: one point for every table, or TABLE=POINT pairs."""
    if not points:
        return None
    pairs = [p for p in points if "=" in p]
    if not pairs:
        if len(points) > 1:
            raise SystemExit("rat: give one --as-of for every table, or TABLE=POINT pairs")
        return points[0]
    if len(pairs) != len(points):
        raise SystemExit("rat: mix of --as-of POINT and --as-of TABLE=POINT: give one or the other")
    return dict(p.split("=", 1) for p in pairs)


def _history(argv: list[str]) -> int:
    """A table's commits (newest first) and its branches and tags: time, operation, run, window, rows, files."""
    import argparse
    import datetime as dt

    from ratatouille_assets.lakehouse.catalog import load_catalog
    from ratatouille_assets.lakehouse.timetravel import history, refs

    parser = argparse.ArgumentParser(prog="rat history", description=_history.__doc__)
    parser.add_argument("table", help="e.g. silver.orders")
    parser.add_argument("--day", type=dt.date.fromisoformat, help="only commits that wrote this day (YYYY-MM-DD)")
    parser.add_argument("--run-id", help="only commits of this Dagster run")
    parser.add_argument("--main", action="store_true", help="only main's commits (not those of branches)")
    parser.add_argument("--limit", type=int, default=50, help="newest N commits (default 50; 0: all)")
    args = parser.parse_args(argv)
    catalog = load_catalog()
    if not catalog.table_exists(args.table):
        print(f"error: {args.table}: no such table (rat tables lists them)", file=sys.stderr)
        return 2
    table = catalog.load_table(args.table)
    for ref in refs(table):
        print(f"{ref.kind:<7} {ref.name:<24} {ref.snapshot_id:>20}  {ref.committed_at:%Y-%m-%d %H:%M:%S}")
    entries = history(table, day=args.day, run_id=args.run_id, branches=not args.main)
    shown = entries[: args.limit] if args.limit else entries
    print(f"\n{'committed (UTC)':<19} {'snapshot':>20} {'operation':<9} {'window':<24} {'+rows':>9} {'-rows':>9} "
          f"{'+files':>6} {'-files':>6} {'total':>10}  run / note")
    for e in shown:
        window = e.window.partition(":")[2] if e.window else (e.partition or "whole table")
        where = "" if e.on_main else " [not on main]"
        marks = f" ({', '.join(e.refs)})" if e.refs else ""
        print(f"{e.committed_at:%Y-%m-%d %H:%M:%S} {e.snapshot_id:>20} {e.operation:<9} {window:<24} {e.added_rows:>9,} "
              f"{e.removed_rows:>9,} {e.added_files:>6} {e.removed_files:>6} {e.total_rows:>10,}  "
              f"{e.run_id or '-'}{' ' + e.note if e.note else ''}{marks}{where}")
    if len(shown) < len(entries):
        print(f"... {len(entries) - len(shown)} older commit(s): --limit 0 shows all")
    return 0


def _rollback(argv: list[str]) -> int:
    """Roll a table, or some of its days, back to a snapshot, tag or point in time: a new commit,
    recorded in Dagster as a materialization of each day it changed (the `rollback` job)."""
    import argparse
    import datetime as dt

    import dagster as dg

    from ratatouille_assets.defs.rollback import JOB_NAME

    parser = argparse.ArgumentParser(prog="rat rollback", description=_rollback.__doc__)
    parser.add_argument("table", help="e.g. silver.orders")
    parser.add_argument("--to", required=True, metavar="POINT",
                        help="a snapshot id (rat history), a tag, or a timestamp (UTC unless it has an offset)")
    parser.add_argument("--day", type=dt.date.fromisoformat, help="roll back only this day (YYYY-MM-DD)")
    parser.add_argument("--start", type=dt.date.fromisoformat, help="roll back only the days from this one ...")
    parser.add_argument("--end", type=dt.date.fromisoformat, help="... to this one (inclusive)")
    args = parser.parse_args(argv)
    if args.day and (args.start or args.end):
        parser.error("give --day, or --start and --end")
    start = args.day or args.start
    end = args.day or args.end or start
    if args.end and not start:
        parser.error("--end needs --start")
    from ratatouille_assets.definitions import build_definitions
    from ratatouille_assets.demo import ensure_dagster_home
    from ratatouille_assets.settings import get_settings

    ensure_dagster_home(get_settings())
    config = {"table": args.table, "to": args.to, "start": start.isoformat() if start else "",
              "end": end.isoformat() if end else ""}
    with dg.DagsterInstance.get() as instance:
        result = build_definitions().resolve_job_def(JOB_NAME).execute_in_process(
            run_config={"ops": {"rollback_table": {"config": config}},
                        "loggers": {"console": {"config": {"log_level": "WARNING"}}}},
            instance=instance, raise_on_error=False,
        )
    if not result.success:
        for event in result.all_events:
            if event.is_step_failure:
                print(f"error: {event.step_failure_data.error.message.strip()}", file=sys.stderr)
        return 1
    for event in result.get_asset_materialization_events():
        mat = event.step_materialization_data.materialization
        print(f"{mat.asset_key.to_user_string():<28} {mat.partition or 'whole table':<12} "
                  f"{mat.metadata['rollback/rows_before'].value:>9,} -> {mat.metadata['dagster/row_count'].value:,} rows")
    print(result.output_for_node("rollback_table"))
    return 0


def _branch(argv: list[str]) -> int:
    """Data branches over every table: list, diff NAME (per table and partition), publish NAME (main
    fast-forwarded to the branch, refused where main moved), drop NAME."""
    import argparse

    from ratatouille_assets.lakehouse import branches
    from ratatouille_assets.lakehouse.catalog import load_catalog
    from ratatouille_assets.settings import RESERVED_BRANCH_PREFIX

    parser = argparse.ArgumentParser(prog="rat branch", description=_branch.__doc__)
    parser.add_argument("action", choices=("list", "diff", "publish", "drop"))
    parser.add_argument("name", nargs="?", help="the branch (diff, publish, drop)")
    args = parser.parse_args(argv)
    catalog = load_catalog()
    if args.action == "list":
        found = branches.list_branches(catalog)
        for info in found:
            held = "  (audit branch: rows a failed check held back)" if info.name.startswith(RESERVED_BRANCH_PREFIX) else ""
            print(f"{info.name:<28} {len(info.tables):>3} table(s), newest commit {info.newest:%Y-%m-%d %H:%M:%S} UTC"
                  f"  {', '.join(info.tables)}{held}")
        if not found:
            print("no branches: every table has main only")
        return 0
    if not args.name:
        parser.error(f"{args.action} needs the branch's name")
    try:
        branches.check_name(args.name)
    except branches.BranchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not branches.tables_with(catalog, args.name):
        print(f"error: no table has a branch {args.name!r} (rat branch list shows the branches)", file=sys.stderr)
        return 2
    if args.action == "diff":
        differences = branches.diff(catalog, args.name)
        for d in differences:
            moved = "  (main moved since the branch was made: publish will refuse it)" if d.main_moved else ""
            print(f"{d.table}: main {d.main_snapshot} -> {args.name} {d.branch_snapshot}{moved}")
            for p in d.partitions:
                print(f"    {p.partition or 'whole table':<12} rows {p.main_rows:>10,} -> {p.branch_rows:,}")
        if not differences:
            print(f"branch {args.name!r} holds what main holds in every table")
        return 0
    if args.action == "publish":
        published = branches.publish(catalog, args.name)
        for p in published:
            if p.refused:
                print(f"refused: {p.refused}", file=sys.stderr)
            else:
                print(f"{p.table:<32} main -> {p.snapshot_id}")
        return 1 if any(p.refused for p in published) else 0
    for name in branches.drop(catalog, args.name):
        print(f"{name:<32} branch {args.name!r} dropped")
    return 0


def _sweep(argv: list[str]) -> int:
    """Remove the audit branches of failed runs past their retention, then delete the files no
    snapshot references (killed writers, refused commits, expired snapshots)."""
    import argparse
    import datetime as dt
    import re

    from ratatouille_assets.lakehouse.catalog import load_catalog
    from ratatouille_assets.lakehouse.maintenance import DEFAULT_OLDER_THAN, SweepRefusedError, sweep
    from ratatouille_assets.lakehouse.tables import list_tables
    from ratatouille_assets.lakehouse.wap import expire_audit_branches
    from ratatouille_assets.settings import get_settings

    def age(text: str) -> dt.timedelta:
        match = re.fullmatch(r"(\d+)([smhd])", text.strip())
        if not match:
            raise argparse.ArgumentTypeError(f"{text!r}: give a number and a unit, e.g. 30m, 6h, 2d (0s: no margin)")
        return dt.timedelta(seconds=int(match[1]) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[match[2]])

    parser = argparse.ArgumentParser(prog="rat sweep", description=_sweep.__doc__)
    parser.add_argument("tables", nargs="*", help="e.g. bronze.orders (default: every table)")
    parser.add_argument("--older-than", type=age, default=DEFAULT_OLDER_THAN, metavar="AGE",
                        help="only files older than this (default 1h): younger ones may belong to a write "
                             "that has not committed yet. 0s only when nothing writes.")
    parser.add_argument("--audit-older-than", type=age, metavar="AGE",
                        help="remove audit branches (rows a failed check held) older than this "
                             "(default: RATATOUILLE_AUDIT_RETENTION_DAYS, 7d)")
    parser.add_argument("--dry-run", action="store_true", help="list what would be deleted, delete nothing")
    args = parser.parse_args(argv)
    catalog = load_catalog()
    names = args.tables or list_tables(catalog)
    retention = (args.audit_older_than if args.audit_older_than is not None
                 else dt.timedelta(days=get_settings().audit_retention_days))
    for held in expire_audit_branches(catalog, older_than=retention, dry_run=args.dry_run, tables=names):
        print(f"{held.table:<32} audit branch {held.branch} (written {held.written:%Y-%m-%d %H:%M} UTC) "
              + ("would be removed" if args.dry_run else "removed"))
    failed = 0
    total_files = total_bytes = 0
    for name in names:
        try:
            result = sweep(catalog, name, older_than=args.older_than, dry_run=args.dry_run)
        except SweepRefusedError as exc:
            print(f"error: {exc}", file=sys.stderr)
            failed += 1
            continue
        total_files += len(result.orphans)
        total_bytes += result.orphan_bytes
        young = f", {result.too_new} younger than {args.older_than} kept" if result.too_new else ""
        print(f"{name:<32} {len(result.orphans):>6} orphan file(s) {result.orphan_bytes:>12,} bytes{young}")
        if args.dry_run:
            for item in result.orphans:
                print(f"    {item.path}")
    verb = "would delete" if args.dry_run else "deleted"
    print(f"{verb} {total_files} file(s), {total_bytes:,} bytes in {len(names) - failed} table(s)")
    return 1 if failed else 0


def _maintain(argv: list[str]) -> int:
    """Maintain tables: compact small files, expire snapshots by the retention policy
    (RATATOUILLE_KEEP_DAYS, RATATOUILLE_KEEP_SNAPSHOTS), delete the files nothing references any
    more, sweep orphans older than RATATOUILLE_ORPHAN_MINUTES; then report each table's health.
    Runs the `maintenance` job, so the UI records every table's result as its `health` check."""
    import argparse

    import dagster as dg

    from ratatouille_assets.defs.maintenance import JOB_NAME, OP_NAME, identifier_of
    from ratatouille_assets.lakehouse.catalog import load_catalog
    from ratatouille_assets.lakehouse.maintenance import Policy, maintain
    from ratatouille_assets.lakehouse.tables import list_tables
    from ratatouille_assets.settings import get_settings

    parser = argparse.ArgumentParser(prog="rat maintain", description=_maintain.__doc__)
    parser.add_argument("tables", nargs="*", help="e.g. silver.orders (default: every table)")
    parser.add_argument("--dry-run", action="store_true", help="say what would be done, change nothing")
    args = parser.parse_args(argv)
    settings = get_settings()
    policy = Policy.from_settings(settings)
    print(f"policy: {policy.describe()}")
    if args.dry_run:
        catalog = load_catalog()
        for name in args.tables or list_tables(catalog):
            result = maintain(catalog, name, policy, run_id="dry-run", dry_run=True, settings=settings)
            merged = sum(len(g.inputs) for g in result.compacted.rewritten)
            print(f"{name:<32} would compact {merged} file(s) in {len(result.compacted.rewritten)} group(s), "
                  f"expire {len(result.expired.expired)} snapshot(s), sweep {len(result.swept.orphans)} orphan(s) "
                  f"({result.swept.orphan_bytes:,} bytes)")
        return 0

    from ratatouille_assets.definitions import build_definitions
    from ratatouille_assets.demo import ensure_dagster_home

    ensure_dagster_home(settings)
    with dg.DagsterInstance.get() as instance:
        result = build_definitions().resolve_job_def(JOB_NAME).execute_in_process(
            run_config={"ops": {OP_NAME: {"config": {"tables": args.tables}}},
                        "loggers": {"console": {"config": {"log_level": "CRITICAL"}}}},
            instance=instance, raise_on_error=False,
        )
        # From the run's log: a failed step's result leaves out what it logged before failing.
        records = instance.all_logs(result.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION)
    evaluations = sorted((r.dagster_event.event_specific_data for r in records), key=lambda e: e.asset_key.path)
    warned = 0
    for found in evaluations:
        warned += not found.passed
        label = "ok  " if found.passed else found.severity.value
        print(f"{identifier_of(found.asset_key):<32} {label} {found.description}")
    for event in result.all_events:
        if event.is_step_failure:
            print(f"error: {event.step_failure_data.error.message.strip()}", file=sys.stderr)
    print(f"{len(evaluations)} table(s) maintained, {warned} not healthy (run {result.run_id})")
    if not result.success and not evaluations:
        return 2  # refused before any table (e.g. a table that is not the project's)
    return 0 if result.success else 1


def _validate(argv: list[str]) -> int:
    """The definitions load (sources, dbt model contract, Soda files): Dagster's own validation."""
    import os
    from pathlib import Path

    from ratatouille_assets.demo import ensure_dagster_home
    from ratatouille_assets.settings import get_settings, project_root

    ensure_dagster_home(get_settings())  # a new RATATOUILLE_HOME has no DAGSTER_HOME yet
    dagster = Path(sys.executable).parent / "dagster"
    os.execv(str(dagster), [str(dagster), "definitions", "validate", "-w", str(project_root() / "workspace.yaml"), *argv])


def _serve(argv: list[str]) -> int:
    """Serve every table to BI tools over the PostgreSQL protocol, read-only (Superset, Metabase,
    DBeaver, Grafana, psql): schemas bronze, silver and gold, a new snapshot visible to the next query."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="rat serve", description=_serve.__doc__,
        epilog="Settings (environment): RATATOUILLE_SQL_PASSWORD (required), RATATOUILLE_SQL_USER (ratatouille), "
               "RATATOUILLE_SQL_HOST (127.0.0.1), RATATOUILLE_SQL_PORT (5433), RATATOUILLE_SQL_STATEMENT_TIMEOUT_SECONDS "
               "(30), RATATOUILLE_SQL_ROW_LIMIT (100000), RATATOUILLE_SQL_TLS_CERT and RATATOUILLE_SQL_TLS_KEY.",
    )
    parser.parse_args(argv)
    from ratatouille_assets.serve.server import main

    return main()


COMMANDS = {
    "generate": ("write deterministic, dirty sample data (the example shop) to the landing zone", "ratatouille_assets.ingest.generator"),
    "demo": ("generate sample data and materialize every asset for the sample days", "ratatouille_assets.demo"),
    "materialize": ("days through bronze -> silver -> gold in this process (no server needed)", "ratatouille_assets.materialize"),
    "backfill": ("backfill days through every layer on the running webserver (like the UI)", "ratatouille_assets.client"),
    "query": ("run SQL over the tables (bronze.x, silver.y, gold.z) in DuckDB; --format csv|json|parquet, --output", _query),
    "sql": ("an interactive SQL shell over the tables (DuckDB)", _sql),
    "schema": ("a table's columns and types", _schema),
    "branch": ("data branches: list | diff NAME | publish NAME (fast-forward main) | drop NAME", _branch),
    "history": ("a table's commits, branches and tags: time, operation, run, window, rows, files", _history),
    "rollback": ("roll a table, or some of its days, back to a snapshot or point in time (a new commit)", _rollback),
    "tables": ("list Iceberg tables with row counts and metadata locations (for iceberg_scan)", _tables),
    "maintain": ("compact, expire snapshots by policy, delete unreferenced and orphan files; report health", _maintain),
    "sweep": ("delete files no snapshot references (killed writes, refused commits); --dry-run", _sweep),
    "validate": ("check that the definitions load: sources, dbt models, Soda files", _validate),
    "example": ("remove | restore: take the example shop out of the project, or bring it back", "ratatouille_assets.project.example"),
    "settings": ("print the resolved settings as RATATOUILLE_* variables (secrets masked)", _settings),
    "serve": ("serve the tables to BI tools over the PostgreSQL protocol, read-only (psql, Superset, Metabase)", _serve),
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help") or argv[0] not in COMMANDS:
        print("usage: rat <command> [options]   (rat <command> --help for its options)\n")
        for name, (help_text, _) in COMMANDS.items():
            print(f"  {name:<12} {help_text}")
        return 0 if not argv or argv[0] in ("-h", "--help", "help") else 2
    command, rest = argv[0], argv[1:]
    target = COMMANDS[command][1]
    if callable(target):
        return target(rest)
    module = __import__(target, fromlist=["main"])
    return module.main(rest)


if __name__ == "__main__":
    raise SystemExit(main())
