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
