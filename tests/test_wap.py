"""Write-audit-publish on real Iceberg tables (meter readings of a utility, not the shop).

A write to an audit branch leaves main as it was (snapshot id and rows, read by plain DuckDB over
main's metadata file); publishing fast-forwards main, or, when another run published meanwhile,
carries exactly the audited window over (no lost window, no unaudited row); audit branches past
their retention are removed."""

from __future__ import annotations

import datetime as dt
import threading

import pyarrow as pa
import pytest

from ratatouille_assets.lakehouse import duck, wap
from ratatouille_assets.lakehouse.catalog import load_catalog
from ratatouille_assets.lakehouse.write import Window, write_window

DAY = dt.date(2021, 3, 1)
TABLE = "silver.meter_readings"


def readings(day: dt.date, kwh: list[float]) -> pa.Table:
    return pa.table({
        "read_on": pa.array([day] * len(kwh), pa.date32()),
        "meter": pa.array([f"m{i}" for i in range(len(kwh))]),
        "kwh": pa.array(kwh, pa.float64()),
    })


def write(catalog, day: dt.date, kwh: list[float], *, run_id: str, branch: str = "main", end: dt.date | None = None,
          granularity: str = "day"):
    data = readings(day, kwh) if end is None else pa.concat_tables(
        [readings(day + dt.timedelta(days=i), kwh) for i in range((end - day).days + 1)])
    return write_window(catalog, TABLE, data, window=Window("read_on", day, end or day), run_id=run_id, branch=branch,
                        granularity=granularity)


def main_state(catalog) -> tuple[int, list[tuple]]:
    """main's snapshot id and rows, through plain DuckDB on the current metadata file."""
    table = catalog.load_table(TABLE)
    rows = duck.connect().execute(f"SELECT * FROM iceberg_scan('{table.metadata_location}') ORDER BY ALL").fetchall()
    return table.current_snapshot().snapshot_id, rows


def branch_rows(catalog, branch: str) -> list[tuple]:
    table = catalog.load_table(TABLE)
    snap = table.metadata.refs[branch].snapshot_id
    return duck.connect().execute(f"SELECT * FROM {duck.scan_sql(table.metadata_location, snap)} ORDER BY ALL").fetchall()


@pytest.fixture
def lake(settings):
    catalog = load_catalog(settings)
    write(catalog, DAY, [1.0, 2.0], run_id="seed", end=DAY + dt.timedelta(days=9))
    return catalog


def test_an_audit_write_is_one_commit_and_leaves_main(lake):
    catalog = lake
    before = main_state(catalog)
    metadata_before = len(catalog.load_table(TABLE).metadata.metadata_log)
    branch = wap.audit_branch("run-1")
    result = write(catalog, DAY + dt.timedelta(days=3), [-50.0], run_id="run-1", branch=branch)
    table = catalog.load_table(TABLE)
    assert main_state(catalog) == before
    assert table.metadata.refs[branch].snapshot_id == result.snapshot_id
    # The branch is made in the write's own commit: one new metadata file for branch and data.
    assert len(table.metadata.metadata_log) == metadata_before + 1
    held = branch_rows(catalog, branch)
    assert (DAY + dt.timedelta(days=3), "m0", -50.0) in held
    assert [r for r in held if r[0] != DAY + dt.timedelta(days=3)] == [r for r in before[1] if r[0] != DAY + dt.timedelta(days=3)]
    assert [h.branch for h in wap.held_branches(catalog)] == [branch]


def test_publish_fast_forwards_main_and_removes_the_branch(lake):
    catalog = lake
    branch = wap.audit_branch("run-2")
    result = write(catalog, DAY + dt.timedelta(days=4), [7.0], run_id="run-2", branch=branch)
    expected = branch_rows(catalog, branch)
    published = wap.publish(catalog, TABLE, branch, window=Window("read_on", DAY + dt.timedelta(days=4), DAY + dt.timedelta(days=4)),
                            run_id="run-2")
    assert published.how == "fast-forward" and published.snapshot_id == result.snapshot_id
    snapshot_id, rows = main_state(catalog)
    assert snapshot_id == result.snapshot_id and rows == expected
    assert branch not in catalog.load_table(TABLE).metadata.refs
    # Publishing again finds nothing to do.
    assert wap.publish(catalog, TABLE, branch, window=None, run_id="run-2").how == "nothing"


@pytest.mark.parametrize("granularity", ["day", "month"])
def test_two_runs_auditing_different_windows_both_publish(settings, granularity):
    """Both branches fork from the same main; the second publish finds main moved and carries its
    window over: main ends with both windows and every other day as it was."""
    catalog = load_catalog(settings)
    write(catalog, DAY, [1.0, 2.0], run_id="seed", end=DAY + dt.timedelta(days=9), granularity=granularity)
    _, seed_rows = main_state(catalog)
    a, b = wap.audit_branch("run-a"), wap.audit_branch("run-b")
    wa = Window("read_on", DAY + dt.timedelta(days=1), DAY + dt.timedelta(days=2))
    wb = Window("read_on", DAY + dt.timedelta(days=6), DAY + dt.timedelta(days=6))
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def run(branch, window, kwh, run_id):
        try:
            write(catalog, window.start, kwh, run_id=run_id, branch=branch, end=window.end, granularity=granularity)
            barrier.wait(timeout=120)  # both audited before either publishes
            wap.publish(catalog, TABLE, branch, window=window, run_id=run_id)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=run, args=(a, wa, [10.0], "run-a")),
               threading.Thread(target=run, args=(b, wb, [20.0, 21.0, 22.0], "run-b"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    expected = sorted(
        [r for r in seed_rows if not (wa.start <= r[0] <= wa.end or wb.start <= r[0] <= wb.end)]
        + [(d, "m0", 10.0) for d in wa.days()]
        + [(wb.start, f"m{i}", v) for i, v in enumerate([20.0, 21.0, 22.0])]
    )
    _, rows = main_state(catalog)
    assert rows == expected
    table = catalog.load_table(TABLE)
    assert not [r for r in table.metadata.refs if wap.is_audit_branch(r)]
    runs = {s.summary.additional_properties.get("ratatouille.run-id") for s in table.snapshots() if s.summary}
    assert {"run-a", "run-b"} <= runs


def test_a_rebase_carries_only_the_audited_window(lake):
    """The audit branch forked from an older main; the rebase must not bring that older main's
    other days back."""
    catalog = lake
    branch = wap.audit_branch("run-late")
    write(catalog, DAY + dt.timedelta(days=8), [99.0], run_id="run-late", branch=branch)
    write(catalog, DAY + dt.timedelta(days=2), [3.5], run_id="run-direct")  # main moves meanwhile
    published = wap.publish(catalog, TABLE, branch, window=Window("read_on", DAY + dt.timedelta(days=8), DAY + dt.timedelta(days=8)),
                            run_id="run-late")
    assert published.how == "rebased"
    _, rows = main_state(catalog)
    assert [r for r in rows if r[0] == DAY + dt.timedelta(days=2)] == [(DAY + dt.timedelta(days=2), "m0", 3.5)]
    assert [r for r in rows if r[0] == DAY + dt.timedelta(days=8)] == [(DAY + dt.timedelta(days=8), "m0", 99.0)]
    assert len(rows) == 2 * 8 + 1 + 1
    newest = catalog.load_table(TABLE).current_snapshot().summary.additional_properties
    assert newest["ratatouille.run-id"] == "run-late" and newest[wap.REBASED_FROM_PROPERTY]


def test_audit_branches_expire_after_their_retention(lake):
    catalog = lake
    branch = wap.audit_branch("run-failed")
    write(catalog, DAY, [0.0], run_id="run-failed", branch=branch)
    assert wap.expire_audit_branches(catalog, older_than=dt.timedelta(days=7)) == []
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=8)
    assert [h.branch for h in wap.expire_audit_branches(catalog, older_than=dt.timedelta(days=7), now=later, dry_run=True)] == [branch]
    assert branch in catalog.load_table(TABLE).metadata.refs
    assert [h.branch for h in wap.expire_audit_branches(catalog, older_than=dt.timedelta(days=7), now=later)] == [branch]
    assert branch not in catalog.load_table(TABLE).metadata.refs


def test_a_dev_branch_is_the_target_when_one_is_set(lake):
    """In dev mode the audit branch forks from the dev branch and publishing moves it, never main."""
    catalog = lake
    before = main_state(catalog)
    write(catalog, DAY, [5.0], run_id="dev-1", branch="feature")
    branch = wap.audit_branch("dev-2")
    write_window(catalog, TABLE, readings(DAY + dt.timedelta(days=1), [6.0]), window=Window("read_on", DAY + dt.timedelta(days=1),
                 DAY + dt.timedelta(days=1)), run_id="dev-2", branch=branch, fork_from="feature")
    wap.publish(catalog, TABLE, branch, window=None, run_id="dev-2", target="feature")
    assert main_state(catalog) == before
    rows = branch_rows(catalog, "feature")
    assert (DAY, "m0", 5.0) in rows and (DAY + dt.timedelta(days=1), "m0", 6.0) in rows
