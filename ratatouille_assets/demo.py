"""``make demo``: the example shop's sample data -> bronze -> silver -> gold, recorded in the
Dagster instance (DAGSTER_HOME), so ``make dev`` shows it. The runs are ``rat materialize``'s:
bronze in batches of days, silver and gold once over the whole sample window.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from ratatouille_assets.ingest.generator import SampleSpec, generate
from ratatouille_assets.ingest.sources import load_sources_file
from ratatouille_assets.lakehouse.catalog import load_catalog
from ratatouille_assets.lakehouse.dbt_plugin import REJECTED_SUFFIX
from ratatouille_assets.lakehouse.tables import describe, list_tables
from ratatouille_assets.layers import LAYERS
from ratatouille_assets.materialize import RunReport, run_pipeline
from ratatouille_assets.settings import Settings, get_settings

__all__ = ["PROJECT_ROOT", "ensure_dagster_home", "main", "run_pipeline", "summary"]
EXAMPLE_SOURCES = ("orders", "order_items", "customers", "products", "fx_rates")

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def ensure_dagster_home(settings: Settings) -> Path:
    """DAGSTER_HOME with the project's dagster.yaml in it (created on first use, kept up to date).

    An instance file that is not a copy of ours (the server stack's Postgres instance, a mounted
    ConfigMap) is left alone: ``rat demo`` in a container must not switch it to SQLite.
    """
    home = Path(os.environ.setdefault("DAGSTER_HOME", str(settings.dagster_home)))
    home.mkdir(parents=True, exist_ok=True)
    source = PROJECT_ROOT / "dagster.yaml"
    target = home / "dagster.yaml"
    if not source.exists():
        return home
    ours = source.read_bytes()
    if not target.exists() or (target.read_bytes() != ours and _is_embedded_copy(target.read_bytes(), ours)):
        shutil.copyfile(source, target)
    return home


def _is_embedded_copy(existing: bytes, ours: bytes) -> bool:
    """An earlier copy of the project's dagster.yaml starts with the same header line."""
    return existing.split(b"\n", 1)[0] == ours.split(b"\n", 1)[0]


def summary(settings: Settings, report: RunReport | None = None) -> str:
    catalog = load_catalog(settings)
    tables = list_tables(catalog)
    lines = ["", "Tables (rows):"]
    for layer in LAYERS:
        cells = []
        for name in (t for t in tables if t.startswith(layer + ".") and not t.endswith(REJECTED_SUFFIX)):
            info = describe(catalog, name)
            rejected = describe(catalog, name + REJECTED_SUFFIX).total_rows if name + REJECTED_SUFFIX in tables else 0
            cells.append(f"{name.split('.', 1)[1]} {info.total_rows:,}" + (f" ({rejected:,} rejected)" if rejected else ""))
        lines.append(f"  {layer:<7} " + (", ".join(cells) or "-"))
    if report:
        span = f"{report.days[0]} .. {report.days[-1]} ({len(report.days)})" if report.days else "no days"
        lines += [
            "",
            f"Days: {span}, {len(report.runs)} Dagster runs; " + ", ".join(f"{k} {v:.1f}s" for k, v in report.seconds.items()),
            f"Asset checks (Soda + dbt tests): {report.checks_passed} passed, {report.checks_failed} failed"
            + (f", {report.checks_warned} warned" if report.checks_warned else ""),
        ]
    gold = next((t for t in tables if t.startswith("gold.") and not t.endswith(REJECTED_SUFFIX)), None)
    lines += [
        "",
        "Where the data lives:",
        f"  landing    {settings.landing}",
        f"  warehouse  {settings.warehouse}",
        f"  catalog    {settings.catalog_uri}",
        f"  dagster    {os.environ.get('DAGSTER_HOME', settings.dagster_home)}",
        "",
        "Next:",
        "  make dev                      # Dagster UI on http://127.0.0.1:3000 with these runs",
    ]
    if gold:
        lines.append(f'  .venv/bin/rat query "SELECT * FROM {gold} LIMIT 10"')
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="rat demo", description="generate sample data and run the whole graph")
    parser.add_argument("--days", type=int, default=SampleSpec.days)
    parser.add_argument("--rows-per-day", type=int, default=SampleSpec.rows_per_day)
    args = parser.parse_args(argv)

    settings = get_settings()
    missing = [s for s in EXAMPLE_SOURCES if s not in load_sources_file(settings.sources_file).sources]
    if missing:
        print(f"The example shop is not in {settings.sources_file} (no source {', '.join(missing)}): "
              "`rat example restore` brings it back. Your own data: docs/your-own-data.md.")
        return 2
    ensure_dagster_home(settings)
    spec = SampleSpec(days=args.days, rows_per_day=args.rows_per_day)
    t0 = time.perf_counter()
    generate(spec, settings.landing)
    print(f"sample data: {spec.days} days x ~{spec.rows_per_day:,} order lines/day in {time.perf_counter() - t0:.1f}s")
    days = [spec.day(i).isoformat() for i in range(spec.days)]
    report = run_pipeline(days)
    print(summary(settings, report))
    return 0 if report.checks_failed == 0 else 1
