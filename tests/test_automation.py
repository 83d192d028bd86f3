"""Sensors and schedules, evaluated through Dagster's own contexts on real files and a real
HTTP server on loopback."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import dagster as dg
import pytest

from ratatouille_assets.defs.alerts import failures_log, record_failure
from ratatouille_assets.defs.automation import LANDING_CHECK, LANDING_SENSOR, LandingCursor, landing_sensor, state
from ratatouille_assets.definitions import build_definitions
from ratatouille_assets.ingest.landing import landing_zone, unread_files
from ratatouille_assets.ingest.sources import load_sources_file, parse_sources


def drop(settings, source: str, day: str, name: str, text: str = "x\n") -> Path:
    folder = Path(settings.landing) / source / day
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text)
    return path


def span(request: dg.RunRequest) -> str | None:
    """What a request loads: "day" for a one-day range, "first..last" for a longer one, None for a
    whole (unpartitioned) asset. The sensor asks for ranges only, never a single partition key."""
    assert request.partition_key is None, request
    window = request.partition_key_range
    if window is None:
        return None
    return window.start if window.start == window.end else f"{window.start}..{window.end}"


def summary(result: dg.SensorResult) -> list[tuple[str | None, tuple[str, ...]]]:
    return sorted(((span(r), tuple(k.to_user_string() for k in r.asset_selection)) for r in result.run_requests),
                  key=lambda item: (item[0] or "", item[1]))


def tick(defs: dg.Definitions, instance, cursor: str | None):
    sensor = defs.resolve_sensor_def(LANDING_SENSOR)
    context = dg.build_sensor_context(instance=instance, cursor=cursor, definitions=defs)
    result = sensor(context)
    return summary(result), result.cursor, [r.run_key for r in result.run_requests]


def cursor_days(cursor: str, sources) -> set[str]:
    """The ``source/day`` entries of a landing cursor."""
    seen = LandingCursor.decode(cursor, sources)
    return {f"{source}/{day}" for source, days in seen.days.items() for day in days}


@pytest.fixture
def defs(settings):
    return build_definitions()


@pytest.fixture(autouse=True)
def _fresh_load_context():
    """Dagster's sensor/schedule test contexts leave its global defs-state storage pointing at the
    test instance; once that instance is closed, the next Definitions cannot resolve. Reset it."""
    from dagster._core.definitions.definitions_load_context import DefinitionsLoadContext
    from dagster._core.storage.defs_state.base import _current_storage

    yield
    DefinitionsLoadContext._instance = None
    _current_storage.set(None)


def test_landing_sensor_cursor(settings, defs):
    with dg.instance_for_test() as instance:
        # Nothing landed: nothing requested.
        requests, cursor, _ = tick(defs, instance, None)
        assert requests == []

        # A new file: one run for that source and day.
        drop(settings, "orders", "2024-01-05", "a.jsonl")
        requests, cursor, keys = tick(defs, instance, cursor)
        assert requests == [("2024-01-05", ("bronze/orders",))]

        # The same file on the next tick: nothing.
        assert tick(defs, instance, cursor)[0] == []

        # A late file for an old day, arriving after newer days were processed: seen.
        drop(settings, "orders", "2024-01-06", "b.jsonl")
        requests, cursor, _ = tick(defs, instance, cursor)
        assert requests == [("2024-01-06", ("bronze/orders",))]
        drop(settings, "order_items", "2024-01-02", "late.parquet")
        requests, cursor, _ = tick(defs, instance, cursor)
        assert requests == [("2024-01-02", ("bronze/order_items",))]

        # A modified file (new content, new mtime): picked up again, with a new run key.
        path = Path(settings.landing) / "orders" / "2024-01-05" / "a.jsonl"
        path.write_text("changed content\n")
        os.utime(path, ns=(time.time_ns(), time.time_ns() + 1_000_000_000))
        requests, cursor, new_keys = tick(defs, instance, cursor)
        assert requests == [("2024-01-05", ("bronze/orders",))]
        assert new_keys[0] != keys[0]

        # Folders that are not partitions (no date, a future day) request nothing.
        drop(settings, "orders", "not-a-day", "c.jsonl")
        drop(settings, "orders", "2999-01-01", "d.jsonl")
        assert tick(defs, instance, cursor)[0] == []


def fx(day: str) -> str:
    """A day of rates for every currency (bronze's checks want five rows)."""
    rates = {"USD": 1, "EUR": 1.1, "GBP": 1.3, "JPY": 0.007, "CHF": 1.2}
    return "rate_date,currency,usd_per_unit\n" + "".join(f"{day},{c},{r}\n" for c, r in rates.items())


def test_days_loaded_by_a_run_that_started_after_their_files_are_not_requested(settings, defs):
    for day in ("2024-01-01", "2024-01-02", "2024-01-03", "2024-01-05"):
        drop(settings, "fx_rates", day, "a.csv", fx(day))
    drop(settings, "fx_rates", "2024-01-03", "b.csv", fx("2024-01-03"))
    sources = load_sources_file(settings.sources_file).sources
    with dg.instance_for_test() as instance:
        # `rat materialize --from 2024-01-01 --to 2024-01-03`, before the sensor ever ran.
        dg.materialize(list(defs.assets), selection=[dg.AssetKey(["bronze", "fx_rates"])], instance=instance,
                       resources=dict(defs.resources),
                       tags={"dagster/asset_partition_range_start": "2024-01-01",
                             "dagster/asset_partition_range_end": "2024-01-03"})
        drop(settings, "fx_rates", "2024-01-02", "late.csv", fx("2024-01-02"))  # after that run started
        requests, cursor, _ = tick(defs, instance, None)
        assert requests == [("2024-01-02", ("bronze/fx_rates",)), ("2024-01-05", ("bronze/fx_rates",))]
        # Loaded days are in the cursor all the same: they are not judged again.
        assert {"fx_rates/2024-01-01", "fx_rates/2024-01-03"} <= cursor_days(cursor, sources)
        assert tick(defs, instance, cursor)[0] == []

        # A removed file leaves no time behind: the day is requested although a run loaded it after its files.
        (Path(settings.landing) / "fx_rates/2024-01-03/b.csv").unlink()
        requests, cursor, _ = tick(defs, instance, cursor)
        assert requests == [("2024-01-03", ("bronze/fx_rates",))]

        # A file moved in (mv, rsync -t) keeps an mtime older than the run, but its ctime says when it came.
        outside = Path(settings.landing).parent / "moved.csv"
        outside.write_text(fx("2024-01-01"))
        hour_ago = time.time_ns() - 3600 * 10**9
        os.utime(outside, ns=(hour_ago, hour_ago))
        outside.rename(Path(settings.landing) / "fx_rates/2024-01-01/moved.csv")
        requests, cursor, _ = tick(defs, instance, cursor)
        assert requests == [("2024-01-01", ("bronze/fx_rates",))]


def test_daily_schedule_runs_yesterday_through_every_layer(settings, defs):
    schedule = defs.resolve_schedule_def("daily_all_layers")
    assert schedule.cron_schedule == "0 1 * * *" and schedule.execution_timezone == "UTC"
    with dg.instance_for_test() as instance:
        context = dg.build_schedule_context(instance=instance, scheduled_execution_time=dt.datetime(2024, 3, 5, 1, 0))
        (request,) = schedule.evaluate_tick(context).run_requests
    assert request.partition_key == "2024-03-04"
    job = defs.resolve_job_def("all_layers")
    layers = {k.path[0] for k in job.asset_layer.selected_asset_keys}
    assert layers == {"bronze", "silver", "gold"}


def test_schedule_timezone_is_configurable(settings, monkeypatch):
    monkeypatch.setenv("RATATOUILLE_TIMEZONE", "Europe/Paris")
    monkeypatch.setenv("RATATOUILLE_SCHEDULE_HOUR", "3")
    from ratatouille_assets.settings import get_settings

    get_settings.cache_clear()
    schedule = build_definitions().resolve_schedule_def("daily_all_layers")
    assert (schedule.cron_schedule, schedule.execution_timezone) == ("0 3 * * *", "Europe/Paris")


class _Hook(BaseHTTPRequestHandler):
    received: list[dict] = []
    status = 200

    def do_POST(self):  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append({"path": self.path, "json": json.loads(body), "type": self.headers["Content-Type"]})
        self.send_response(type(self).status)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def webhook():
    _Hook.received, _Hook.status = [], 200
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hooks/secret-token", _Hook
    server.shutdown()
    server.server_close()


def test_failure_is_recorded_and_posted_to_the_webhook(settings, webhook, monkeypatch):
    url, hook = webhook
    monkeypatch.setenv("RATATOUILLE_ALERT_WEBHOOK_URL", url)
    line = record_failure(settings, run_id="r1", job="all_layers", partition="2024-01-02",
                          message="boom", steps=["dbt_daily"])
    assert "webhook answered 200" in line and "secret-token" not in line
    (call,) = hook.received
    assert call["path"] == "/hooks/secret-token" and call["type"] == "application/json"
    assert call["json"]["run_id"] == "r1" and call["json"]["partition"] == "2024-01-02"
    assert call["json"]["failed_steps"] == ["dbt_daily"]
    recorded = [json.loads(x) for x in Path(failures_log(settings)).read_text().splitlines()]
    assert recorded[-1]["message"] == "boom"


def test_run_failure_sensor_posts_a_real_failed_run(settings, webhook, monkeypatch, defs):
    url, hook = webhook
    monkeypatch.setenv("RATATOUILLE_ALERT_WEBHOOK_URL", url)

    @dg.asset
    def broken():
        raise RuntimeError("planted failure")

    with dg.instance_for_test() as instance:
        result = dg.materialize([broken], instance=instance, raise_on_error=False)
        assert not result.success
        (record,) = instance.all_logs(result.run_id, of_type=dg.DagsterEventType.RUN_FAILURE)
        failure = record.dagster_event
        sensor = defs.resolve_sensor_def("run_failure_alerts")
        context = dg.build_run_status_sensor_context(
            sensor_name=sensor.name, dagster_instance=instance, dagster_run=result.dagster_run, dagster_event=failure,
        ).for_run_failure()
        sensor(context)
    (call,) = hook.received
    assert call["json"]["run_id"] == result.run_id
    assert call["json"]["failed_steps"] == ["broken"]


def test_unreachable_webhook_is_reported_without_the_url(settings, monkeypatch):
    monkeypatch.setenv("RATATOUILLE_ALERT_WEBHOOK_URL", "http://127.0.0.1:9/hooks/secret-token")
    line = record_failure(settings, run_id="r2", job="j", partition=None, message="x", steps=[])
    assert "webhook failed" in line and "secret-token" not in line


# --- The landing sensor on a Sources dict of its own: reference sources, days that are not partitions ---

OWN_SOURCES = parse_sources({"sources": {
    "stations": {"format": "csv", "partitioned": False, "path": "stations/**/*.csv",
                 "primary_key": ["station_id"], "columns": {"station_id": "integer", "name": "varchar"}},
    "readings": {"format": "csv", "primary_key": ["reading_id"], "columns": {"reading_id": "integer", "value": "double"}},
}})


class _Records(logging.Handler):
    """The messages a sensor logs through its context's logger (what the UI shows for a tick)."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.messages: list[tuple[str, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append((record.levelname, record.getMessage()))


def own_tick(settings, instance, cursor: str | None, partitions_def: dg.TimeWindowPartitionsDefinition, sources=OWN_SOURCES):
    """One evaluation of the landing sensor built for ``sources`` on ``partitions_def``."""
    sensor = landing_sensor(sources, partitions_def, settings)
    context = dg.build_sensor_context(instance=instance, cursor=cursor)
    records = _Records()
    context.log.addHandler(records)
    result = sensor(context)
    return summary(result), result.cursor, [r.run_key for r in result.run_requests], records.messages


def listed(settings, source: str) -> str:
    """The state of ``source``'s files as the landing zone lists them now."""
    return state(landing_zone(settings.landing, settings).files(OWN_SOURCES[source]))


def land(settings, relative: str, text: str = "station_id,name\n1,a\n") -> Path:
    path = Path(settings.landing) / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


DAILY = dg.DailyPartitionsDefinition(start_date="2024-01-01", timezone="UTC")


def test_a_reference_source_is_requested_whole_once_and_again_on_every_change(settings):
    land(settings, "stations/a.csv")
    nested = land(settings, "stations/2024/b.csv", "station_id,name\n2,b\n")
    with dg.instance_for_test() as instance:
        requests, cursor, keys, _ = own_tick(settings, instance, None, DAILY)
        assert requests == [(None, ("bronze/stations",))]  # one run for both files, no partition
        assert LandingCursor.decode(cursor, OWN_SOURCES).whole == {"stations": listed(settings, "stations")}
        seen_keys = set(keys)

        assert own_tick(settings, instance, cursor, DAILY)[0] == []  # nothing changed: nothing

        nested.write_text("station_id,name\n2,renamed\n")
        os.utime(nested, ns=(time.time_ns(), time.time_ns() + 1_000_000_000))
        land(settings, "stations/c.csv", "station_id,name\n3,c\n")
        for change in ("changed", "added", "deleted"):
            if change == "added":
                land(settings, "stations/2025/d.csv", "station_id,name\n4,d\n")
            if change == "deleted":
                (Path(settings.landing) / "stations/a.csv").unlink()
            requests, cursor, keys, _ = own_tick(settings, instance, cursor, DAILY)
            assert requests == [(None, ("bronze/stations",))], change
            assert keys[0] not in seen_keys, f"a {change} file must get a new run key"
            seen_keys.add(keys[0])
            assert own_tick(settings, instance, cursor, DAILY)[0] == []  # and once only
        (now,) = LandingCursor.decode(cursor, OWN_SOURCES).whole.values()
        assert now == listed(settings, "stations") and now.endswith(":3")  # b, c and d: a.csv is gone


def test_files_of_today_are_kept_out_of_the_cursor_until_the_day_is_a_partition(settings):
    today = dt.datetime.now(dt.timezone.utc).date()
    yesterday = today - dt.timedelta(days=1)
    start = (today - dt.timedelta(days=5)).isoformat()
    until_yesterday = dg.DailyPartitionsDefinition(start_date=start, timezone="UTC")
    until_today = dg.DailyPartitionsDefinition(start_date=start, timezone="UTC", end_offset=1)
    land(settings, f"readings/{yesterday}/a.csv", "reading_id,value\n1,1.5\n")
    land(settings, f"readings/{today}/a.csv", "reading_id,value\n2,2.5\n")
    with dg.instance_for_test() as instance:
        requests, cursor, _, messages = own_tick(settings, instance, None, until_yesterday)
        assert requests == [(yesterday.isoformat(), ("bronze/readings",))]  # today: nothing yet
        assert cursor_days(cursor, OWN_SOURCES) == {f"readings/{yesterday}"}  # ... and not marked as seen
        assert any("not partitions yet" in m and f"readings/{today}" in m for _, m in messages), messages

        # The day ended (its partition exists now): the next tick requests it, and only it.
        requests, cursor, _, _ = own_tick(settings, instance, cursor, until_today)
        assert requests == [(today.isoformat(), ("bronze/readings",))]
        assert cursor_days(cursor, OWN_SOURCES) == {f"readings/{yesterday}", f"readings/{today}"}
        assert own_tick(settings, instance, cursor, until_today)[0] == []


def test_folders_before_the_first_partition_request_nothing_and_name_the_setting_to_change(settings):
    land(settings, "readings/2023-12-31/a.csv", "reading_id,value\n1,1.5\n")
    land(settings, "readings/2023-12-30/a.csv", "reading_id,value\n2,2.5\n")
    land(settings, "readings/2024-01-02/a.csv", "reading_id,value\n3,3.5\n")
    with dg.instance_for_test() as instance:
        requests, cursor, _, messages = own_tick(settings, instance, None, DAILY)
        assert requests == [("2024-01-02", ("bronze/readings",))]
        (warning,) = [m for level, m in messages if level == "WARNING"]
        assert "partitions.start" in warning and "partitions.start: 2023-12-30" in warning
        assert str(settings.sources_file) in warning
        assert cursor_days(cursor, OWN_SOURCES) == {"readings/2024-01-02"}

        # Once partitions.start moves back, the next tick requests the early days.
        earlier = dg.DailyPartitionsDefinition(start_date="2023-12-30", timezone="UTC")
        requests, _, _, _ = own_tick(settings, instance, cursor, earlier)
        assert requests == [("2023-12-30..2023-12-31", ("bronze/readings",))]  # one run for adjacent days


READINGS = {"readings": OWN_SOURCES["readings"]}


def test_a_queued_or_running_run_defers_the_days_it_covers(settings):
    from dagster._core.test_utils import create_run_for_test  # a run record as a run worker starts it

    for day in ("2024-01-02", "2024-01-03", "2024-01-04"):
        land(settings, f"readings/{day}/a.csv", "reading_id,value\n1,1.5\n")
    with dg.instance_for_test() as instance:
        running = create_run_for_test(
            instance, job_name="__ASSET_JOB", status=dg.DagsterRunStatus.STARTED,
            asset_selection=frozenset({dg.AssetKey(["bronze", "readings"])}),
            tags={"dagster/asset_partition_range_start": "2024-01-01", "dagster/asset_partition_range_end": "2024-01-03"},
        )
        requests, cursor, _, _ = own_tick(settings, instance, None, DAILY, READINGS)
        assert requests == [("2024-01-04", ("bronze/readings",))]
        assert cursor_days(cursor, READINGS) == {"readings/2024-01-04"}  # the covered days: judged again
        assert own_tick(settings, instance, cursor, DAILY, READINGS)[0] == []  # still running: still deferred

        # The run ended without loading them (cancelled): the next tick requests them.
        instance.report_run_canceled(running)
        requests, cursor, _, _ = own_tick(settings, instance, cursor, DAILY, READINGS)
        assert requests == [("2024-01-02..2024-01-03", ("bronze/readings",))]


def test_an_old_format_cursor_is_converted_without_requesting_anything(settings):
    for day in ("2024-01-02", "2024-01-03"):
        land(settings, f"readings/{day}/a.csv", "reading_id,value\n1,1.5\n")
        land(settings, f"readings/{day}/b.csv", "reading_id,value\n2,2.5\n")
    land(settings, "stations/a.csv")
    zone = landing_zone(settings.landing, settings)
    old = json.dumps({f.path: f.fingerprint for s in OWN_SOURCES.values() for f in zone.files(s)})  # what the first sensor kept
    with dg.instance_for_test() as instance:
        requests, cursor, _, _ = own_tick(settings, instance, old, DAILY)
        assert requests == []
        assert cursor.startswith("v2:") and len(cursor) < len(old) * 2
        assert cursor_days(cursor, OWN_SOURCES) == {"readings/2024-01-02", "readings/2024-01-03"}
        converted, before = LandingCursor.decode(cursor, OWN_SOURCES), LandingCursor.decode(old, OWN_SOURCES)
        assert (converted.days, converted.whole) == (before.days, before.whole)

        # What changed since the old cursor is seen, in either format.
        land(settings, "readings/2024-01-03/c.csv", "reading_id,value\n3,3.5\n")
        land(settings, "stations/b.csv", "station_id,name\n2,b\n")
        for previous in (old, cursor):
            assert own_tick(settings, instance, previous, DAILY)[0] == [
                (None, ("bronze/stations",)), ("2024-01-03", ("bronze/readings",))]


def test_an_emptied_day_keeps_its_bronze_partition(settings):
    land(settings, "readings/2024-01-02/a.csv", "reading_id,value\n1,1.5\n")
    with dg.instance_for_test() as instance:
        _, cursor, _, _ = own_tick(settings, instance, None, DAILY, READINGS)
        (Path(settings.landing) / "readings/2024-01-02/a.csv").unlink()
        requests, cursor, _, messages = own_tick(settings, instance, cursor, DAILY, READINGS)
        assert requests == []  # a landing zone that drops old folders must not empty bronze
        assert any("emptied" in m and "readings/2024-01-02" in m for _, m in messages), messages
        assert cursor_days(cursor, READINGS) == set()

        # Landed again: loaded again.
        land(settings, "readings/2024-01-02/a.csv", "reading_id,value\n1,1.5\n")
        assert own_tick(settings, instance, cursor, DAILY, READINGS)[0] == [("2024-01-02", ("bronze/readings",))]


def days_of(requests, keys: list[str]) -> list[str]:
    """Every partition the requests load, a day once per request that loads it."""
    index = {k: i for i, k in enumerate(keys)}
    out = []
    for window, _ in requests:
        first, _, last = window.partition("..")
        out += keys[index[first]:index[last or first] + 1]
    return out


@pytest.mark.slow
def test_a_large_landing_zone_makes_a_small_cursor_and_few_runs(settings):
    """20,000 files over 2,500 days: one run for the lot, a cursor of days (not files), and any
    later change (touched, added, re-sent, removed) requested as exactly its days."""
    history = dg.DailyPartitionsDefinition(start_date="2017-01-01", timezone="UTC")
    first = dt.date(2017, 1, 1)
    days = [(first + dt.timedelta(days=i)).isoformat() for i in range(2500)]
    root = Path(settings.landing) / "readings"
    for n, day in enumerate(days):
        folder = root / day
        folder.mkdir(parents=True)
        for i in range(8):
            (folder / f"part-{i}.csv").write_text(f"reading_id,value\n{n * 8 + i},1.0\n")
    keys = history.get_partition_keys()

    with dg.instance_for_test() as instance:
        t0 = time.perf_counter()
        requests, cursor, first_keys, _ = own_tick(settings, instance, None, history, READINGS)
        elapsed = time.perf_counter() - t0
        print(f"\nfirst tick over 20,000 files / 2,500 days: {elapsed:.2f} s, cursor {len(cursor):,} bytes")
        assert requests == [(f"{days[0]}..{days[-1]}", ("bronze/readings",))]
        assert len(cursor) <= 1_000_000
        assert own_tick(settings, instance, None, history, READINGS)[2] == first_keys  # a tick evaluated again: the same run key

        t0 = time.perf_counter()
        assert own_tick(settings, instance, cursor, history, READINGS)[0] == []  # nothing changed: nothing
        print(f"unchanged tick: {time.perf_counter() - t0:.2f} s")

        run_keys: set[str] = set()

        def changes(*expected: str) -> None:
            nonlocal cursor
            requests, cursor, keys_now, _ = own_tick(settings, instance, cursor, history, READINGS)
            assert [w for w, _ in requests] == list(expected)
            assert not run_keys & set(keys_now)  # Dagster drops a request whose run key it has seen
            run_keys.update(keys_now)
            loaded = days_of(requests, keys)
            assert len(loaded) == len(set(loaded))  # no partition in two requests
            assert own_tick(settings, instance, cursor, history, READINGS)[0] == []  # and once only

        later = time.time_ns() + 10**9
        os.utime(root / days[10] / "part-3.csv", ns=(later, later))  # touched
        changes(days[10])
        (root / days[100] / "late.csv").write_text("reading_id,value\n99999,2.0\n")  # added, in two days apart
        (root / days[2000] / "late.csv").write_text("reading_id,value\n99998,2.0\n")
        changes(days[100], days[2000])
        (root / days[500] / "part-0.csv").write_text("reading_id,value\n0,3.25\n")  # re-sent, new content
        os.utime(root / days[500] / "part-0.csv", ns=(later + 10**9, later + 10**9))
        (root / days[501] / "part-0.csv").write_text("reading_id,value\n1,3.5\n")
        changes(f"{days[500]}..{days[501]}")  # adjacent days: one run
        (root / days[1234] / "part-7.csv").unlink()  # removed
        changes(days[1234])
        late = root / days[1500] / "late.csv"
        late.write_text("reading_id,value\n99997,2.0\n")
        changes(days[1500])
        before = late.stat()
        late.unlink()
        changes(days[1500])
        late.write_text("reading_id,value\n99997,2.0\n")  # restored as it was (rsync -t): a state already
        os.utime(late, ns=(before.st_atime_ns, before.st_mtime_ns))  # requested once, but a new change
        changes(days[1500])


def test_changed_days_are_cut_into_adjacent_ranges_of_at_most_the_batch_size():
    from ratatouille_assets.defs.automation import consecutive

    days = ["2024-01-01", "2024-01-02", "2024-01-03", "2024-01-05", "2024-01-06", "2024-01-09"]
    index = {f"2024-01-{d:02d}": d for d in range(1, 10)}
    assert consecutive(days, index) == [days[:3], days[3:5], days[5:]]
    assert consecutive(days, index, most=2) == [days[:2], days[2:3], days[3:5], days[5:]]


# --- The landing check: nothing in a landing folder goes unread without a word ---------------------

SHARED = parse_sources({"sources": {
    "readings": {"format": "csv", "columns": {"reading_id": "integer"}},
    "a_part": {"format": "csv", "path": "shared/{date}/a_*.csv", "columns": {"id": "integer"}},
    "b_part": {"format": "csv", "path": "shared/{date}/b_*.csv", "columns": {"id": "integer"}},
}})


def test_every_file_a_load_would_not_read_is_reported_with_the_reason(settings):
    for relative in ["readings/2024-01-02/a.csv", "readings/2024-01-02/a.csv.gz", "readings/2024-01-02/b.xlsx",
                     "readings/2024-01-02/c.csv.bz2", "readings/not-a-day/d.csv", "readings/2024-02-30/e.csv",
                     "readings/2999-01-01/f.csv", "readings/2023-06-01/g.csv", "readings/2024-01-02/sub/h.csv",
                     "readings/2024-01-02/.DS_Store", "readings/.tmp/2024-01-02/x.csv",
                     "shared/2024-01-02/a_1.csv", "shared/2024-01-02/b_1.csv", "shared/2024-01-02/c_1.csv"]:
        land(settings, relative, "reading_id\n1\n")
    report = unread_files(landing_zone(settings.landing, settings), SHARED, "2024-01-01", dt.date(2024, 6, 1))
    got = {name: {u.path: u.why for u in unread} for name, unread in report.items()}
    assert set(got["readings"]) == {"readings/2024-01-02/b.xlsx", "readings/2024-01-02/c.csv.bz2", "readings/not-a-day/d.csv",
                                    "readings/2024-02-30/e.csv", "readings/2999-01-01/f.csv", "readings/2023-06-01/g.csv",
                                    "readings/2024-01-02/sub/h.csv", "readings/2024-01-02/.DS_Store",
                                    "readings/.tmp/2024-01-02/x.csv"}
    why = got["readings"]
    assert "does not match 'readings/{date}/*.csv'" in why["readings/2024-01-02/b.xlsx"]
    assert "its folder 'not-a-day' is no day (YYYY-MM-DD)" in why["readings/not-a-day/d.csv"]
    assert "'2024-02-30' is no valid date" in why["readings/2024-02-30/e.csv"]
    assert "in the future" in why["readings/2999-01-01/f.csv"]
    assert "before partitions.start (2024-01-01)" in why["readings/2023-06-01/g.csv"]
    assert "a hidden file" in why["readings/2024-01-02/.DS_Store"] and "a hidden file" in why["readings/.tmp/2024-01-02/x.csv"]
    # The landing check of one source looks at that source only.
    assert set(unread_files(landing_zone(settings.landing, settings), SHARED, "2024-01-01", dt.date(2024, 6, 1),
                            only="a_part")) == {"a_part"}
    # A file another source reads is that source's, not unread; one neither reads is both's to report.
    assert set(got["a_part"]) == set(got["b_part"]) == {"shared/2024-01-02/c_1.csv"}


def test_the_sensor_reports_the_landing_check_only_when_what_is_unread_changes(settings):
    land(settings, "readings/2024-01-02/a.csv", "reading_id,value\n1,1.5\n")
    stray = land(settings, "readings/2024-01-02/notes.txt", "call the vendor\n")
    sensor = landing_sensor(READINGS, DAILY, settings)
    with dg.instance_for_test() as instance:
        first = sensor(dg.build_sensor_context(instance=instance, cursor=None))
        (event,) = first.asset_events
        assert (event.asset_key, event.check_name, event.passed) == (dg.AssetKey(["bronze", "readings"]), LANDING_CHECK, False)
        assert event.severity == dg.AssetCheckSeverity.WARN
        assert event.metadata["unread_files"].value == 1
        assert "readings/2024-01-02/notes.txt" in event.metadata["files"].value
        again = sensor(dg.build_sensor_context(instance=instance, cursor=first.cursor))
        assert again.asset_events == []  # nothing changed: no new evaluation
        stray.unlink()
        fixed = sensor(dg.build_sensor_context(instance=instance, cursor=again.cursor))
        (event,) = fixed.asset_events
        assert event.passed and event.metadata["unread_files"].value == 0


def test_the_landing_check_runs_on_its_own_from_the_definitions(settings, defs):
    land(settings, "orders/2024-01-02/export.csv", "x\n")  # the shop's orders are JSON lines
    check = next(c for c in defs.asset_checks if dg.AssetCheckKey(dg.AssetKey(["bronze", "orders"]), LANDING_CHECK) in c.check_keys)
    result = dg.materialize([check], selection=dg.AssetSelection.checks(check), raise_on_error=True)
    (evaluation,) = result.get_asset_check_evaluations()
    assert not evaluation.passed and evaluation.metadata["unread_files"].value == 1
