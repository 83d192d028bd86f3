"""Table maintenance on real Iceberg tables: expiry by policy, compaction, the orphan-file sweep
and health; writers and maintenance killed with SIGKILL at random points, writes racing
compaction; afterwards the warehouse holds only what a snapshot references and no row changed.

The referenced set the assertions compare with is pyiceberg's own inspection tables (all
manifests, all files, the metadata log), not the sweep's walk of the metadata."""

from __future__ import annotations

import datetime as dt
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pytest

from bench.killstorm import D0, DAYS, kill_maintenance, kill_writers, month_rows, rows_of, write_days, write_one
from bench.killstorm import WRITTEN as TABLE
from ratatouille_assets.lakehouse import duck
from ratatouille_assets.lakehouse.catalog import load_catalog
import json

from pyiceberg.manifest import ManifestFile

from ratatouille_assets.lakehouse.maintenance import (
    Policy,
    ReferenceCache,
    SweepRefusedError,
    expire_snapshots,
    health,
    referenced_sizes,
    sweep,
)
from ratatouille_assets.lakehouse.write import Window, write_window


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


@pytest.mark.slow  # ~20 s: fifty forked writers
def test_kill_9_at_random_points_then_the_sweep_leaves_only_referenced_files(settings):
    catalog = load_catalog(settings)
    write_window(catalog, TABLE, rows_of(0), window=Window("day", D0, D0), run_id="create")

    typical, outcomes = kill_writers(50, 1402)
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
    assert orphans_before, "50 killed writes left no orphan: the test proves nothing"

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


def test_health_reads_each_manifest_once_across_processes_and_the_deleting_sweep_never_trusts_the_cache(settings, monkeypatch):
    catalog = load_catalog(settings)
    for write in (0, 1, 5, 6, 10):  # replays of two days: older snapshots still reference replaced files
        day = D0 + dt.timedelta(days=write % DAYS)
        write_window(catalog, "bronze.cached", rows_of(write), window=Window("day", day, day), run_id=f"r{write}")
    policy = Policy(keep_days=0, keep_snapshots=100, orphan_age=dt.timedelta(hours=1))
    reads: list[str] = []
    fetch = ManifestFile.fetch_manifest_entry

    def counted(self, *args, **kwargs):  # pyiceberg's own read, counted
        reads.append(self.manifest_path)
        return fetch(self, *args, **kwargs)

    monkeypatch.setattr(ManifestFile, "fetch_manifest_entry", counted)
    table = catalog.load_table("bronze.cached")
    truth = referenced_sizes(table)
    assert truth.keys() >= {p.removeprefix("file://") for p in referenced_by_pyiceberg(catalog, "bronze.cached")}
    reads.clear()

    def current_manifests() -> set[str]:  # what the live-file figures read on every call
        now = catalog.load_table("bronze.cached")
        return {m.manifest_path for m in now.current_snapshot().manifests(now.io)}

    every = {p for p in truth if p.endswith("-m0.avro") or p.endswith("-m1.avro")}
    first = health(catalog, "bronze.cached", policy, settings=settings)
    cached = ReferenceCache.for_table(table, settings)
    assert cached.path.exists() and {r.removeprefix("file://") for r in reads} == every
    assert len(every) > len(current_manifests())  # older snapshots' manifests too
    reads.clear()
    again = health(catalog, "bronze.cached", policy, settings=settings)  # a later run's process: reads the file
    assert set(reads) == current_manifests() and again == first
    assert referenced_sizes(table, ReferenceCache.for_table(table, settings)) == truth

    # One more write (a delete and an append, two snapshots): only their manifests are read.
    before = {s.snapshot_id for s in catalog.load_table("bronze.cached").snapshots()}
    write_window(catalog, "bronze.cached", rows_of(15), window=Window("day", D0, D0), run_id="r15")
    after = catalog.load_table("bronze.cached")
    added = {m.manifest_path for s in after.snapshots() if s.snapshot_id not in before for m in s.manifests(after.io)}
    reads.clear()
    health(catalog, "bronze.cached", policy, settings=settings)
    allowed = added | current_manifests()
    assert {p for p in every if f"file://{p}" not in allowed and p not in allowed}  # manifests only the cache holds
    assert reads and set(reads) <= allowed

    # A cache that claims an orphan is referenced hides it from the health figures only; the sweep
    # that deletes reads the manifests themselves. An unreadable cache is read past.
    location = table.location().removeprefix("file://")
    stray = Path(location) / "data" / "day=2024-01-01" / "00000-0-killed-writer.parquet"
    stray.write_bytes(b"PAR1 half a file")
    old = time.time() - 2 * 86400
    os.utime(stray, (old, old))
    document = json.loads(cached.path.read_text())
    # Each file is kept once, however many manifests list it (a merged manifest lists every live file).
    paths = [path for path, _ in document["files"]]
    assert len(paths) == len(set(paths)) <= sum(len(v) for v in document["manifests"].values())
    first_manifest = next(iter(document["manifests"]))
    document["files"].append([str(stray), stray.stat().st_size])
    document["manifests"][first_manifest].append(len(document["files"]) - 1)
    cached.path.write_text(json.dumps(document))
    assert health(catalog, "bronze.cached", policy, settings=settings).orphan_files == 0
    done = sweep(catalog, "bronze.cached", settings=settings)
    assert done.deleted and [f.path for f in done.orphans] == [str(stray)] and not stray.exists()
    cached.path.write_text("{not json")
    assert health(catalog, "bronze.cached", policy, settings=settings).orphan_files == 0
    assert json.loads(cached.path.read_text())["manifests"]  # rewritten whole


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


def test_replays_keep_their_replaced_files_until_expiry_deletes_them(settings):
    catalog = load_catalog(settings)
    for replay in range(8):
        write_window(catalog, "bronze.replayed", rows_of(0), window=Window("day", D0, D0), run_id=f"r{replay}")
    table = catalog.load_table("bronze.replayed")
    location = table.location()
    data_files = lambda: {p for p in files_under(location) if p.endswith(".parquet") and "/data/" in p}  # noqa: E731
    # A write expires nothing: each replay is a delete and an append snapshot, all kept.
    assert len(data_files()) == 8 and len(table.metadata.snapshots) == 1 + 7 * 2

    result = expire_snapshots(catalog, "bronze.replayed", Policy(keep_days=0, keep_snapshots=2), settings=settings)
    table = catalog.load_table("bronze.replayed")
    assert len(result.expired) == 13 and len(table.metadata.snapshots) == 2
    live = {p.removeprefix("file://") for p in table.inspect.all_files().column("file_path").to_pylist()}
    assert data_files() == live and len(live) == 1  # the kept snapshots' one file, nothing else
    assert files_under(location) == referenced_by_pyiceberg(catalog, "bronze.replayed")
    assert result.deleted_bytes > 0
    assert sweep(catalog, "bronze.replayed", older_than=dt.timedelta(0), settings=settings).orphans == []
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
        tx.set_properties({"write.metadata.previous-versions-max": "1"})
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


# --- expiry, compaction, health, and maintenance beside writers -----------------------------------

def content(settings, identifier: str) -> list[tuple]:
    """Every row, ordered, read by DuckDB (not pyiceberg): what any reader sees."""
    location = load_catalog(settings).load_table(identifier).metadata_location
    return duck.connect(settings).execute(f"SELECT * FROM iceberg_scan('{location}') ORDER BY ALL").fetchall()


def live_data_files(catalog, identifier: str) -> set[str]:
    return set(catalog.load_table(identifier).inspect.files().column("file_path").to_pylist())


def test_expiry_keeps_exactly_the_policys_snapshots_and_every_branch_and_tag_head(settings):
    from pyiceberg.table.update.snapshot import ManageSnapshots

    catalog = load_catalog(settings)
    for i in range(10):  # ten days, one append snapshot each
        d = D0 + dt.timedelta(days=i)
        write_window(catalog, "silver.kept", month_rows(d), window=Window("day", d, d), run_id=f"r{i}")
        time.sleep(0.01)  # distinct commit times, so the age cut below falls between two of them
    table = catalog.load_table("silver.kept")
    by_time = sorted(table.metadata.snapshots, key=lambda s: s.timestamp_ms)
    assert len(by_time) == 10
    with table.transaction() as tx:
        ManageSnapshots(tx).create_tag(by_time[1].snapshot_id, "quarter-end").commit()
    # A dev branch forked at the fourth snapshot: its head is protected like main's.
    with catalog.load_table("silver.kept").transaction() as tx:
        ManageSnapshots(tx).create_branch(by_time[3].snapshot_id, "feature").commit()
    rows_before = content(settings, "silver.kept")

    # All snapshots young: nothing expires, however few the policy keeps by count.
    assert expire_snapshots(catalog, "silver.kept", Policy(keep_days=1, keep_snapshots=1), settings=settings).expired == []
    # Age the table so that the first six snapshots are past a day and the last four are not.
    now = by_time[5].timestamp_ms / 1000 + 86400 + 0.001
    old = {s.snapshot_id for s in by_time[:6]}
    heads = {by_time[1].snapshot_id, by_time[3].snapshot_id, by_time[9].snapshot_id}
    newest_three = {s.snapshot_id for s in by_time[-3:]}
    policy = Policy(keep_days=1, keep_snapshots=3)
    result = expire_snapshots(catalog, "silver.kept", policy, settings=settings, now=now)
    assert set(result.expired) == old - heads - newest_three == {by_time[i].snapshot_id for i in (0, 2, 4, 5)}
    table = catalog.load_table("silver.kept")
    assert {s.snapshot_id for s in table.metadata.snapshots} == {s.snapshot_id for s in by_time} - set(result.expired)
    assert {name: ref.snapshot_id for name, ref in table.metadata.refs.items()} == {
        "main": by_time[9].snapshot_id, "quarter-end": by_time[1].snapshot_id, "feature": by_time[3].snapshot_id}
    assert content(settings, "silver.kept") == rows_before
    # The tag still reads what it read, and the warehouse holds what the metadata references.
    assert table.scan(snapshot_id=by_time[1].snapshot_id).to_arrow().num_rows == 2 * month_rows(D0).num_rows
    assert files_under(table.location()) == referenced_by_pyiceberg(catalog, "silver.kept")
    # Run again: within policy, nothing more goes.
    assert expire_snapshots(catalog, "silver.kept", policy, settings=settings, now=now).expired == []


def test_an_in_flight_commits_files_are_never_swept_but_an_old_orphan_is(settings):
    """Maintenance runs while a write has written its data files and not yet committed (held in
    the write's pre-commit hook): those files are younger than the safety window and stay; the
    write then commits whole. An hour-old stray in the same folder goes."""
    from ratatouille_assets.lakehouse.maintenance import maintain

    catalog = load_catalog(settings)
    write_days(catalog, "silver.flight", [D0])
    location = catalog.load_table("silver.flight").location().removeprefix("file://")
    stray = Path(location) / "data" / "day_month=2024-01" / "00000-killed.parquet"
    stray.write_bytes(b"PAR1 half a file")
    old = time.time() - 2 * 3600
    os.utime(stray, (old, old))
    seen = {}

    def before_commit(attempt: int) -> None:
        if attempt == 1:
            seen["in_flight"] = files_under(location) - referenced_by_pyiceberg(catalog, "silver.flight") - {str(stray)}
            seen["result"] = maintain(catalog, "silver.flight", Policy(), run_id="maint", settings=settings)
            seen["after"] = files_under(location)

    d = D0 + dt.timedelta(days=1)
    write_window(catalog, "silver.flight", month_rows(d), window=Window("day", d, d), run_id="slow",
                 granularity="month", on_attempt=before_commit)
    assert seen["in_flight"] and all(p.endswith(".parquet") for p in seen["in_flight"])
    assert seen["in_flight"] <= seen["after"]  # every file of the write in flight survived
    assert [f.path for f in seen["result"].swept.orphans] == [str(stray)] and not stray.exists()
    assert seen["result"].health.young_unreferenced == len(seen["in_flight"])
    assert content(settings, "silver.flight") == sorted(
        tuple(r.values()) for t in (month_rows(D0), month_rows(d)) for r in t.to_pylist())


def test_compaction_keeps_the_content_and_merges_each_partitions_small_files(settings):
    from ratatouille_assets.lakehouse.maintenance import compact, health

    catalog = load_catalog(settings)
    days = [D0 + dt.timedelta(days=i) for i in range(45)]  # January (31 files) and February (14)
    write_days(catalog, "gold.monthly", days)
    before = content(settings, "gold.monthly")
    files_before = live_data_files(catalog, "gold.monthly")
    assert len(files_before) == 45
    sick = health(catalog, "gold.monthly", Policy(), settings=settings)
    assert (sick.data_files, sick.small_files, sick.partitions, sick.max_files_per_partition) == (45, 45, 2, 31)
    assert any("small" in p for p in sick.problems(Policy()))

    result = compact(catalog, "gold.monthly", Policy(), run_id="compact-1")
    assert sorted(len(g.inputs) for g in result.rewritten) == [14, 31] and result.files_added == 2
    after_files = live_data_files(catalog, "gold.monthly")
    assert len(after_files) == 2 and not after_files & files_before
    assert content(settings, "gold.monthly") == before  # same rows, same values, same types
    table = catalog.load_table("gold.monthly")
    summary = table.current_snapshot().summary
    assert summary.additional_properties["ratatouille.maintenance"] == "compact"
    assert summary.operation.value == "overwrite"
    healed = health(catalog, "gold.monthly", Policy(), settings=settings)
    assert (healed.data_files, healed.small_files, healed.problems(Policy())) == (2, 0, [])
    # Nothing left to merge: a second pass commits nothing.
    assert compact(catalog, "gold.monthly", Policy(), run_id="compact-2").rewritten == []
    assert len(catalog.load_table("gold.monthly").metadata.snapshots) == 46
    # A small target packs in groups: 31 January files under a ~3-file target make several files.
    write_days(catalog, "gold.packed", days[:31])
    sizes = sorted(catalog.load_table("gold.packed").inspect.files().column("file_size_in_bytes").to_pylist())
    target = Policy(target_file_bytes=sizes[-1] * 3)
    packed = compact(catalog, "gold.packed", target, run_id="pack")
    assert 1 < packed.files_added < 31 and all(2 <= len(g.inputs) <= 3 for g in packed.rewritten)
    assert sum(len(g.inputs) for g in packed.rewritten) >= 30


def test_a_write_racing_a_compaction_of_the_same_partition_loses_nothing(settings):
    """Both orders: a write commits while compaction is about to commit (compaction skips that
    partition); compaction commits while a write is about to (the write commits on top)."""
    from ratatouille_assets.lakehouse.maintenance import compact

    catalog = load_catalog(settings)
    days = [D0 + dt.timedelta(days=i) for i in range(40)]
    write_days(catalog, "gold.race", days)
    replaced = D0 + dt.timedelta(days=3)  # in January
    new_rows = month_rows(replaced, n=7).set_column(3, "note", pa.array(["replayed"] * 7))

    def expected(replays: dict[dt.date, pa.Table]) -> list[tuple]:
        tables = [replays.get(d, month_rows(d)) for d in days]
        return sorted(tuple(r.values()) for t in tables for r in t.to_pylist())

    # 1. The write lands between compaction's read and its commit.
    def write_meanwhile(attempt: int) -> None:
        if attempt == 1:
            write_window(catalog, "gold.race", new_rows, window=Window("day", replaced, replaced), run_id="racer",
                         granularity="month")

    result = compact(catalog, "gold.race", Policy(), run_id="compact", on_attempt=write_meanwhile)
    assert [g.partition for g in result.skipped] == ["day_month=2024-01"]
    assert [g.partition for g in result.rewritten] == ["day_month=2024-02"] and result.attempts == 2
    assert content(settings, "gold.race") == expected({replaced: new_rows})
    # The skipped group's new files were deleted, not left as orphans.
    leftover = files_under(catalog.load_table("gold.race").location()) - referenced_by_pyiceberg(catalog, "gold.race")
    assert not [p for p in leftover if "/data/" in p]

    # 2. Compaction lands between a write's data files and its commit.
    again = month_rows(replaced, n=3)

    def compact_meanwhile(attempt: int) -> None:
        if attempt == 1:
            assert compact(catalog, "gold.race", Policy(), run_id="compact-2").files_added == 1

    written = write_window(catalog, "gold.race", again, window=Window("day", replaced, replaced), run_id="racer-2",
                           granularity="month", on_attempt=compact_meanwhile)
    assert written.attempts == 2
    assert content(settings, "gold.race") == expected({replaced: again})


@pytest.mark.slow  # ~40 s: maintenance killed eight times
def test_maintenance_killed_at_any_point_leaves_a_readable_table_and_the_sweep_leaves_no_orphan(settings):
    from ratatouille_assets.lakehouse.maintenance import health, maintain

    catalog = load_catalog(settings)
    write_days(catalog, "gold.killed", [D0 + dt.timedelta(days=i) for i in range(60)])
    policy_args = {"keep_days": 0, "keep_snapshots": 3, "orphan_age": dt.timedelta(0)}

    def readable(kill: int) -> None:
        # Readable after every kill, and every day holds exactly one write's rows.
        rows = content(settings, "gold.killed")
        assert sorted({r[1] for r in rows}) == [D0 + dt.timedelta(days=i) for i in range(60)]
        for d in {r[1] for r in rows}:
            assert sorted(r for r in rows if r[1] == d) == sorted(tuple(x.values()) for x in month_rows(d).to_pylist())

    kill_maintenance(8, 1603, policy_args, after_each=readable)
    location = catalog.load_table("gold.killed").location()
    leftovers = files_under(location) - referenced_by_pyiceberg(catalog, "gold.killed")
    result = maintain(catalog, "gold.killed", Policy(**policy_args), run_id="final", settings=settings)
    assert files_under(location) == referenced_by_pyiceberg(catalog, "gold.killed")
    assert result.health.orphan_bytes == 0 and result.health.problems(Policy(**policy_args)) == []
    assert health(catalog, "gold.killed", Policy(**policy_args), settings=settings).orphan_files == 0
    print(f"8 kills: {len(leftovers)} leftover file(s) before the final pass, "
          f"{result.health.data_files} data files after")


def test_a_restore_of_a_snapshot_expired_meanwhile_commits_nothing(settings):
    """A rollback reads an old snapshot's files, then maintenance expires that snapshot and
    deletes them before the rollback commits: the catalog refuses the commit (nothing points at
    deleted files) and the error says what happened."""
    from ratatouille_assets.lakehouse.errors import SnapshotExpiredError
    from ratatouille_assets.lakehouse.write import restore_snapshot

    catalog = load_catalog(settings)
    for i in range(3):  # the same day replaced three times
        write_window(catalog, "gold.restored", month_rows(D0, n=10 + i), window=Window("day", D0, D0), run_id=f"r{i}")
    table = catalog.load_table("gold.restored")
    first = min(table.metadata.snapshots, key=lambda s: s.timestamp_ms).snapshot_id
    current = content(settings, "gold.restored")

    def expire_meanwhile(attempt: int) -> None:
        result = expire_snapshots(catalog, "gold.restored", Policy(keep_days=0, keep_snapshots=1), settings=settings)
        assert first in result.expired and result.deleted_files > 0

    with pytest.raises(SnapshotExpiredError, match=f"snapshot {first} expired"):
        restore_snapshot(catalog, "gold.restored", first, run_id="rollback", on_attempt=expire_meanwhile)
    assert content(settings, "gold.restored") == current
    assert len(current) == 12
    assert files_under(catalog.load_table("gold.restored").location()) >= referenced_by_pyiceberg(catalog, "gold.restored")
