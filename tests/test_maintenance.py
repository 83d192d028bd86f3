"""The orphan-file sweep, on real Iceberg tables: writers killed with SIGKILL at random points,
expired snapshots, refused commits; afterwards the warehouse holds only what a snapshot references.

The referenced set the assertions compare with is pyiceberg's own inspection tables (all
manifests, all files, the metadata log), not the sweep's walk of the metadata."""

from __future__ import annotations

import datetime as dt
import multiprocessing as mp
import os
import random
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pytest

from ratatouille_assets.lakehouse import duck
from ratatouille_assets.lakehouse.catalog import load_catalog
from ratatouille_assets.lakehouse.maintenance import SweepRefusedError, sweep
from ratatouille_assets.lakehouse.write import MAX_SNAPSHOTS_PROPERTY, Window, write_window

TABLE = "bronze.killed"
D0 = dt.date(2024, 1, 1)
DAYS = 5


def rows_of(write: int) -> pa.Table:
    """Write number ``write``'s rows: its own day, its own count, labelled with its number."""
    day = D0 + dt.timedelta(days=write % DAYS)
    n = 50 + write % 13
    return pa.table({"id": pa.array(range(n), pa.int64()), "day": [day] * n, "write": pa.array([write] * n, pa.int64())})


def write_one(write: int) -> None:
    day = D0 + dt.timedelta(days=write % DAYS)
    write_window(load_catalog(), TABLE, rows_of(write), window=Window("day", day, day), run_id=f"w{write}")


def files_under(location: str) -> set[str]:
    root = location.removeprefix("file://")
    return {os.path.join(folder, name) for folder, _, names in os.walk(root) for name in names}


def referenced_by_pyiceberg(catalog, identifier: str) -> set[str]:
    """What the table references, from pyiceberg's inspection tables."""
    table = catalog.load_table(identifier)
    inspect = table.inspect
    paths = {table.metadata_location}
    paths |= set(inspect.metadata_log_entries().column("file").to_pylist())
    paths |= set(inspect.snapshots().column("manifest_list").to_pylist())
    paths |= set(inspect.all_manifests().column("path").to_pylist())
    paths |= set(inspect.all_files().column("file_path").to_pylist())
    return {p.removeprefix("file://") for p in paths}


def table_rows(settings, identifier: str) -> list[tuple]:
    location = load_catalog(settings).load_table(identifier).metadata_location
    return duck.connect(settings).execute(
        f"SELECT day, write, id FROM iceberg_scan('{location}') ORDER BY ALL").fetchall()


def killer(kills: int, seed: int, results) -> None:
    """Spawned: fork one writer per try and SIGKILL it at a random point of its write.

    Forked from a process that has imported everything but run nothing (no threads yet), so a
    writer starts in milliseconds and the kill lands inside the write, not inside imports."""
    rng = random.Random(seed)
    outcomes = []

    def fork_write(write: int) -> int:
        pid = os.fork()
        if pid == 0:
            try:
                write_one(write)
                os._exit(0)
            except BaseException:  # noqa: BLE001 - the child reports by exit code
                os._exit(1)
        return pid

    durations = []
    for write in range(3):  # uninterrupted writes: the table exists, and how long one takes
        started = time.monotonic()
        _, status = os.waitpid(fork_write(write), 0)
        assert os.waitstatus_to_exitcode(status) == 0
        durations.append(time.monotonic() - started)
    typical = statistics.median(durations)
    for write in range(3, 3 + kills):
        pid = fork_write(write)
        time.sleep(rng.uniform(0, 1.2 * typical))
        os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        outcomes.append((write, os.waitstatus_to_exitcode(status)))
    results.put((typical, outcomes))


@pytest.mark.slow  # ~20 s: fifty forked writers
def test_kill_9_at_random_points_then_the_sweep_leaves_only_referenced_files(settings):
    catalog = load_catalog(settings)
    write_window(catalog, TABLE, rows_of(0), window=Window("day", D0, D0), run_id="create")  # few snapshots kept
    with catalog.load_table(TABLE).transaction() as tx:
        tx.set_properties({MAX_SNAPSHOTS_PROPERTY: "4"})

    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    proc = ctx.Process(target=killer, args=(50, 1402, results))
    proc.start()
    typical, outcomes = results.get(timeout=900)
    proc.join(timeout=60)
    assert proc.exitcode == 0
    killed = [w for w, code in outcomes if code == -signal.SIGKILL]
    finished = [w for w, code in outcomes if code == 0]
    assert len(killed) >= 25, f"only {len(killed)} of 50 writers were killed mid-write (a write took {typical:.2f} s)"

    # The table is consistent: each day holds exactly one write's rows, and not an older one than
    # the last write of that day that finished (a killed writer may have committed before the kill).
    before = table_rows(settings, TABLE)
    by_day: dict[dt.date, set[int]] = {}
    for day, write, _ in before:
        by_day.setdefault(day, set()).add(write)
    for day, writes in by_day.items():
        assert len(writes) == 1, f"{day} mixes writes {writes}"
        (write,) = writes
        assert [r for r in before if r[0] == day] == sorted((day, write, i) for i in range(rows_of(write).num_rows))
        last_done = max([w for w in finished + [0, 1, 2] if (D0 + dt.timedelta(days=w % DAYS)) == day], default=-1)
        assert write >= last_done

    location = catalog.load_table(TABLE).location()
    referenced = referenced_by_pyiceberg(catalog, TABLE)
    orphans_before = files_under(location) - referenced
    assert orphans_before, "50 killed writes and expired snapshots left no orphan: the test proves nothing"

    result = sweep(catalog, TABLE, older_than=dt.timedelta(0), settings=settings)
    assert {f.path for f in result.orphans} == orphans_before
    assert files_under(location) == referenced_by_pyiceberg(catalog, TABLE) == referenced
    assert table_rows(settings, TABLE) == before
    # A second sweep finds nothing, and the table still takes writes.
    assert sweep(catalog, TABLE, older_than=dt.timedelta(0), settings=settings).orphans == []
    write_one(999)
    day = D0 + dt.timedelta(days=999 % DAYS)
    assert [r for r in table_rows(settings, TABLE) if r[0] == day] == [(day, 999, i) for i in range(rows_of(999).num_rows)]
    print(f"{len(killed)} killed, {len(finished)} finished, {len(orphans_before)} orphans swept "
          f"(a write took {typical * 1000:.0f} ms)")


def test_the_sweep_spares_young_files_and_a_dry_run_deletes_nothing(settings):
    catalog = load_catalog(settings)
    write_window(catalog, "bronze.young", rows_of(0), window=Window("day", D0, D0), run_id="r1")
    location = catalog.load_table("bronze.young").location().removeprefix("file://")
    stray = Path(location) / "data" / "day=2024-01-01" / "00000-0-killed-writer.parquet"
    stray.write_bytes(b"PAR1 half a file")

    # Just written: it may belong to a write that has not committed yet.
    result = sweep(catalog, "bronze.young", settings=settings)
    assert (result.orphans, result.too_new) == ([], 1) and stray.exists()

    old = time.time() - 2 * 86400
    os.utime(stray, (old, old))
    dry = sweep(catalog, "bronze.young", dry_run=True, settings=settings)
    assert [f.path for f in dry.orphans] == [str(stray)] and not dry.deleted and stray.exists()
    done = sweep(catalog, "bronze.young", settings=settings)
    assert done.deleted and not stray.exists()
    assert len(table_rows(settings, "bronze.young")) == rows_of(0).num_rows


def test_the_sweep_refuses_when_the_table_references_a_file_it_cannot_find(settings):
    catalog = load_catalog(settings)
    for write in range(3):
        day = D0 + dt.timedelta(days=write % DAYS)
        write_window(catalog, "bronze.damaged", rows_of(write), window=Window("day", day, day), run_id=f"r{write}")
    table = catalog.load_table("bronze.damaged")
    location = table.location().removeprefix("file://")
    lost = table.inspect.files().column("file_path").to_pylist()[0].removeprefix("file://")
    os.remove(lost)
    stray = Path(location) / "data" / "stray.parquet"
    stray.write_bytes(b"x")
    old = time.time() - 2 * 86400
    os.utime(stray, (old, old))

    with pytest.raises(SweepRefusedError, match=r"bronze\.damaged: 1 file\(s\) the table references were not found") as err:
        sweep(catalog, "bronze.damaged", older_than=dt.timedelta(0), settings=settings)
    assert os.path.basename(lost) in str(err.value)
    assert stray.exists()  # nothing deleted


def test_replays_leave_their_replaced_files_to_the_sweep_once_their_snapshots_expire(settings):
    catalog = load_catalog(settings)
    write_window(catalog, "bronze.replayed", rows_of(0), window=Window("day", D0, D0), run_id="r0")
    with catalog.load_table("bronze.replayed").transaction() as tx:
        tx.set_properties({MAX_SNAPSHOTS_PROPERTY: "2"})
    for replay in range(1, 8):
        write_window(catalog, "bronze.replayed", rows_of(0), window=Window("day", D0, D0), run_id=f"r{replay}")
    table = catalog.load_table("bronze.replayed")
    location = table.location()
    live_data = {p.removeprefix("file://") for p in table.inspect.all_files().column("file_path").to_pylist()}
    data_before = {p for p in files_under(location) if p.endswith(".parquet") and "/data/" in p}
    assert len(data_before) == 8 and len(live_data) < 8

    result = sweep(catalog, "bronze.replayed", older_than=dt.timedelta(0), settings=settings)
    data_after = {p for p in files_under(location) if p.endswith(".parquet") and "/data/" in p}
    assert data_after == live_data
    assert {f.path for f in result.orphans} >= data_before - live_data
    assert len(table_rows(settings, "bronze.replayed")) == rows_of(0).num_rows


def test_rat_sweep_reports_and_deletes(settings):
    catalog = load_catalog(settings)
    write_window(catalog, "silver.cli", rows_of(1), window=Window("day", D0 + dt.timedelta(days=1), D0 + dt.timedelta(days=1)), run_id="r1")
    location = catalog.load_table("silver.cli").location().removeprefix("file://")
    stray = Path(location) / "metadata" / "snap-orphan.avro"
    stray.write_bytes(b"avro")
    old = time.time() - 3 * 86400
    os.utime(stray, (old, old))
    rat = [sys.executable, "-m", "ratatouille_assets.cli", "sweep"]
    dry = subprocess.run([*rat, "--dry-run"], capture_output=True, text=True, env=os.environ, check=True)
    assert "silver.cli" in dry.stdout and str(stray) in dry.stdout and "would delete 1 file(s), 4 bytes" in dry.stdout
    assert stray.exists()
    bad = subprocess.run([*rat, "--older-than", "soon"], capture_output=True, text=True, env=os.environ)
    assert bad.returncode == 2 and "e.g. 30m, 6h, 2d" in bad.stderr
    done = subprocess.run([*rat, "silver.cli"], capture_output=True, text=True, env=os.environ, check=True)
    assert "deleted 1 file(s), 4 bytes in 1 table(s)" in done.stdout and not stray.exists()

    # A failed run's audit branch stays for its retention (7 days by default), then goes.
    write_window(catalog, "silver.cli", rows_of(2), window=Window("day", D0 + dt.timedelta(days=2), D0 + dt.timedelta(days=2)), run_id="r2", branch="audit-r2")
    kept = subprocess.run([*rat, "silver.cli"], capture_output=True, text=True, env=os.environ, check=True)
    assert "audit branch" not in kept.stdout and "audit-r2" in catalog.load_table("silver.cli").metadata.refs
    dry = subprocess.run([*rat, "--audit-older-than", "0s", "--dry-run"], capture_output=True, text=True,
                         env=os.environ, check=True)
    assert "audit branch audit-r2" in dry.stdout and "would be removed" in dry.stdout
    assert "audit-r2" in catalog.load_table("silver.cli").metadata.refs
    gone = subprocess.run([*rat, "--audit-older-than", "0s"], capture_output=True, text=True, env=os.environ, check=True)
    assert "audit branch audit-r2" in gone.stdout and "removed" in gone.stdout
    assert set(catalog.load_table("silver.cli").metadata.refs) == {"main"}


def writer(count: int, barrier, results) -> None:
    barrier.wait()
    for write in range(count):
        write_one(write)
    results.put(("writer", count))


def test_a_sweep_beside_a_writer_judges_the_newest_metadata(settings, caplog):
    """A writer commits (and drops old metadata files) while the sweep reads the table: the sweep
    must not take a metadata file the writer deleted for damage, nor delete the writer's files."""
    catalog = load_catalog(settings)
    write_one(0)
    with catalog.load_table(TABLE).transaction() as tx:
        tx.set_properties({"write.metadata.previous-versions-max": "1", MAX_SNAPSHOTS_PROPERTY: "2"})
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(2), ctx.Queue()
    proc = ctx.Process(target=writer, args=(40, barrier, results))
    proc.start()
    barrier.wait()
    sweeps = 0
    with caplog.at_level("INFO", logger="ratatouille_assets.lakehouse.maintenance"):
        while proc.is_alive() or sweeps == 0:
            sweep(catalog, TABLE, settings=settings)  # the default margin: the writer's files are young
            sweeps += 1
    proc.join(timeout=300)
    assert proc.exitcode == 0 and results.get(timeout=5) == ("writer", 40)
    retried = sum("committed to while being swept" in r.getMessage() for r in caplog.records)
    print(f"{sweeps} sweeps beside 40 commits, {retried} judged again")
    day = D0 + dt.timedelta(days=39 % DAYS)
    assert [r for r in table_rows(settings, TABLE) if r[0] == day] == [(day, 39, i) for i in range(rows_of(39).num_rows)]
