"""Table maintenance: snapshot expiry by policy, deletion of what expired, compaction of small
files, the orphan-file sweep, and the health figures that say whether a table needs any of it.

:func:`maintain` runs them on one table (compaction before expiry, so what compaction replaced
can expire in the same pass); the Dagster job and ``rat maintain`` call it. Nothing here runs
inside a write: a write only commits, and maintenance, on its schedule, keeps what the policy (:class:`Policy`, from the ``RATATOUILLE_KEEP_*`` settings) says to keep.

**Expiry.** A snapshot expires when it is older than ``keep_days`` *and* not among the table's
newest ``keep_snapshots``; a branch or tag head never does. Audit branches of failed runs are
removed first once past their retention. The files only expired snapshots referenced (data files,
manifests, manifest lists) are then deleted: they are judged against the metadata as committed
*after* the expiry, so a write that landed meanwhile keeps what it references.

**Orphans.** A table's folder also holds files no metadata references: data files of a writer
killed before its commit, manifests and metadata files of a commit the catalog refused or that was
interrupted. What is referenced, per table: the current metadata file and those its metadata log
names, every snapshot's manifest list (all branches and tags), every manifest those lists name,
every live data or delete file of those manifests, and statistics files. Only files under the
table's ``data/`` and ``metadata/`` folders are candidates, and only those older than the safety
window (``orphan_minutes``, an hour by default): a writer running now has written its data files
but not yet committed them. Before deleting anything the sweep checks that every referenced data
file, manifest and manifest list was found by its listing (metadata files are left out: a commit
deletes old ones): a referenced file the listing did not see means the listing and the table
disagree on paths (a moved warehouse, an encoding the sweep does not know), and deleting by that
listing could delete live data, so the table is skipped with an error instead.

**Compaction.** Per partition, files smaller than 75% of ``target_file_mb`` are packed into groups
of up to that size and each group is rewritten as one file (``write.rewrite_files``: one commit
that removes exactly those files; a partition some other commit changed meanwhile is skipped).

**Safety.** Every step is a commit that either lands whole or not at all, judged against the
table as it is at commit time; killed anywhere, the table stays readable and what is left over is
an unreferenced file the next sweep removes.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
import json
import logging
import os
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import CommitFailedException
from pyiceberg.table.snapshots import Snapshot
from pyiceberg.table import Table
from sqlalchemy.exc import OperationalError

from ratatouille_assets.lakehouse import s3
from ratatouille_assets.lakehouse.errors import LakehouseError
from ratatouille_assets.lakehouse.wap import HeldBranch, expire_audit_branches
from ratatouille_assets.lakehouse.write import (
    FileGroup,
    RetryPolicy,
    RewriteResult,
    _catalog_locked,
    live_files_by_partition,
    rewrite_files,
)
from ratatouille_assets.settings import Settings, get_settings

log = logging.getLogger(__name__)

DEFAULT_OLDER_THAN = dt.timedelta(hours=1)
_SWEPT_FOLDERS = ("data", "metadata")
_ATTEMPTS = 3


class SweepRefusedError(LakehouseError):
    """The sweep would have deleted a file the table references: nothing was deleted."""


@dataclasses.dataclass(frozen=True)
class ListedFile:
    path: str  # a local path or an s3:// URI
    size: int
    modified: float  # seconds since the epoch


@dataclasses.dataclass
class SweepResult:
    table: str
    referenced: int = 0
    orphans: list[ListedFile] = dataclasses.field(default_factory=list)  # deleted, or to delete on a dry run
    too_new: int = 0  # unreferenced, but younger than older_than: kept
    deleted: bool = False

    @property
    def orphan_bytes(self) -> int:
        return sum(f.size for f in self.orphans)


def referenced_files(table: Table, cache: ReferenceCache | None = None) -> set[str]:
    """Every file ``table``'s metadata reaches (normalized with ``_key``)."""
    return set(referenced_sizes(table, cache))


def referenced_sizes(table: Table, cache: ReferenceCache | None = None) -> dict[str, int | None]:
    """Every file ``table``'s metadata reaches, with its size where the metadata records one.

    With ``cache``, what each manifest list and manifest holds is read from it where it has them
    (both are immutable files, named uniquely) and only the new ones are read from the warehouse."""
    metadata = table.metadata
    io = table.io
    cache = cache or ReferenceCache(None)
    found: dict[str, int | None] = {table.metadata_location: None}
    found.update((entry.metadata_file, None) for entry in metadata.metadata_log)
    found.update((stats.statistics_path, stats.file_size_in_bytes) for stats in getattr(metadata, "statistics", []) or [])
    found.update((stats.statistics_path, stats.file_size_in_bytes)
                 for stats in getattr(metadata, "partition_statistics", []) or [])
    manifests: dict[str, tuple[int, Snapshot]] = {}
    for snapshot in metadata.snapshots:
        found[snapshot.manifest_list] = None
        listed = cache.manifest_list(snapshot.manifest_list, lambda s=snapshot: [
            (m.manifest_path, m.manifest_length) for m in s.manifests(io)])
        for path, length in listed:
            manifests.setdefault(path, (length, snapshot))

    def entries(path: str, snapshot: Snapshot) -> list[tuple[str, int]]:
        manifest = next(m for m in snapshot.manifests(io) if m.manifest_path == path)
        return [(e.data_file.file_path, e.data_file.file_size_in_bytes)
                for e in manifest.fetch_manifest_entry(io, discard_deleted=True)]

    for path, (length, snapshot) in manifests.items():
        found[path] = length
        found.update(cache.manifest(path, lambda p=path, s=snapshot: entries(p, s)))
    cache.save()
    return {_key(path): size for path, size in found.items()}


class ReferenceCache:
    """What a table's manifest lists and manifests hold, kept between processes in one JSON file
    per table (``<home>/cache/references/<table uuid>.json``; ``None``: no cache).

    Reading every manifest of every snapshot is most of a table's health check (1.3 of 1.7 s over
    20 tables after a month of daily runs), and each run adds one or two manifests a table. The
    file keeps only what the table references now, so it does not grow with what expired. It
    serves the health figures' dry-run sweep only: the sweep that deletes reads the warehouse.
    """

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._lists: dict[str, list] = {}
        self._manifests: dict[str, list] = {}
        self._used_lists: dict[str, list] = {}
        self._used_manifests: dict[str, list] = {}
        if path is not None:
            try:
                document = json.loads(path.read_text())
                files = [tuple(item) for item in document["files"]]
                self._lists = dict(document["manifest_lists"])
                self._manifests = {m: [files[i] for i in indices] for m, indices in document["manifests"].items()}
            except (OSError, ValueError, KeyError, TypeError, IndexError):
                pass  # none yet, or unreadable: read the warehouse

    @classmethod
    def for_table(cls, table: Table, settings: Settings) -> ReferenceCache:
        return cls(Path(settings.home) / "cache" / "references" / f"{table.metadata.table_uuid}.json")

    def manifest_list(self, path: str, read) -> list[tuple[str, int]]:
        """(manifest, length) of each manifest the list names; ``read()`` where not cached."""
        return self._lookup(self._lists, self._used_lists, path, read)

    def manifest(self, path: str, read) -> list[tuple[str, int]]:
        """(file, size) of each live entry of the manifest; ``read()`` where not cached."""
        return self._lookup(self._manifests, self._used_manifests, path, read)

    @staticmethod
    def _lookup(known: dict[str, list], used: dict[str, list], path: str, read) -> list[tuple]:
        found = known.get(path)
        if found is None:
            found = [list(item) for item in read()]
        used[path] = found  # kept when the cache is saved: the table references it now
        return [tuple(item) for item in found]

    def save(self) -> None:
        if self.path is None:
            return
        # Each snapshot's manifests list mostly the same files (a merged manifest holds every live
        # file of the table): every file is written once and the manifests name it by its index.
        index: dict[tuple, int] = {}
        manifests = {m: [index.setdefault(tuple(item), len(index)) for item in entries]
                     for m, entries in self._used_manifests.items()}
        document = {"files": list(index), "manifest_lists": self._used_lists, "manifests": manifests}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            temporary = self.path.with_suffix(f".{os.getpid()}.tmp")
            temporary.write_text(json.dumps(document))
            os.replace(temporary, self.path)  # whole or not at all, whoever writes last
        except OSError as exc:
            log.info("could not keep the reference cache %s: %s", self.path, exc)


def sweep(
    catalog: Catalog,
    identifier: str,
    *,
    older_than: dt.timedelta = DEFAULT_OLDER_THAN,
    dry_run: bool = False,
    settings: Settings | None = None,
    now: float | None = None,
) -> SweepResult:
    """Delete the files under ``identifier``'s folder that no snapshot references (see the module doc).

    A dry run (the health figures) reads what the manifests hold through :class:`ReferenceCache`;
    a sweep that deletes reads every manifest from the warehouse."""
    settings = settings or get_settings()
    for attempt in range(1, _ATTEMPTS + 1):
        table = catalog.load_table(identifier)
        try:
            return _sweep(table, identifier, older_than, dry_run, settings, now)
        except SweepRefusedError:
            # Another sweep may have deleted what this view's older snapshots still held: judge
            # the new metadata. The same damage again is real.
            if attempt == _ATTEMPTS or catalog.load_table(identifier).metadata_location == table.metadata_location:
                raise
            log.info("%s: committed to while being swept; judging its new metadata", identifier)
    raise AssertionError("unreachable")


def _sweep(table: Table, identifier: str, older_than: dt.timedelta, dry_run: bool, settings: Settings,
           now: float | None) -> SweepResult:
    referenced = referenced_files(table, ReferenceCache.for_table(table, settings) if dry_run else None)
    cutoff = (time.time() if now is None else now) - older_than.total_seconds()
    result = SweepResult(table=identifier, referenced=len(referenced))
    listed: set[str] = set()
    for folder in _SWEPT_FOLDERS:
        for item in _listing(_join(table.location(), folder), settings):
            key = _key(item.path)
            listed.add(key)
            if key in referenced:
                continue
            if item.modified > cutoff:
                result.too_new += 1
            else:
                result.orphans.append(item)
    folders = [_join(table.location(), folder) for folder in _SWEPT_FOLDERS]
    # A commit deletes metadata files beyond the newest 20 (or what the table sets): one this view
    # references may be gone for good reason. Nothing else a table references is ever deleted.
    unseen = sorted(p for p in referenced if p not in listed and not p.endswith(".metadata.json")
                    and any(_under(p, folder) for folder in folders))
    if unseen:
        raise SweepRefusedError(
            f"{identifier}: {len(unseen)} file(s) the table references were not found under "
            f"{table.location()} (first: {unseen[0]}); nothing was deleted. A referenced file that is "
            "missing means the table is already damaged; one listed under another name means the "
            "listing and the table disagree on paths. Check the warehouse location and that file."
        )
    if not dry_run and result.orphans:
        # Data files first: a sweep interrupted half-way leaves manifests naming nothing, never the reverse.
        ordered = sorted(result.orphans, key=lambda f: "/metadata/" in f.path)
        _delete([f.path for f in ordered], settings)
        result.deleted = True
    log.info("%s: %d orphan file(s), %d bytes%s; %d referenced, %d too new to judge", identifier,
             len(result.orphans), result.orphan_bytes, " deleted" if result.deleted else "", result.referenced,
             result.too_new)
    return result


def _key(path: str) -> str:
    """One spelling per file: a local file as the path pyiceberg opens, an S3 URI as it is.

    pyiceberg opens ``file://`` URIs by their path as written, percent signs and all (a warehouse
    under ``/tmp/a b`` is written to ``/tmp/a%20b``): the sweep lists and deletes the same way, so
    it looks where the files are, not where the URI would decode to."""
    if path.startswith("file:"):
        parsed = urllib.parse.urlparse(path)
        return os.path.normpath(parsed.netloc + parsed.path)
    if path.startswith("/"):
        return os.path.normpath(path)
    return path


def _join(location: str, folder: str) -> str:
    return location.rstrip("/") + "/" + folder


def _under(key: str, location: str) -> bool:
    root = _key(location).rstrip("/") + "/"
    return key.startswith(root)


def _listing(prefix: str, settings: Settings) -> Iterator[ListedFile]:
    if s3.is_s3(prefix):
        client = s3.client(settings)
        for obj in s3.list_objects(client, prefix.rstrip("/") + "/"):
            modified = dt.datetime.fromisoformat(obj.last_modified).timestamp()
            yield ListedFile(path=obj.uri, size=obj.size, modified=modified)
        return
    root = _key(prefix)
    for folder, _dirs, names in os.walk(root):
        for name in names:
            path = os.path.join(folder, name)
            try:
                info = os.stat(path)
            except FileNotFoundError:  # deleted while listed (another writer's cleanup)
                continue
            yield ListedFile(path=path, size=info.st_size, modified=info.st_mtime)


def _delete(paths: list[str], settings: Settings) -> None:
    remote = [p for p in paths if s3.is_s3(p)]
    if remote:
        s3.delete(s3.client(settings), remote)
    for path in paths:
        if not s3.is_s3(path):
            try:
                os.remove(path)
            except FileNotFoundError:
                pass


# --- policy ---------------------------------------------------------------------------------------

# Iceberg's own rewrite treats a file under 75% of the target size as small.
SMALL_FILE_SHARE = 0.75


@dataclasses.dataclass(frozen=True)
class Policy:
    """What maintenance keeps, what it calls small, and when health warns."""

    keep_days: float = 7.0
    keep_snapshots: int = 100
    orphan_age: dt.timedelta = DEFAULT_OLDER_THAN
    target_file_bytes: int = 128 * 1024**2
    audit_retention: dt.timedelta = dt.timedelta(days=7)
    # Health warns beyond these (after maintenance, a table within its policy is under all of them).
    max_snapshots: int = 1000
    max_small_file_ratio: float = 0.5
    max_metadata_bytes: int = 16 * 1024**2

    @classmethod
    def from_settings(cls, settings: Settings) -> Policy:
        return cls(
            keep_days=settings.keep_days,
            keep_snapshots=settings.keep_snapshots,
            orphan_age=dt.timedelta(minutes=settings.orphan_minutes),
            target_file_bytes=settings.target_file_mb * 1024**2,
            audit_retention=dt.timedelta(days=settings.audit_retention_days),
        )

    @property
    def small_file_bytes(self) -> int:
        return int(self.target_file_bytes * SMALL_FILE_SHARE)

    def describe(self) -> str:
        return (f"keep snapshots younger than {self.keep_days:g} day(s) and the newest {self.keep_snapshots}; "
                f"orphans older than {self.orphan_age}; compact files under {self.small_file_bytes:,} bytes")


# --- expiry ---------------------------------------------------------------------------------------

@dataclasses.dataclass
class ExpireResult:
    table: str
    expired: list[int] = dataclasses.field(default_factory=list)  # snapshot ids
    deleted_files: int = 0
    deleted_bytes: int = 0  # data files and manifests (manifest lists carry no size in the metadata)
    kept: int = 0


def expirable(metadata, policy: Policy, now: float | None = None) -> list[int]:
    """The snapshots ``policy`` lets go: older than ``keep_days``, beyond the newest
    ``keep_snapshots``, and the head of no branch or tag."""
    cutoff_ms = ((time.time() if now is None else now) - policy.keep_days * 86400) * 1000
    protected = {ref.snapshot_id for ref in metadata.refs.values()}
    newest_first = sorted(metadata.snapshots, key=lambda snap: (snap.timestamp_ms, snap.sequence_number or 0),
                          reverse=True)
    return [snap.snapshot_id for snap in newest_first[policy.keep_snapshots:]
            if snap.snapshot_id not in protected and snap.timestamp_ms < cutoff_ms]


def expire_snapshots(
    catalog: Catalog,
    identifier: str,
    policy: Policy,
    *,
    dry_run: bool = False,
    settings: Settings | None = None,
    now: float | None = None,
    retry: RetryPolicy | None = None,
) -> ExpireResult:
    """Expire what ``policy`` lets go in one commit, then delete the files no kept snapshot references."""
    settings = settings or get_settings()
    retry = retry or RetryPolicy()
    started = time.monotonic()
    for attempt in itertools.count(1):
        table = catalog.load_table(identifier)
        ids = expirable(table.metadata, policy, now)
        result = ExpireResult(table=identifier, expired=ids, kept=len(table.metadata.snapshots) - len(ids))
        if not ids or dry_run:
            return result
        before = referenced_sizes(table)
        try:
            table.maintenance.expire_snapshots().by_ids(ids).commit()
            break
        except (CommitFailedException, OperationalError, ValueError) as exc:
            # Another maintenance run expired some of them first (ValueError: no such snapshot), or
            # the catalog was busy: plan again on the table as it is now.
            if isinstance(exc, OperationalError) and not _catalog_locked(exc):
                raise
            if retry.exhausted(attempt, time.monotonic() - started):
                raise
            time.sleep(retry.delay(attempt))
    # Judged on the metadata as committed after the expiry: whatever a write that landed meanwhile
    # references is in ``after``. A file referenced before and not after is one only expired
    # snapshots read, so it is deleted now (no safety window: it was committed, not in flight).
    after = referenced_files(catalog.load_table(identifier))
    folders = [_join(table.location(), folder) for folder in _SWEPT_FOLDERS]
    gone = [path for path in before if path not in after and any(_under(path, f) for f in folders)]
    # Data files first: interrupted half-way, what is left is manifests naming nothing, never the reverse.
    gone.sort(key=lambda p: "/metadata/" in p)
    _delete(gone, settings)
    result.deleted_files = len(gone)
    result.deleted_bytes = sum(before[p] or 0 for p in gone)
    log.info("%s: expired %d snapshot(s), deleted %d file(s) (%d bytes) only they referenced",
             identifier, len(ids), len(gone), result.deleted_bytes)
    return result


# --- compaction -----------------------------------------------------------------------------------

def plan_compaction(table: Table, policy: Policy) -> list[FileGroup]:
    """Per partition, its small files packed in order into groups of up to the target size; a
    group of one file is left alone (rewriting it gains nothing)."""
    groups = []
    for partition, files in live_files_by_partition(table).items():
        small = [f for f in files.values() if f.file_size_in_bytes < policy.small_file_bytes]
        if len(small) < 2:
            continue
        small.sort(key=lambda f: f.file_path)
        current: list = []
        size = 0
        bins = []
        for data_file in small:
            if current and size + data_file.file_size_in_bytes > policy.target_file_bytes:
                bins.append(current)
                current, size = [], 0
            current.append(data_file)
            size += data_file.file_size_in_bytes
        bins.append(current)
        groups += [FileGroup(partition, tuple(b), frozenset(files)) for b in bins if len(b) > 1]
    return groups


def compact(catalog: Catalog, identifier: str, policy: Policy, *, run_id: str, dry_run: bool = False,
            on_attempt=None) -> RewriteResult:
    """Rewrite each partition's small files as fewer files, one commit (see the module doc)."""
    table = catalog.load_table(identifier)
    groups = plan_compaction(table, policy)
    if dry_run or not groups:
        return RewriteResult(table=identifier, rewritten=groups if dry_run else [])
    if any(task.delete_files for task in table.scan().plan_files()):
        # Delete files are applied at read; a rewrite would have to fold them in. Ratatouille
        # never writes any, so a table that has them was written by another engine: left alone.
        log.warning("%s: has delete files; compaction leaves it to the engine that wrote them", identifier)
        return RewriteResult(table=identifier)
    result = rewrite_files(catalog, identifier, groups, run_id=run_id, on_attempt=on_attempt)
    log.info("%s: compacted %d file(s) in %d partition(s) into %d; %d group(s) skipped (partition changed)",
             identifier, sum(len(g.inputs) for g in result.rewritten), len({g.partition for g in result.rewritten}),
             result.files_added, len(result.skipped))
    return result


# --- health ---------------------------------------------------------------------------------------

@dataclasses.dataclass
class Health:
    table: str
    snapshots: int
    expirable: int  # snapshots the policy would expire now (maintenance has not run, or failed)
    data_files: int
    partitions: int
    small_files: int  # small files sharing a partition with another small file: what compaction merges
    max_files_per_partition: int
    busiest_partition: str
    orphan_files: int  # unreferenced and older than the safety window
    orphan_bytes: int
    young_unreferenced: int  # unreferenced but inside the safety window (a write in flight, perhaps)
    metadata_bytes: int
    data_bytes: int

    @property
    def small_file_ratio(self) -> float:
        return self.small_files / self.data_files if self.data_files else 0.0

    def problems(self, policy: Policy) -> list[str]:
        """What is out of bounds, in words (empty: healthy)."""
        out = []
        if self.expirable:
            out.append(f"{self.expirable} snapshot(s) past the retention policy are still kept")
        if self.snapshots > policy.max_snapshots:
            out.append(f"{self.snapshots} snapshots (over {policy.max_snapshots}): every commit rewrites them all")
        if self.data_files >= 10 and self.small_file_ratio > policy.max_small_file_ratio:
            out.append(f"{self.small_file_ratio:.0%} of {self.data_files} data files are small and could be "
                       f"merged (most in {self.busiest_partition or 'the table'}: {self.max_files_per_partition})")
        if self.orphan_files:
            out.append(f"{self.orphan_files} orphan file(s), {self.orphan_bytes:,} bytes, older than the safety window")
        if self.metadata_bytes > policy.max_metadata_bytes:
            out.append(f"current metadata file is {self.metadata_bytes:,} bytes (over {policy.max_metadata_bytes:,})")
        return out


def health(catalog: Catalog, identifier: str, policy: Policy, *, settings: Settings | None = None,
           now: float | None = None, swept: SweepResult | None = None) -> Health:
    """The figures of one table as it is now (reads its metadata and lists its folder; ``swept``:
    a sweep just made, whose listing then serves instead of a second one)."""
    settings = settings or get_settings()
    table = catalog.load_table(identifier)
    live = live_files_by_partition(table)
    small = sum(n for n in (sum(1 for f in files.values() if f.file_size_in_bytes < policy.small_file_bytes)
                            for files in live.values()) if n > 1)
    busiest = max(live.items(), key=lambda item: len(item[1]), default=("", {}))
    if swept is None or swept.deleted or swept.orphans:
        swept = sweep(catalog, identifier, older_than=policy.orphan_age, dry_run=True, settings=settings, now=now)
    return Health(
        table=identifier,
        snapshots=len(table.metadata.snapshots),
        expirable=len(expirable(table.metadata, policy, now)),
        data_files=sum(len(files) for files in live.values()),
        partitions=len(live),
        small_files=small,
        max_files_per_partition=len(busiest[1]),
        busiest_partition=busiest[0],
        orphan_files=len(swept.orphans),
        orphan_bytes=swept.orphan_bytes,
        young_unreferenced=swept.too_new,
        metadata_bytes=len(table.io.new_input(table.metadata_location)),
        data_bytes=sum(f.file_size_in_bytes for files in live.values() for f in files.values()),
    )


# --- all of it ------------------------------------------------------------------------------------

@dataclasses.dataclass
class MaintenanceResult:
    table: str
    audit_branches: list[HeldBranch]
    expired: ExpireResult
    compacted: RewriteResult
    swept: SweepResult
    health: Health

    def describe(self) -> str:
        parts = [f"{len(self.expired.expired)} snapshot(s) expired ({self.expired.deleted_files} file(s) deleted)"]
        if self.audit_branches:
            parts.append(f"{len(self.audit_branches)} audit branch(es) removed")
        merged = sum(len(g.inputs) for g in self.compacted.rewritten)
        parts.append(f"{merged} small file(s) compacted into {self.compacted.files_added}"
                     + (f", {len(self.compacted.skipped)} group(s) skipped (partition changed)" if self.compacted.skipped else ""))
        parts.append(f"{len(self.swept.orphans)} orphan(s) swept ({self.swept.orphan_bytes:,} bytes)")
        return "; ".join(parts)


def maintain(
    catalog: Catalog,
    identifier: str,
    policy: Policy,
    *,
    run_id: str,
    dry_run: bool = False,
    settings: Settings | None = None,
    now: float | None = None,
) -> MaintenanceResult:
    """Everything, in order: audit branches past retention, compaction, expiry and the files it
    frees, the orphan sweep, then the health of the table as it was left."""
    settings = settings or get_settings()
    moment = dt.datetime.fromtimestamp(time.time() if now is None else now, dt.UTC)
    held = expire_audit_branches(catalog, older_than=policy.audit_retention, now=moment, dry_run=dry_run,
                                 tables=[identifier])
    # Compaction first: the snapshot it supersedes then expires in the same pass (when the policy
    # lets it), and the small files go with it.
    compacted = compact(catalog, identifier, policy, run_id=run_id, dry_run=dry_run)
    expired = expire_snapshots(catalog, identifier, policy, dry_run=dry_run, settings=settings, now=now)
    swept = sweep(catalog, identifier, older_than=policy.orphan_age, dry_run=dry_run, settings=settings, now=now)
    return MaintenanceResult(identifier, held, expired, compacted, swept,
                             health(catalog, identifier, policy, settings=settings, now=now, swept=swept))
