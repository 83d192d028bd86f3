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

    import duckdb

    from ratatouille_assets.lakehouse import duck
    from ratatouille_assets.lakehouse.catalog import load_catalog

    parser = argparse.ArgumentParser(prog="rat query", description=_query.__doc__)
    parser.add_argument("sql", help='e.g. "SELECT * FROM gold.kpi_daily_sales LIMIT 10"')
    parser.add_argument("--csv", action="store_true", help="print CSV (header + rows) instead of a table")
    parser.add_argument("--max-rows", type=int, default=100, help="rows shown as a table (default 100)")
    args = parser.parse_args(argv)
    conn = duck.connect()
    duck.register_iceberg_views(conn, load_catalog())
    try:
        relation = conn.sql(args.sql)
        if relation is None:
            return 0
        if args.csv:
            import csv

            writer = csv.writer(sys.stdout, lineterminator="\n")
            writer.writerow(relation.columns)
            writer.writerows(relation.fetchall())
        else:
            relation.show(max_rows=args.max_rows, max_width=200)
    except duckdb.Error as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def _sweep(argv: list[str]) -> int:
    """Delete the files no snapshot references (killed writers, refused commits, expired snapshots)."""
    import argparse
    import datetime as dt
    import re

    from ratatouille_assets.lakehouse.catalog import load_catalog
    from ratatouille_assets.lakehouse.maintenance import DEFAULT_OLDER_THAN, SweepRefusedError, sweep
    from ratatouille_assets.lakehouse.tables import list_tables

    def age(text: str) -> dt.timedelta:
        match = re.fullmatch(r"(\d+)([smhd])", text.strip())
        if not match:
            raise argparse.ArgumentTypeError(f"{text!r}: give a number and a unit, e.g. 30m, 6h, 2d (0s: no margin)")
        return dt.timedelta(seconds=int(match[1]) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[match[2]])

    parser = argparse.ArgumentParser(prog="rat sweep", description=_sweep.__doc__)
    parser.add_argument("tables", nargs="*", help="e.g. bronze.orders (default: every table)")
    parser.add_argument("--older-than", type=age, default=DEFAULT_OLDER_THAN, metavar="AGE",
                        help="only files older than this (default 1d): younger ones may belong to a write "
                             "that has not committed yet. 0s only when nothing writes.")
    parser.add_argument("--dry-run", action="store_true", help="list what would be deleted, delete nothing")
    args = parser.parse_args(argv)
    catalog = load_catalog()
    names = args.tables or list_tables(catalog)
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


def _validate(argv: list[str]) -> int:
    """The definitions load (sources, dbt model contract, Soda files): Dagster's own validation."""
    import os
    from pathlib import Path

    from ratatouille_assets.demo import ensure_dagster_home
    from ratatouille_assets.settings import get_settings, project_root

    ensure_dagster_home(get_settings())  # a new RATATOUILLE_HOME has no DAGSTER_HOME yet
    dagster = Path(sys.executable).parent / "dagster"
    os.execv(str(dagster), [str(dagster), "definitions", "validate", "-w", str(project_root() / "workspace.yaml"), *argv])


COMMANDS = {
    "generate": ("write deterministic, dirty sample data (the example shop) to the landing zone", "ratatouille_assets.ingest.generator"),
    "demo": ("generate sample data and materialize every asset for the sample days", "ratatouille_assets.demo"),
    "materialize": ("days through bronze -> silver -> gold in this process (no server needed)", "ratatouille_assets.materialize"),
    "backfill": ("backfill days through every layer on the running webserver (like the UI)", "ratatouille_assets.client"),
    "query": ("run SQL over the tables (bronze.x, silver.y, gold.z) in DuckDB", _query),
    "tables": ("list Iceberg tables with row counts and metadata locations (for iceberg_scan)", _tables),
    "sweep": ("delete files no snapshot references (killed writes, expired snapshots); --dry-run", _sweep),
    "validate": ("check that the definitions load: sources, dbt models, Soda files", _validate),
    "example": ("remove | restore: take the example shop out of the project, or bring it back", "ratatouille_assets.project.example"),
    "settings": ("print the resolved settings as RATATOUILLE_* variables (secrets masked)", _settings),
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
