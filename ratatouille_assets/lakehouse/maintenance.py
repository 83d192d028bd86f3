"""Maintenance: the orphan-file sweep.

A table's folder holds files that no snapshot references: data files of a writer killed before its
commit, manifests and metadata files of a commit the catalog refused or that was interrupted, and
data files whose last snapshot expired (a replay keeps the files it replaced until then). Nothing
reads them; they only cost storage. ``sweep`` deletes them.

What is referenced, per table: the current metadata file and those its metadata log names, every
snapshot's manifest list (all branches and tags: they are snapshots of the metadata), every
manifest those lists name, every live data or delete file of those manifests, and statistics
files. Only files under the table's ``data/`` and ``metadata/`` folders are candidates, and only
those older than ``older_than``: a writer running now has written its data files but not yet
committed them (the default, a day, is longer than any run; 0 is safe only when no writer runs).

Before deleting anything the sweep checks that every referenced data file, manifest and manifest
list was found by its listing (metadata files are left out: a commit deletes old ones): a
referenced file the listing did not see means the listing and the table disagree on paths (a
moved warehouse, an encoding the sweep does not know), and deleting by that listing could delete
live data, so the table is skipped with an error instead.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import os
import time
import urllib.parse
from collections.abc import Iterator

from pyiceberg.catalog import Catalog
from pyiceberg.table import Table

from ratatouille_assets.lakehouse import s3
from ratatouille_assets.lakehouse.errors import LakehouseError
from ratatouille_assets.settings import Settings, get_settings

log = logging.getLogger(__name__)

DEFAULT_OLDER_THAN = dt.timedelta(days=1)
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


def referenced_files(table: Table) -> set[str]:
    """Every file ``table``'s metadata reaches (normalized with ``_key``)."""
    metadata = table.metadata
    io = table.io
    found = {table.metadata_location}
    found.update(entry.metadata_file for entry in metadata.metadata_log)
    found.update(stats.statistics_path for stats in getattr(metadata, "statistics", []) or [])
    found.update(stats.statistics_path for stats in getattr(metadata, "partition_statistics", []) or [])
    manifests = {}
    for snapshot in metadata.snapshots:
        found.add(snapshot.manifest_list)
        for manifest in snapshot.manifests(io):
            manifests.setdefault(manifest.manifest_path, manifest)
    for path, manifest in manifests.items():
        found.add(path)
        found.update(entry.data_file.file_path for entry in manifest.fetch_manifest_entry(io, discard_deleted=True))
    return {_key(path) for path in found}


def sweep(
    catalog: Catalog,
    identifier: str,
    *,
    older_than: dt.timedelta = DEFAULT_OLDER_THAN,
    dry_run: bool = False,
    settings: Settings | None = None,
    now: float | None = None,
) -> SweepResult:
    """Delete the files under ``identifier``'s folder that no snapshot references (see the module doc)."""
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
    referenced = referenced_files(table)
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
