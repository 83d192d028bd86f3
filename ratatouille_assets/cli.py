"""``rat``: the command line. ``rat generate``, ``rat demo``, ``rat tables``, ``rat settings``."""

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


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = {
        "generate": ("write deterministic, dirty sample data to the landing zone", "ratatouille_assets.ingest.generator"),
        "demo": ("generate sample data and materialize every asset for the sample days", "ratatouille_assets.demo"),
        "backfill": ("backfill days through every layer on the running webserver (like the UI)", "ratatouille_assets.client"),
        "tables": ("list Iceberg tables with row counts and metadata locations (for iceberg_scan)", None),
        "settings": ("print the resolved settings as RATATOUILLE_* variables (secrets masked)", None),
    }
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in commands:
        print("usage: rat <command> [options]\n")
        for name, (help_text, _) in commands.items():
            print(f"  {name:<10} {help_text}")
        return 0 if not argv or argv[0] in ("-h", "--help") else 2
    command, rest = argv[0], argv[1:]
    if command == "tables":
        return _tables(rest)
    if command == "settings":
        return _settings(rest)
    module = __import__(commands[command][1], fromlist=["main"])
    return module.main(rest)


if __name__ == "__main__":
    raise SystemExit(main())
