"""`rat backfill` without dates: what the landing zone holds that is not materialized yet, per
source, from a real landing folder (the materialized state is what the webserver reports)."""

from __future__ import annotations

from pathlib import Path

from ratatouille_assets.client import Materialized, Progress, landing_days, plan_missing
from tests.project import make_project, write_csv

SOURCES = """
visits:
  format: csv
  columns: {visit_id: integer, happened_at: timestamp}
rooms:
  format: csv
  partitioned: false
  columns: {room_id: integer, name: varchar}
sales:
  format: csv
  columns: {sale_id: integer}
"""


def state(days: dict[tuple[str, ...], set[str] | None]) -> dict[tuple[str, ...], Materialized]:
    return {k: Materialized(partitioned=v is not None, days=frozenset(v or ()), ever=bool(v)) for k, v in days.items()}


def test_each_source_is_planned_over_its_own_missing_days_and_models_over_their_union(settings, tmp_path, monkeypatch):
    make_project(tmp_path / "project", monkeypatch, sources=SOURCES, start="2024-01-01")
    landing = Path(settings.landing)
    for day in ("2024-01-01", "2024-01-02", "2024-01-03", "2024-01-05"):
        write_csv(landing / "visits" / day / "a.csv", "visit_id,happened_at", [f"1,{day} 10:00:00"])
    write_csv(landing / "visits" / "2023-12-31" / "a.csv", "visit_id,happened_at", ["1,2023-12-31 10:00:00"])
    write_csv(landing / "rooms" / "rooms.csv", "room_id,name", ["1,a"])
    write_csv(landing / "sales" / "2024-01-02" / "a.csv", "sale_id", ["1"])

    from ratatouille_assets.settings import get_settings

    days = landing_days(get_settings())
    assert days == {"visits": {"2023-12-31", "2024-01-01", "2024-01-02", "2024-01-03", "2024-01-05"}, "rooms": None,
                    "sales": {"2024-01-02"}}
    current = state({
        ("bronze", "visits"): {"2024-01-01", "2024-01-02"},
        ("bronze", "rooms"): None,
        ("bronze", "sales"): {"2024-01-02"},
        ("silver", "visits"): {"2024-01-01"},
        ("silver", "rooms"): None,
    })
    plan = plan_missing(days, current, ("2024-01-01", "2024-12-31"))
    # visits: 01-03 and 01-05 (01-04 between them reloads, harmlessly); the day before the first partition is not a
    # partition; sales is complete; rooms never loaded: once; the models over the union of the sources' ranges.
    assert plan == {
        ("bronze", "visits"): ("2024-01-03", "2024-01-05"),
        ("bronze", "rooms"): None,
        ("silver", "visits"): ("2024-01-03", "2024-01-05"),
        ("silver", "rooms"): None,
    }
    # Everything materialized: nothing to do, not even the unpartitioned models.
    done = state({
        ("bronze", "visits"): days["visits"] - {"2023-12-31"},
        ("bronze", "rooms"): {"x"},
        ("bronze", "sales"): {"2024-01-02"},
        ("silver", "visits"): {"2024-01-01"},
    })
    done[("bronze", "rooms")] = Materialized(partitioned=False, days=frozenset(), ever=True)
    assert plan_missing(days, done, ("2024-01-01", "2024-12-31")) == {}


def test_progress_reports_partitions_rows_and_an_eta():
    p = Progress(done=250, total=1000, in_progress=2, failed=0, rows=123_456, elapsed_s=60)
    assert p.eta_s == 180
    assert p.line() == "250/1,000 partitions (25%), 2 in progress, 123,456 rows into bronze, 1m00s elapsed, ETA 3m00s"
    assert Progress(done=0, total=10, in_progress=1, failed=0, rows=0, elapsed_s=5).eta_s is None
