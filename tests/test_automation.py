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
from ratatouille_assets.defs.automation import LANDING_SENSOR, landing_sensor
from ratatouille_assets.definitions import build_definitions
from ratatouille_assets.ingest.sources import parse_sources


def drop(settings, source: str, day: str, name: str, text: str = "x\n") -> Path:
    folder = Path(settings.landing) / source / day
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text)
    return path


def tick(defs: dg.Definitions, instance, cursor: str | None):
    sensor = defs.resolve_sensor_def(LANDING_SENSOR)
    context = dg.build_sensor_context(instance=instance, cursor=cursor, definitions=defs)
    result = sensor(context)
    requests = sorted((r.partition_key, tuple(k.to_user_string() for k in r.asset_selection)) for r in result.run_requests)
    return requests, result.cursor, [r.run_key for r in result.run_requests]


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


def test_first_tick_skips_days_already_materialized(settings, defs):
    drop(settings, "fx_rates", "2024-01-01", "a.csv", "rate_date,currency,usd_per_unit\n2024-01-01,USD,1\n")
    drop(settings, "fx_rates", "2024-01-02", "a.csv", "rate_date,currency,usd_per_unit\n2024-01-02,USD,1\n")
    with dg.instance_for_test() as instance:
        dg.materialize(list(defs.assets), selection=dg.AssetSelection.assets(dg.AssetKey(["bronze", "fx_rates"])),
                       partition_key="2024-01-01", instance=instance, resources=dict(defs.resources),
                       raise_on_error=False)  # one currency only: the blocking row-count check fails, the day is written
        requests, cursor, _ = tick(defs, instance, None)
        assert requests == [("2024-01-02", ("bronze/fx_rates",))]
        assert set(json.loads(cursor)) == {"fx_rates/2024-01-01/a.csv", "fx_rates/2024-01-02/a.csv"}


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


def own_tick(settings, instance, cursor: str | None, partitions_def: dg.TimeWindowPartitionsDefinition):
    """One evaluation of the landing sensor built for OWN_SOURCES on ``partitions_def``."""
    sensor = landing_sensor(OWN_SOURCES, partitions_def, settings)
    context = dg.build_sensor_context(instance=instance, cursor=cursor)
    records = _Records()
    context.log.addHandler(records)
    result = sensor(context)
    requests = sorted((r.partition_key, tuple(k.to_user_string() for k in r.asset_selection)) for r in result.run_requests)
    return requests, result.cursor, [r.run_key for r in result.run_requests], records.messages


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
        assert set(json.loads(cursor)) == {"stations/a.csv", "stations/2024/b.csv"}
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
        assert set(json.loads(cursor)) == {"stations/2024/b.csv", "stations/c.csv", "stations/2025/d.csv"}


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
        assert set(json.loads(cursor)) == {f"readings/{yesterday}/a.csv"}  # ... and not marked as seen
        assert any("not partitions yet" in m and f"readings/{today}" in m for _, m in messages), messages

        # The day ended (its partition exists now): the next tick requests it, and only it.
        requests, cursor, _, _ = own_tick(settings, instance, cursor, until_today)
        assert requests == [(today.isoformat(), ("bronze/readings",))]
        assert set(json.loads(cursor)) == {f"readings/{yesterday}/a.csv", f"readings/{today}/a.csv"}
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
        assert set(json.loads(cursor)) == {"readings/2024-01-02/a.csv"}

        # Once partitions.start moves back, the next tick requests the early days.
        earlier = dg.DailyPartitionsDefinition(start_date="2023-12-30", timezone="UTC")
        requests, _, _, _ = own_tick(settings, instance, cursor, earlier)
        assert requests == [("2023-12-30", ("bronze/readings",)), ("2023-12-31", ("bronze/readings",))]
