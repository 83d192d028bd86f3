"""What keeps the lakehouse fresh without clicks: the landing sensor, declarative automation on
silver and gold, the daily schedule, freshness checks on gold, and run-failure alerts."""

import base64
import dataclasses
import datetime as dt
import hashlib
import json
import zlib
from collections import defaultdict
from collections.abc import Iterable
from zoneinfo import ZoneInfo

import dagster as dg

from ratatouille_assets.defs.alerts import record_failure
from ratatouille_assets.ingest.landing import LandingFile, landing_zone, path_regex, unread_files
from ratatouille_assets.ingest.sources import Source
from ratatouille_assets.layers import BRONZE
from ratatouille_assets.settings import Settings

LANDING_SENSOR = "landing_files"
TRIGGER_TAG = "ratatouille/trigger"
# The tags of a run over a partition range (what RunRequest.partition_key_range reads): Dagster
# 1.13's RunRequest takes no range argument.
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"
PARTITION_TAG = "dagster/partition"
CURSOR_VERSION = "v2:"
IN_PROGRESS = [
    dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED,
]


def state(files: Iterable[LandingFile]) -> str:
    """What the cursor keeps of a day (or a reference source): a digest of its sorted
    ``path=fingerprint;`` pairs and the file count, which tells a removal from a re-send."""
    pairs = sorted(f"{f.path}={f.fingerprint};" for f in files)
    return f"{hashlib.sha256(''.join(pairs).encode()).hexdigest()[:12]}:{len(pairs)}"


def _count(value: str | None) -> int:
    return int(value.rsplit(":", 1)[1]) if value else 0


@dataclasses.dataclass
class LandingCursor:
    """The landing zone as of the last tick: per partitioned source ``{day: state}``, per
    reference source one state. Its size grows with days, not files. ``generation`` counts the
    ticks that requested runs; it is part of every run key (see ``run_key_digest``)."""

    days: dict[str, dict[str, str]] = dataclasses.field(default_factory=dict)
    whole: dict[str, str] = dataclasses.field(default_factory=dict)
    generation: int = 0
    # Per source, a digest of the unread files last reported by the landing check.
    reported: dict[str, str] = dataclasses.field(default_factory=dict)

    def encode(self) -> str:
        raw = json.dumps({"days": self.days, "whole": self.whole, "generation": self.generation,
                          "reported": self.reported}, separators=(",", ":"), sort_keys=True)
        return CURSOR_VERSION + base64.b64encode(zlib.compress(raw.encode(), 9)).decode()

    @classmethod
    def decode(cls, cursor: str | None, sources: dict[str, Source]) -> "LandingCursor":
        """Also reads the first format, ``{path: fingerprint}`` of every file, by computing the same
        states from it: an upgrade does not take the whole landing zone for new."""
        if not cursor:
            return cls()
        if cursor.startswith(CURSOR_VERSION):
            data = json.loads(zlib.decompress(base64.b64decode(cursor[len(CURSOR_VERSION):])))
            return cls(days=data["days"], whole=data["whole"], generation=data["generation"],
                       reported=data.get("reported", {}))
        return cls.from_files(_legacy_files(json.loads(cursor), sources))

    @classmethod
    def from_files(cls, files: Iterable[LandingFile]) -> "LandingCursor":
        days: dict[str, dict[str, list[LandingFile]]] = defaultdict(lambda: defaultdict(list))
        whole: dict[str, list[LandingFile]] = defaultdict(list)
        for f in files:
            (whole[f.source] if f.day is None else days[f.source][f.day]).append(f)
        return cls(
            days={s: {d: state(fs) for d, fs in by_day.items()} for s, by_day in days.items()},
            whole={s: state(fs) for s, fs in whole.items()},
        )


def _legacy_files(seen: dict[str, str], sources: dict[str, Source]) -> list[LandingFile]:
    """The files of a first-format cursor, each given to the source whose path pattern it matches."""
    patterns = [(s.name, path_regex(s)) for s in sources.values()]
    files = []
    for path, fingerprint in seen.items():
        for name, regex in patterns:
            match = regex.match(path)
            if match is not None:
                files.append(LandingFile(name, match.groupdict().get("day"), path, fingerprint, 0.0))
                break
    return files


def consecutive(days: list[str], index: dict[str, int], most: int = 0) -> list[list[str]]:
    """``days`` (sorted partition keys) cut into maximal runs of adjacent partitions, each of at
    most ``most`` days if that is set (RATATOUILLE_BRONZE_PARTITIONS_PER_RUN, as backfills batch)."""
    groups: list[list[str]] = []
    for day in days:
        if groups and index[day] == index[groups[-1][-1]] + 1 and not (most and len(groups[-1]) >= most):
            groups[-1].append(day)
        else:
            groups.append([day])
    return groups


def in_progress(instance: dg.DagsterInstance) -> dict[dg.AssetKey, list[tuple[str, str] | None]]:
    """Per asset, the partition spans of its queued or running runs (None: a run without a
    partition, i.e. the whole asset). One query for the whole instance."""
    spans: dict[dg.AssetKey, list[tuple[str, str] | None]] = defaultdict(list)
    for record in instance.get_run_records(dg.RunsFilter(statuses=IN_PROGRESS)):
        run = record.dagster_run
        tags = run.tags
        if PARTITION_TAG in tags:
            span = (tags[PARTITION_TAG], tags[PARTITION_TAG])
        elif RANGE_START_TAG in tags and RANGE_END_TAG in tags:
            span = (tags[RANGE_START_TAG], tags[RANGE_END_TAG])
        else:
            span = None
        for key in run.asset_selection or ():
            spans[key].append(span)
    return spans


def covered(day: str | None, spans: list[tuple[str, str] | None]) -> bool:
    """Whether a queued or running run loads ``day`` (None: the unpartitioned asset)."""
    if day is None:
        return None in spans
    return any(span is not None and span[0] <= day <= span[1] for span in spans)


def loaded_after(instance: dg.DagsterInstance, key: dg.AssetKey, newest: dict[str | None, float]) -> set[str | None]:
    """The partitions (None: the unpartitioned asset) of ``newest`` whose latest materialization
    comes from a run that started after their newest file was written: that run read them as they
    are. Two bulk queries (materializations are paged newest first, usually one page)."""
    if not newest:
        return set()
    partitions = sorted(p for p in newest if p is not None)
    records_filter = dg.AssetRecordsFilter(asset_key=key, asset_partitions=partitions or None)
    latest: dict[str | None, str] = {}
    cursor = None
    while True:
        page = instance.fetch_materializations(records_filter, limit=max(len(newest), 100), cursor=cursor)
        for record in page.records:
            latest.setdefault(record.partition_key, record.run_id)
        if not page.has_more or len(latest) >= len(newest):
            break
        cursor = page.cursor
    if not latest:
        return set()
    started = {r.dagster_run.run_id: r.start_time
               for r in instance.get_run_records(dg.RunsFilter(run_ids=sorted(set(latest.values()))))}
    return {p for p, run_id in latest.items()
            if p in newest and started.get(run_id) is not None and started[run_id] > newest[p]}


@dataclasses.dataclass
class Judged:
    """The changed days of one source sorted out: to request, already loaded, or being loaded."""

    request: list[str | None]
    loaded: set[str | None]
    deferred: set[str | None]


def judge(
    instance: dg.DagsterInstance,
    key: dg.AssetKey,
    changed: dict[str | None, list[LandingFile]],
    before: dict[str | None, str],
    running: list[tuple[str, str] | None],
) -> Judged:
    """Changed partitions of ``key`` (None: the unpartitioned asset) that a queued or running run
    covers are deferred (the next tick finds them loaded, or changed since). The others are
    requested unless a run that started after their newest file already loaded them (``rat
    materialize``, a backfill) -- except when files were removed: a removal leaves no time behind,
    so no run can be shown to have seen it."""
    deferred = {p for p in changed if covered(p, running)}
    newest = {
        p: max(f.modified for f in files)
        for p, files in changed.items()
        if p not in deferred and files and len(files) >= _count(before.get(p))
    }
    loaded = loaded_after(instance, key, newest)
    request = [p for p in changed if p not in deferred and p not in loaded]
    return Judged(request=request, loaded=loaded, deferred=deferred)


def landing_sensor(
    sources: dict[str, Source],
    partitions_def: dg.TimeWindowPartitionsDefinition,
    settings: Settings,
):
    """One run per source and range of consecutive days whose landing files are new, changed or
    removed, and one per reference source whose files were added, changed or removed (it is loaded whole).

    The cursor is a digest per day (and per reference source) of the files present at the last
    tick, not "the newest key": a file dropped today into an old day's folder, a re-sent or a
    removed file is seen; a day already processed is not, however many ticks pass. Digests keep
    the cursor small however many files land (20,000 files over 2,500 days: well under 1 MB).
    Files of days that are no partition yet (today) or any more (before ``partitions.start``) stay
    out of the cursor, so they are requested as soon as their day is a partition.

    Work done or under way is not asked for again: a changed day whose latest materialization
    comes from a run that started after its newest file (``make demo``, ``rat materialize``, a
    backfill) counts as processed; one a queued or running run covers waits for the next tick.
    """
    start = partitions_def.start.date().isoformat()
    partitioned = [s for s in sources.values() if not s.is_reference]
    references = [s for s in sources.values() if s.is_reference]

    @dg.sensor(
        name=LANDING_SENSOR,
        asset_selection=dg.AssetSelection.assets(*[dg.AssetKey([BRONZE, s]) for s in sources]),
        minimum_interval_seconds=settings.sensor_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Requests a bronze run for each source and range of days whose landing files are new or changed, "
                    "and for each reference source whose files changed.",
    )
    def _landing(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        zone = landing_zone(settings.landing, settings)
        seen = LandingCursor.decode(context.cursor, sources)
        keys = partitions_def.get_partition_keys(dynamic_partitions_store=None)
        tick = _Tick(context.instance, seen, {k: i for i, k in enumerate(keys)}, start, seen.generation + 1,
                     most_days=max(0, settings.bronze_partitions_per_run))
        for source in partitioned:
            tick.daily(source, zone.files(source))
        for source in references:
            tick.whole(source, list(zone.files(source)))
        if tick.early:
            first = min(e.split("/", 1)[1] for e in tick.early)
            context.log.warning(
                f"landing folders before the first partition ({start}, partitions.start in "
                f"{settings.sources_file}): {sorted(tick.early)}. To load them, set partitions.start: {first} there "
                "and reload the code location; they are requested on the next tick."
            )
        if tick.pending:
            context.log.info(f"landing folders of days that are not partitions yet (they are once the day ends): {sorted(tick.pending)}")
        if tick.emptied:
            context.log.info(
                f"landing folders emptied since the last tick: {sorted(tick.emptied)}. Their bronze partitions are kept "
                "(a landing zone that drops old files must not empty bronze); materialize a day to empty it."
            )
        tick.after.generation = tick.generation if tick.requests else seen.generation
        # The landing check: a new evaluation only when what is left unread changed.
        events = []
        report = unread_files(zone, sources, start, _today(settings))
        for name, unread in report.items():
            digest = hashlib.sha256(json.dumps([[u.path, u.why] for u in unread]).encode()).hexdigest()[:12]
            tick.after.reported[name] = digest
            if seen.reported.get(name) != digest:
                events.append(landing_check_evaluation(name, unread))
        return dg.SensorResult(run_requests=tick.requests, cursor=tick.after.encode(), asset_events=events)

    return _landing


LANDING_CHECK = "landing_files_read"
# The check's metadata lists at most this many unread files (the count is always whole).
UNREAD_LISTED = 25


def landing_check_evaluation(source: str, unread: list) -> dg.AssetCheckEvaluation:
    """The landing check's result for ``source``: passed when every file in its folder is read."""
    listed = "\n".join(f"- `{u.path}`: {u.why}" for u in unread[:UNREAD_LISTED])
    if len(unread) > UNREAD_LISTED:
        listed += f"\n- ... and {len(unread) - UNREAD_LISTED} more"
    return dg.AssetCheckEvaluation(
        asset_key=dg.AssetKey([BRONZE, source]), check_name=LANDING_CHECK, passed=not unread,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"unread_files": len(unread), **({"files": dg.MetadataValue.md(listed)} if unread else {})},
        description=None if not unread else f"{len(unread)} file(s) in the landing folder of '{source}' are not read",
    )


def landing_checks(sources: dict[str, Source], start: str, settings: Settings) -> list[dg.AssetChecksDefinition]:
    """Per source, a warn check that every file in its landing folder is read: evaluated by the
    landing sensor whenever that changes, and runnable on its own from the UI."""
    def build(name: str) -> dg.AssetChecksDefinition:
        @dg.asset_check(
            asset=dg.AssetKey([BRONZE, name]), name=LANDING_CHECK, blocking=False,
            description="Every file in the source's landing folder is read: none with a name its path does not match, "
                        "none in a folder that is no day, in the future or before partitions.start.",
        )
        def _check() -> dg.AssetCheckResult:
            zone = landing_zone(settings.landing, settings)
            unread = unread_files(zone, sources, start, _today(settings), only=name)[name]
            evaluation = landing_check_evaluation(name, unread)
            return dg.AssetCheckResult(passed=evaluation.passed, severity=evaluation.severity,
                                       metadata=evaluation.metadata, description=evaluation.description)
        return _check

    return [build(name) for name in sources]


@dataclasses.dataclass
class _Tick:
    """One evaluation of the landing sensor: the cursor it started from, the one it builds, and
    the runs it requests."""

    instance: dg.DagsterInstance
    seen: LandingCursor
    index: dict[str, int]  # partition key -> position, for adjacency
    start: str
    generation: int
    most_days: int = 0  # days per run at most (0: no limit)
    after: LandingCursor = dataclasses.field(default_factory=LandingCursor)
    requests: list[dg.RunRequest] = dataclasses.field(default_factory=list)
    early: set[str] = dataclasses.field(default_factory=set)
    pending: set[str] = dataclasses.field(default_factory=set)
    emptied: set[str] = dataclasses.field(default_factory=set)
    _running: dict[dg.AssetKey, list[tuple[str, str] | None]] | None = None

    def running(self, key: dg.AssetKey) -> list[tuple[str, str] | None]:
        if self._running is None:  # one query per tick, and none when nothing changed
            self._running = in_progress(self.instance)
        return self._running.get(key, [])

    def daily(self, source: Source, listing: Iterable[LandingFile]) -> None:
        """A partitioned source: its changed days, one run per range of adjacent ones to request."""
        key = dg.AssetKey([BRONZE, source.name])
        by_day: dict[str, list[LandingFile]] = defaultdict(list)
        for f in listing:
            by_day[f.day].append(f)
        before = self.seen.days.get(source.name, {})
        now: dict[str, str] = {}
        for day, files in by_day.items():
            if day in self.index:
                now[day] = state(files)
            elif _is_date(day):  # a folder that is no date is the landing check's to report
                (self.early if day < self.start else self.pending).add(f"{source.name}/{day}")
        self.emptied |= {f"{source.name}/{d}" for d in before if d in self.index and d not in now}
        changed = {d: by_day[d] for d in sorted(now) if before.get(d) != now[d]}
        if changed:
            judged = judge(self.instance, key, changed, before, self.running(key))
            for day in judged.deferred:  # judged again on the next tick
                if day in before:
                    now[day] = before[day]
                else:
                    del now[day]
            for days in consecutive(judged.request, self.index, self.most_days):
                self.requests.append(_range_request(source.name, key, days, now, by_day, self.generation))
        if now:
            self.after.days[source.name] = now

    def whole(self, source: Source, files: list[LandingFile]) -> None:
        """A reference source: one run for the whole table when any of its files changed."""
        key = dg.AssetKey([BRONZE, source.name])
        before, now = self.seen.whole.get(source.name), state(files) if files else None
        if now != before:
            judged = judge(self.instance, key, {None: files}, {None: before} if before else {}, self.running(key))
            if judged.deferred:
                now = before
            elif judged.request:
                self.requests.append(dg.RunRequest(
                    run_key=f"{source.name}:{run_key_digest(self.generation, [now])}",
                    asset_selection=[key],
                    tags={TRIGGER_TAG: "landing", "ratatouille/files": str(len(files))},
                ))
        if now is not None:
            self.after.whole[source.name] = now


def _today(settings: Settings) -> dt.date:
    """Today in the partitions' time zone: a folder of that day is not in the future."""
    return dt.datetime.now(ZoneInfo(settings.timezone)).date()


def _is_date(day: str) -> bool:
    try:
        dt.date.fromisoformat(day)
    except ValueError:
        return False
    return True


def run_key_digest(generation: int, states: list[str | None]) -> str:
    """A digest of the states a run loads and of the tick's generation. The same tick evaluated
    again (its cursor was not stored) asks for the same runs, which Dagster drops; a later tick
    never does, even when a day returns to a state it had (a file removed, then restored with
    ``rsync -t``, or withdrawn again): Dagster would drop that run as the one it already made."""
    text = f"{generation}|" + "".join(f"{state or ''};" for state in states)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _range_request(
    source: str, key: dg.AssetKey, days: list[str], states: dict[str, str], files: dict[str, list[LandingFile]],
    generation: int,
) -> dg.RunRequest:
    """One run over ``days`` (consecutive partitions)."""
    first, last = days[0], days[-1]
    return dg.RunRequest(
        run_key=f"{source}:{first}..{last}:{run_key_digest(generation, [states[d] for d in days])}",
        asset_selection=[key],
        tags={
            TRIGGER_TAG: "landing",
            "ratatouille/files": str(sum(len(files[d]) for d in days)),
            RANGE_START_TAG: first,
            RANGE_END_TAG: last,
        },
    )


# bronze -> silver -> gold -> gold built on gold: how far up a run in progress holds a day back.
UPSTREAM_DEPTH = 4


def upstream_in_progress(depth: int) -> dg.AutomationCondition:
    """True for a partition when an asset up to ``depth`` levels upstream is in progress for it."""
    condition = dg.AutomationCondition.in_progress()
    for _ in range(depth - 1):
        condition = dg.AutomationCondition.in_progress() | dg.AutomationCondition.any_deps_match(condition)
    return dg.AutomationCondition.any_deps_match(condition).with_label(f"an upstream asset (up to {depth} levels) in progress")


def propagate(lookback_days: int, ignore: dg.AssetSelection | None = None) -> dg.AutomationCondition:
    """Materialize when upstream partitions were updated and their blocking checks passed.

    Like ``eager()`` but with a lookback, so a late file for an old day recomputes that day's
    silver and gold (``eager()`` only looks at the latest partition), and without the "missing
    upstream" guard: a silver day also reads the next landing day (late records), which may not
    exist yet and must not hold the day back. Updates of ``ignore`` (for daily models: the
    dimensions, which they depend on only for their checks) do not trigger a recomputation.
    A day waits while any asset upstream of it (up to :data:`UPSTREAM_DEPTH` levels, not only its
    direct parents) is being materialized for it: a gold day started while a bronze run for its
    late records is still loading would read silver before those records reach it, and its
    materialization, newer than silver's, would then look up to date.
    """
    updated = dg.AutomationCondition.any_deps_updated()
    if ignore is not None:
        updated = updated.ignore(ignore)
    return (
        dg.AutomationCondition.in_latest_time_window(dt.timedelta(days=lookback_days))
        & updated.since_last_handled()
        & ~upstream_in_progress(UPSTREAM_DEPTH)
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
