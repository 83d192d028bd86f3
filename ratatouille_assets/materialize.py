"""``rat materialize``: days through bronze -> silver -> gold in this process, no server needed.

The same runs a backfill makes, recorded in DAGSTER_HOME (``make dev`` shows them): reference
sources once, partitioned bronze in one run over the whole range (one commit per table; or in
batches of ``RATATOUILLE_BRONZE_PARTITIONS_PER_RUN`` days if that is set; each day its own
partition, with its own row counts), then silver and gold in one run over the whole range (one
dbt invocation, as the dbt assets' single-run backfill policy does).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import time

import dagster as dg
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from ratatouille_assets.definitions import build_definitions
from ratatouille_assets.ingest.sources import load_sources_file
from ratatouille_assets.layers import BRONZE, MODEL_LAYERS
from ratatouille_assets.settings import get_settings


class PartitionRangeError(ValueError):
    """Days outside the daily partitions; the message names the setting to change."""


@dataclasses.dataclass
class RunReport:
    days: list[str]
    runs: list[str]
    checks_passed: int
    checks_failed: int
    checks_warned: int
    seconds: dict[str, float]
    success: bool = True


def check_days(days: list[str], start: str, sources_file: str = "sources.yml") -> None:
    """Refuse days before the first partition or after the last complete one, saying what to change."""
    if not days:
        return
    if days[0] < start:
        raise PartitionRangeError(
            f"{days[0]} is before the first daily partition, {start} (partitions.start in {sources_file}). "
            f"Set partitions.start: {days[0]} there (reload the code location if `make dev` runs), then run again."
        )
    yesterday = (dt.date.today() - dt.timedelta(days=1)).isoformat()
    if days[-1] > yesterday:
        raise PartitionRangeError(
            f"{days[-1]} is not a partition yet: the last one is yesterday, {yesterday} (a day is a partition once it ends)."
        )


def day_range(start: str, end: str) -> list[str]:
    first, last = dt.date.fromisoformat(start), dt.date.fromisoformat(end)
    if last < first:
        raise ValueError(f"--to {end} is before --from {start}")
    return [(first + dt.timedelta(days=i)).isoformat() for i in range((last - first).days + 1)]


def run_pipeline(
    days: list[str],
    instance: dg.DagsterInstance | None = None,
    *,
    layers: tuple[str, ...] = (BRONZE, *MODEL_LAYERS),
    quiet: bool = True,
    raise_on_error: bool = True,
) -> RunReport:
    """Materialize ``layers`` for ``days`` (inclusive, sorted): reference sources once, daily bronze
    in batches, then the dbt layers over the whole window in one run."""
    settings = get_settings()
    check_days(days, load_sources_file(settings.sources_file).start, settings.sources_file.name)
    defs = build_definitions()
    instance = instance or dg.DagsterInstance.get()
    assets = list(defs.assets or [])
    resources = dict(defs.resources or {})
    graph = defs.resolve_asset_graph()
    runs, seconds, evaluations, success = [], {}, [], True
    run_config = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}} if quiet else None

    def run(label: str, keys: list[dg.AssetKey], tags: dict[str, str] | None = None) -> None:
        nonlocal success
        if not keys:
            return
        t0 = time.perf_counter()
        result = dg.materialize(
            assets, selection=keys, instance=instance, resources=resources, tags=tags, run_config=run_config,
            raise_on_error=raise_on_error,
        )
        seconds[label] = seconds.get(label, 0.0) + time.perf_counter() - t0
        success = success and result.success
        print(f"  {label:<12} {tags_label(tags)}  run {result.run_id[:8]}" + ("" if result.success else "  FAILED"), flush=True)
        runs.append(result.run_id)
        evaluations.extend(result.get_asset_check_evaluations())

    def keys_of(layer: str, partitioned: bool) -> list[dg.AssetKey]:
        return sorted(
            (k for k in graph.get_all_asset_keys()
             if graph.get(k).group_name == layer and graph.get(k).is_materializable
             and (graph.get(k).partitions_def is not None) == partitioned),
            key=lambda k: k.to_user_string(),
        )

    if BRONZE in layers:
        run("bronze", keys_of(BRONZE, partitioned=False))
        batch = settings.bronze_partitions_per_run if settings.bronze_partitions_per_run > 0 else max(1, len(days))
        for i in range(0, len(days), batch):
            chunk = days[i:i + batch]
            run("bronze", keys_of(BRONZE, partitioned=True), _range(chunk[0], chunk[-1]))
    models = [layer for layer in layers if layer in MODEL_LAYERS]
    if models:
        daily = [k for layer in models for k in keys_of(layer, partitioned=True)] if days else []
        whole = [k for layer in models for k in keys_of(layer, partitioned=False)]
        label = "+".join(models)
        if daily:
            run(label, whole + daily, _range(days[0], days[-1]))
        else:
            run(label, whole)
    return RunReport(
        days=days,
        runs=runs,
        checks_passed=sum(1 for e in evaluations if e.passed),
        checks_failed=sum(1 for e in evaluations if not e.passed and e.severity == dg.AssetCheckSeverity.ERROR),
        checks_warned=sum(1 for e in evaluations if not e.passed and e.severity == dg.AssetCheckSeverity.WARN),
        seconds=seconds,
        success=success,
    )


def _range(start: str, end: str) -> dict[str, str]:
    return {ASSET_PARTITION_RANGE_START_TAG: start, ASSET_PARTITION_RANGE_END_TAG: end}


def tags_label(tags: dict[str, str] | None) -> str:
    if not tags:
        return "(whole)"
    start, end = tags[ASSET_PARTITION_RANGE_START_TAG], tags[ASSET_PARTITION_RANGE_END_TAG]
    return start if start == end else f"{start}..{end}"


def main(argv: list[str] | None = None) -> int:
    import argparse

    from ratatouille_assets.demo import ensure_dagster_home, summary

    parser = argparse.ArgumentParser(
        prog="rat materialize", description="days through bronze -> silver -> gold, in this process (no server)"
    )
    parser.add_argument("--from", dest="start", help="first day, YYYY-MM-DD (partitioned assets)")
    parser.add_argument("--to", dest="end", help="last day, YYYY-MM-DD, inclusive (default: --from)")
    parser.add_argument("--layers", default=",".join((BRONZE, *MODEL_LAYERS)), help="comma-separated (default: all)")
    args = parser.parse_args(argv)
    settings = get_settings()
    ensure_dagster_home(settings)
    days = day_range(args.start, args.end or args.start) if args.start else []
    try:
        report = run_pipeline(days, layers=tuple(args.layers.split(",")), raise_on_error=False)
    except PartitionRangeError as exc:
        print(f"error: {exc}")
        return 2
    print(summary(settings, report))
    return 0 if report.success and report.checks_failed == 0 else 1
