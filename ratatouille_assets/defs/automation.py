"""What keeps the lakehouse fresh without clicks: the landing sensor, declarative automation on
silver and gold, the daily schedule, freshness checks on gold, and run-failure alerts."""

import datetime as dt
import hashlib
import json
from collections import defaultdict

import dagster as dg

from ratatouille_assets.defs.alerts import record_failure
from ratatouille_assets.ingest.landing import LandingFile, landing_zone, path_regex
from ratatouille_assets.ingest.sources import Source
from ratatouille_assets.layers import BRONZE
from ratatouille_assets.settings import Settings

LANDING_SENSOR = "landing_files"
TRIGGER_TAG = "ratatouille/trigger"


def changed_partitions(
    files: list[LandingFile], seen: dict[str, str]
) -> dict[tuple[str, str | None], list[LandingFile]]:
    """Files not seen before, or seen with another fingerprint, grouped by (source, day)."""
    changed: dict[tuple[str, str | None], list[LandingFile]] = defaultdict(list)
    for f in files:
        if seen.get(f.path) != f.fingerprint:
            changed[(f.source, f.day)].append(f)
    return dict(changed)


def _digest(files: list[LandingFile]) -> str:
    return hashlib.sha256("".join(f"{f.path}={f.fingerprint};" for f in files).encode()).hexdigest()[:16]


def landing_sensor(
    sources: dict[str, Source],
    partitions_def: dg.TimeWindowPartitionsDefinition,
    settings: Settings,
):
    """One run per (source, day) whose landing files are new or changed, and one per reference
    source whose files were added, changed or removed (it is loaded whole).

    The cursor is the fingerprint of every file present at the last tick, not "the newest key":
    a file dropped today into an old day's folder, or a file re-sent with new content, is seen;
    a file already processed is not, however many ticks pass. Files of days that are no partition
    yet (today) or any more (before ``partitions.start``) stay out of the cursor, so they are
    requested as soon as their day is a partition. On the very first tick, files of partitions
    (and reference sources) that are already materialized (e.g. by ``make demo``) count as processed.
    """
    start = partitions_def.start.date().isoformat()

    @dg.sensor(
        name=LANDING_SENSOR,
        asset_selection=dg.AssetSelection.assets(*[dg.AssetKey([BRONZE, s]) for s in sources]),
        minimum_interval_seconds=settings.sensor_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Requests a bronze run for each (source, day) whose landing files are new or changed, "
                    "and for each reference source whose files changed.",
    )
    def _landing(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        zone = landing_zone(settings.landing, settings)
        files = [f for source in sources.values() for f in zone.files(source)]
        first_tick = context.cursor is None
        seen = json.loads(context.cursor) if context.cursor else {}
        valid = set(partitions_def.get_partition_keys(dynamic_partitions_store=None))
        requests, early, pending = [], set(), set()
        for (source, day), new in sorted(changed_partitions(files, seen).items(), key=lambda item: (item[0][0], item[0][1] or "")):
            if day is None:
                continue  # reference sources: below, with their removed files
            key = dg.AssetKey([BRONZE, source])
            if day not in valid:
                (early if day < start else pending).add(f"{source}/{day}")
                continue
            if first_tick and day in context.instance.get_materialized_partitions(key):
                continue
            requests.append(dg.RunRequest(
                run_key=f"{source}:{day}:{_digest(new)}",
                asset_selection=[key],
                partition_key=day,
                tags={TRIGGER_TAG: "landing", "ratatouille/files": str(len(new))},
            ))
        for source in (s for s in sources.values() if s.is_reference):
            key = dg.AssetKey([BRONZE, source.name])
            now = [f for f in files if f.source == source.name]
            mine = path_regex(source)
            before = {p: fp for p, fp in seen.items() if mine.match(p)}
            if {f.path: f.fingerprint for f in now} == before:
                continue
            if first_tick and context.instance.get_latest_materialization_event(key) is not None:
                continue
            requests.append(dg.RunRequest(
                run_key=f"{source.name}:{_digest(now)}",
                asset_selection=[key],
                tags={TRIGGER_TAG: "landing", "ratatouille/files": str(len(now))},
            ))
        if early:
            first = min(e.split("/", 1)[1] for e in early)
            context.log.warning(
                f"landing folders before the first partition ({start}, partitions.start in "
                f"{settings.sources_file}): {sorted(early)}. To load them, set partitions.start: {first} there "
                "and reload the code location; they are requested on the next tick."
            )
        if pending:
            context.log.info(f"landing folders of days that are not partitions yet (they are once the day ends): {sorted(pending)}")
        cursor = {f.path: f.fingerprint for f in files if f.day is None or f.day in valid}
        return dg.SensorResult(run_requests=requests, cursor=json.dumps(cursor))

    return _landing


def propagate(lookback_days: int, ignore: dg.AssetSelection | None = None) -> dg.AutomationCondition:
    """Materialize when upstream partitions were updated and their blocking checks passed.

    Like ``eager()`` but with a lookback, so a late file for an old day recomputes that day's
    silver and gold (``eager()`` only looks at the latest partition), and without the "missing
    upstream" guard: a silver day also reads the next landing day (late records), which may not
    exist yet and must not hold the day back. Updates of ``ignore`` (for daily models: the
    dimensions, which they depend on only for their checks) do not trigger a recomputation.
    """
    updated = dg.AutomationCondition.any_deps_updated()
    if ignore is not None:
        updated = updated.ignore(ignore)
    return (
        dg.AutomationCondition.in_latest_time_window(dt.timedelta(days=lookback_days))
        & updated.since_last_handled()
        & ~dg.AutomationCondition.any_deps_in_progress()
        & ~dg.AutomationCondition.in_progress()
        & dg.AutomationCondition.all_deps_blocking_checks_passed()
    ).with_label(f"upstream updated and checked (last {lookback_days} days)")


def automation_sensor(settings: Settings) -> dg.AutomationConditionSensorDefinition:
    return dg.AutomationConditionSensorDefinition(
        "propagate_silver_gold",
        target=dg.AssetSelection.groups("silver", "gold"),
        default_status=dg.DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=settings.sensor_interval_seconds,
        description="Recomputes silver and gold partitions whose upstream changed.",
    )


def daily_schedule(job, settings: Settings):
    """The latest complete day through the whole graph, at ``schedule_hour`` in the partitions' timezone."""
    return dg.build_schedule_from_partitioned_job(
        job,
        name="daily_all_layers",
        hour_of_day=settings.schedule_hour,
        minute_of_hour=0,
        default_status=dg.DefaultScheduleStatus.RUNNING if settings.schedule_enabled else dg.DefaultScheduleStatus.STOPPED,
        description="Yesterday's partition: bronze -> silver -> gold (a safety net behind the landing sensor).",
    )


def gold_freshness(settings: Settings, keys: list[dg.AssetKey]):
    """Each gold day must be materialized within ``freshness_hours`` after it ends (no checks, no
    sensor, when no gold model reads a source that declares freshness)."""
    if not keys:
        return [], None
    checks = dg.build_time_partition_freshness_checks(
        assets=keys,
        deadline_cron=f"0 {settings.freshness_hours} * * *",
        timezone=settings.timezone,
        severity=dg.AssetCheckSeverity.WARN,
    )
    sensor = dg.build_sensor_for_freshness_checks(
        freshness_checks=checks, name="gold_freshness", default_status=dg.DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=max(60, settings.sensor_interval_seconds),
    )
    return list(checks), sensor


def failure_sensor(settings: Settings):
    @dg.run_failure_sensor(
        name="run_failure_alerts",
        default_status=dg.DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=settings.sensor_interval_seconds,
        description="Records every failed run and posts it to RATATOUILLE_ALERT_WEBHOOK_URL if set.",
    )
    def _alert(context: dg.RunFailureSensorContext) -> None:
        run = context.dagster_run
        outcome = record_failure(
            settings,
            run_id=run.run_id,
            job=run.job_name,
            partition=run.tags.get("dagster/partition")
            or "..".join(filter(None, [run.tags.get("dagster/asset_partition_range_start"),
                                       run.tags.get("dagster/asset_partition_range_end")])) or None,
            message=context.failure_event.message or "",
            steps=[e.step_key for e in context.get_step_failure_events() if e.step_key],
        )
        context.log.info(outcome)

    return _alert
