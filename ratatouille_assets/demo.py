"""``make demo``: sample data -> bronze -> silver -> gold, recorded in the Dagster instance.

Bronze runs one Dagster run per day (how the landing sensor and backfills run it); silver and
gold run once over the whole sample window (the dbt assets' single-run backfill policy), so dbt
starts twice, not once per day. Everything is recorded in DAGSTER_HOME, so ``make dev`` shows it.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import time
from pathlib import Path

import dagster as dg
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from ratatouille_assets.definitions import build_definitions
from ratatouille_assets.ingest.generator import SampleSpec, generate
from ratatouille_assets.lakehouse.catalog import load_catalog
from ratatouille_assets.lakehouse.dbt_plugin import REJECTED_ROWS_PROPERTY, REJECTED_SUFFIX
from ratatouille_assets.lakehouse.tables import describe, list_tables
from ratatouille_assets.settings import Settings, get_settings

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


@dataclasses.dataclass
class DemoReport:
    days: list[str]
    runs: list[str]
    checks_passed: int
    checks_failed: int
    checks_warned: int
    seconds: dict[str, float]


def run_pipeline(days: list[str], instance: dg.DagsterInstance | None = None) -> DemoReport:
    """Materialize every asset for ``days``: bronze per day, then silver and gold over the window."""
    defs = build_definitions()
    instance = instance or dg.DagsterInstance.get()
    assets = list(defs.assets or [])
    resources = dict(defs.resources or {})
    runs, seconds, evaluations = [], {}, []
    quiet = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}

    t0 = time.perf_counter()
    for day in days:
        result = dg.materialize(
            assets, selection=dg.AssetSelection.groups("bronze"), partition_key=day, instance=instance, resources=resources,
            run_config=quiet,
        )
        print(f"  bronze   {day}  run {result.run_id[:8]}", flush=True)
        runs.append(result.run_id)
        evaluations += result.get_asset_check_evaluations()
    seconds["bronze"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    result = dg.materialize(
        assets,
        selection=dg.AssetSelection.groups("silver", "gold"),
        instance=instance,
        resources=resources,
        tags={ASSET_PARTITION_RANGE_START_TAG: days[0], ASSET_PARTITION_RANGE_END_TAG: days[-1]},
        run_config=quiet,
    )
    print(f"  silver+gold {days[0]}..{days[-1]}  run {result.run_id[:8]}", flush=True)
    runs.append(result.run_id)
    seconds["silver+gold"] = time.perf_counter() - t0
    evaluations += result.get_asset_check_evaluations()
    return DemoReport(
        days=days,
        runs=runs,
        checks_passed=sum(1 for e in evaluations if e.passed),
        checks_failed=sum(1 for e in evaluations if not e.passed and e.severity == dg.AssetCheckSeverity.ERROR),
        checks_warned=sum(1 for e in evaluations if not e.passed and e.severity == dg.AssetCheckSeverity.WARN),
        seconds=seconds,
    )


def summary(settings: Settings, report: DemoReport | None = None) -> str:
    catalog = load_catalog(settings)
    lines = ["", "Tables (rows):"]
    for layer in ("bronze", "silver", "gold"):
        names = [t for t in list_tables(catalog) if t.startswith(layer + ".") and not t.endswith(REJECTED_SUFFIX)]
        cells = []
        for name in names:
            info = describe(catalog, name)
            rejected = info.properties.get(REJECTED_ROWS_PROPERTY)
            cells.append(f"{name.split('.', 1)[1]} {info.total_rows:,}" + (f" ({rejected} rejected)" if rejected and rejected != "0" else ""))
        lines.append(f"  {layer:<7} " + ", ".join(cells))
    if report:
        lines += [
            "",
            f"Days: {report.days[0]} .. {report.days[-1]} ({len(report.days)}), {len(report.runs)} Dagster runs; "
            + ", ".join(f"{k} {v:.1f}s" for k, v in report.seconds.items()),
            f"Asset checks (Soda + dbt tests): {report.checks_passed} passed, {report.checks_failed} failed"
            + (f", {report.checks_warned} warned" if report.checks_warned else ""),
        ]
    gold = describe(catalog, "gold.kpi_daily_sales") if "gold.kpi_daily_sales" in list_tables(catalog) else None
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
        lines.append(f"  duckdb: SELECT * FROM iceberg_scan('{gold.metadata_location}')")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="rat demo", description="generate sample data and run the whole graph")
    parser.add_argument("--days", type=int, default=SampleSpec.days)
    parser.add_argument("--rows-per-day", type=int, default=SampleSpec.rows_per_day)
    args = parser.parse_args(argv)

    settings = get_settings()
    ensure_dagster_home(settings)
    spec = SampleSpec(days=args.days, rows_per_day=args.rows_per_day)
    t0 = time.perf_counter()
    generate(spec, settings.landing)
    print(f"sample data: {spec.days} days x ~{spec.rows_per_day:,} order lines/day in {time.perf_counter() - t0:.1f}s")
    days = [spec.day(i).isoformat() for i in range(spec.days)]
    report = run_pipeline(days)
    print(summary(settings, report))
    return 0 if report.checks_failed == 0 else 1
