"""strategy='append': rows are added, nothing replaced, and a replay adds nothing.

Storage first (the write path and write-audit-publish), then a dbt model on a user's own data
(a warehouse's scanner events) through Dagster, on the local default and on S3 + PostgreSQL: a
run appends its day, a re-execution of that run (same root run id) adds nothing, a new run adds
its rows again, and two runs appending on their audit branches at once both land."""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pytest

from ratatouille_assets.definitions import build_definitions
from ratatouille_assets.lakehouse import duck, s3
from ratatouille_assets.lakehouse.catalog import load_catalog
from ratatouille_assets.lakehouse.wap import publish
from ratatouille_assets.lakehouse.write import Window, write_window
from ratatouille_assets.settings import get_settings
from tests.conftest import use_backend
from tests.project import make_project, write_csv

D1, D2 = dt.date(2022, 5, 1), dt.date(2022, 5, 2)


def scans(day: dt.date, first: int, n: int, dock: str = "A") -> pa.Table:
    return pa.table({"scan_id": pa.array(range(first, first + n), pa.int64()), "day": [day] * n,
                     "dock": [dock] * n, "weight_kg": pa.array([1.5 * i for i in range(first, first + n)], pa.float64())})


def content(settings, identifier: str, snapshot: str = "") -> list[tuple]:
    location = load_catalog(settings).load_table(identifier).metadata_location
    return duck.connect(settings).execute(
        f"SELECT scan_id, day, dock, weight_kg FROM iceberg_scan('{location}') ORDER BY ALL").fetchall()


def rows_of(*tables: pa.Table) -> list[tuple]:
    return sorted(tuple(r.values()) for t in tables for r in t.to_pylist())


def test_an_append_adds_rows_and_a_replay_of_the_same_key_adds_nothing(settings):
    catalog = load_catalog(settings)
    window = Window("day", D1, D1)
    first = write_window(catalog, "silver.scans", scans(D1, 0, 10), window=window, run_id="r1", append=True)
    other_day = write_window(catalog, "silver.scans", scans(D2, 100, 5), window=Window("day", D2, D2), run_id="r1",
                             append=True)
    again = write_window(catalog, "silver.scans", scans(D1, 0, 10), window=window, run_id="r1", append=True)
    assert again.snapshot_id == first.snapshot_id and again.rows_written == 0
    assert content(settings, "silver.scans") == rows_of(scans(D1, 0, 10), scans(D2, 100, 5))
    # A re-execution (new run id, the same key) adds nothing either; another key adds its rows.
    write_window(catalog, "silver.scans", scans(D1, 0, 10), window=window, run_id="r1-retry", append="r1")
    second = write_window(catalog, "silver.scans", scans(D1, 10, 3, "B"), window=window, run_id="r2", append=True)
    assert second.rows_written == 3 and second.summary["ratatouille.strategy"] == "append"
    assert content(settings, "silver.scans") == rows_of(scans(D1, 0, 10), scans(D2, 100, 5), scans(D1, 10, 3, "B"))
    assert other_day.snapshot_id != first.snapshot_id
    # Unpartitioned: the same.
    for _ in range(2):
        write_window(catalog, "gold.log", scans(D1, 0, 4), window=None, run_id="r9", append=True)
    write_window(catalog, "gold.log", scans(D2, 4, 2), window=None, run_id="r10", append=True)
    assert content(settings, "gold.log") == rows_of(scans(D1, 0, 4), scans(D2, 4, 2))


def test_a_replay_racing_its_first_commit_adds_nothing(settings):
    """The same key commits while this write is about to (its pre-commit hook): the write finds it
    on the reloaded head and commits nothing."""
    catalog = load_catalog(settings)
    window = Window("day", D1, D1)
    write_window(catalog, "silver.race", scans(D1, 0, 2), window=window, run_id="r0", append=True)

    def same_key_meanwhile(attempt: int) -> None:
        if attempt == 1:
            write_window(catalog, "silver.race", scans(D1, 50, 7), window=window, run_id="r1", append=True)

    late = write_window(catalog, "silver.race", scans(D1, 50, 7), window=window, run_id="r1", append=True,
                        on_attempt=same_key_meanwhile)
    assert late.rows_written == 0 and late.attempts == 2
    assert content(settings, "silver.race") == rows_of(scans(D1, 0, 2), scans(D1, 50, 7))


def test_two_runs_appending_on_their_audit_branches_both_publish(settings):
    catalog = load_catalog(settings)
    window = Window("day", D1, D1)
    write_window(catalog, "silver.docks", scans(D1, 0, 5), window=window, run_id="r0", append=True)
    for run, first in (("r1", 100), ("r2", 200)):
        write_window(catalog, "silver.docks", scans(D1, first, 4, run), window=window, run_id=run, append=True,
                     branch=f"audit-{run}")
    assert publish(catalog, "silver.docks", "audit-r1", window=window, run_id="r1").how == "fast-forward"
    # main moved since r2's branch was made: only the rows r2 added are carried over.
    assert publish(catalog, "silver.docks", "audit-r2", window=window, run_id="r2").how == "rebased"
    expected = rows_of(scans(D1, 0, 5), scans(D1, 100, 4, "r1"), scans(D1, 200, 4, "r2"))
    assert content(settings, "silver.docks") == expected
    # r2 replayed after its publish: main's history holds its append, so nothing more.
    write_window(catalog, "silver.docks", scans(D1, 200, 4, "r2"), window=window, run_id="r2", append=True)
    assert content(settings, "silver.docks") == expected


# --- through dbt and Dagster ----------------------------------------------------------------------

SOURCES = """
scans:
  description: Parcel scans at the loading docks, one CSV a day.
  format: csv
  primary_key: [scan_id]
  event_time: scanned_at
  columns:
    scan_id: bigint
    scanned_at: timestamp
    dock: varchar
    weight_kg: double
"""
LOG = """
    {{ config(strategy='append', partition_by='scan_date') }}
    select scan_id, cast(scanned_at as date) as scan_date, dock, weight_kg,
           case when weight_kg < 0 then 'negative_weight' end as _reject_reason
    from {{ source('bronze', 'scans') }} where {{ source_window('scans') }}
"""


def land(day: str, rows: list[tuple]) -> None:
    lines = [f"{i},{day} 0{i % 10}:00:00,{dock},{kg}" for i, dock, kg in rows]
    landing = get_settings().landing
    if s3.is_s3(landing):
        body = "scan_id,scanned_at,dock,weight_kg\n" + "\n".join(lines) + "\n"
        s3.put_bytes(s3.client(get_settings()), s3.join(landing, "scans", day, "scans.csv"), body.encode())
        return
    write_csv(Path(landing) / "scans" / day / "scans.csv", "scan_id,scanned_at,dock,weight_kg", lines)


@pytest.fixture(params=["local"])
def docks(request, tmp_path, monkeypatch):
    use_backend(request, monkeypatch, tmp_path / "rt", "docks-" + uuid.uuid4().hex[:8])
    make_project(tmp_path / "project", monkeypatch, sources=SOURCES, start="2022-05-01",
                 models={"silver/scan_log.sql": LOG})
    with dg.instance_for_test() as instance:
        yield instance
    get_settings.cache_clear()


def materialize(instance, day: str, tags: dict[str, str] | None = None):
    defs = build_definitions()
    keys = [dg.AssetKey(["bronze", "scans"]), dg.AssetKey(["silver", "scan_log"])]
    return dg.materialize(list(defs.assets), selection=keys, resources=dict(defs.resources), instance=instance,
                          partition_key=day, tags=tags or {})


def log_rows() -> list[tuple]:
    table = load_catalog(get_settings()).load_table("silver.scan_log")
    return duck.connect(get_settings()).execute(
        f"SELECT scan_id, scan_date, dock, weight_kg FROM {duck.scan_sql(table.metadata_location)} ORDER BY ALL").fetchall()


@pytest.mark.slow
@pytest.mark.parametrize("docks", ["local", "s3"], indirect=True)
def test_an_append_model_adds_each_runs_rows_once(docks):
    instance = docks
    day = "2022-05-01"
    land(day, [(1, "A", 2.5), (2, "B", 4.0), (3, "A", -1.0)])
    first = materialize(instance, day)
    assert first.success
    once = [(1, D1, "A", 2.5), (2, D1, "B", 4.0)]
    assert log_rows() == once
    # Dagster's re-execution of that run (its root run id): nothing is added, rejects neither.
    retry = materialize(instance, day, tags={"dagster/root_run_id": first.run_id, "dagster/parent_run_id": first.run_id})
    assert retry.success and log_rows() == once
    catalog = load_catalog(get_settings())
    rejected = catalog.load_table("silver.scan_log__rejected").scan().to_arrow()
    assert rejected.column("scan_id").to_pylist() == [3]
    # A new run of the day is new work: its rows are added again (append means that).
    assert materialize(instance, day).success
    assert log_rows() == sorted(once * 2)
