"""The landing zone as a listing of files with fingerprints, for the landing sensor.

A fingerprint changes when a file's content may have changed (local: mtime and size; S3: the
ETag and LastModified), so a digest of a day's ``file=fingerprint`` pairs tells new files, late
files for old days, re-sent and removed files apart from files already processed, whatever order
they arrive in. ``modified`` is when the file became what it is at that path, so a run that
started later has read it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import glob
import os
import re
import stat
from collections.abc import Iterator
from typing import Protocol

from ratatouille_assets.ingest.sources import Source
from ratatouille_assets.lakehouse import s3
from ratatouille_assets.settings import Settings

DAY_PATTERN = r"\d{4}-\d{2}-\d{2}"


@dataclasses.dataclass(frozen=True)
class LandingFile:
    source: str
    day: str | None  # None: a file of a reference source
    path: str  # relative to the landing root
    fingerprint: str
    modified: float  # epoch seconds: the newest of content change and arrival at this path


class LandingZone(Protocol):
    def files(self, source: Source) -> Iterator[LandingFile]:
        """Every file of ``source`` in the zone, with the day its folder names."""
        ...

    def under(self, prefix: str) -> Iterator[str]:
        """Every file under ``prefix`` (relative to the root), whatever its name, relative to the root."""
        ...


# Text formats may land gzip-compressed: a file of the source's path with ".gz" appended is its too.
COMPRESSED_SUFFIX = ".gz"
_COMPRESSIBLE = ("csv", "jsonl")


def takes_compressed(source: Source) -> bool:
    """Whether ``source``'s files may also land gzip-compressed (``<its path>.gz``)."""
    return source.format in _COMPRESSIBLE and not source.path.endswith(COMPRESSED_SUFFIX)


def path_regex(source: Source) -> re.Pattern[str]:
    """Which landing paths (relative to the root) are files of ``source``; group ``day`` for a daily one."""
    parts = [re.escape(p) for p in source.path.split("{date}")]
    pattern = f"(?P<day>{DAY_PATTERN})".join(parts)
    # ** is any number of folders (also none), * and ? stay within one path segment.
    pattern = pattern.replace(r"\*\*/", "(?:[^/]+/)*").replace(r"\*\*", ".*").replace(r"\*", "[^/]*").replace(r"\?", "[^/]")
    suffix = f"(?:{re.escape(COMPRESSED_SUFFIX)})?" if takes_compressed(source) else ""
    return re.compile(f"^{pattern}{suffix}$")


def listing_glob(source: Source, day: str | None = None, *, every_day: bool = False) -> str:
    """The glob (relative to the landing root) that lists ``source``'s files: of ``day``, of every
    day (``every_day``), or of a reference source; its matches still pass :func:`path_regex`."""
    pattern = source.path.replace("{date}", "*") if every_day else source.landing_glob(day)
    return pattern + "*" if takes_compressed(source) else pattern


def static_dir(pattern: str) -> str:
    """The folder of ``pattern`` above its first wildcard: where listing starts."""
    cut = min((i for i in (pattern.find(c) for c in "*?[") if i >= 0), default=len(pattern))
    return os.path.dirname(pattern[:cut])


def local_bytes(root: str, source: Source) -> int:
    """The bytes under ``source``'s folder of a local landing zone (0 for S3, or no folder): how
    much there is to load, to start the largest sources first."""
    folder = os.path.join(root, static_dir(listing_glob(source, every_day=True)))
    if root.startswith("s3://") or not os.path.isdir(folder):
        return 0
    total = 0
    for parent, _, names in os.walk(folder):
        for name in names:
            with contextlib.suppress(OSError):
                total += os.stat(os.path.join(parent, name)).st_size
    return total


@dataclasses.dataclass(frozen=True)
class LocalLandingZone:
    """A landing zone on a local (or mounted) folder."""

    root: str

    def files(self, source: Source) -> Iterator[LandingFile]:
        regex = path_regex(source)
        # The root is a literal name (it may contain '[' or '*'); only the source's path pattern globs.
        pattern = os.path.join(glob.escape(self.root), listing_glob(source, every_day=True))
        for path in sorted(glob.glob(pattern, recursive=True)):
            relative = os.path.relpath(path, self.root)
            match = regex.match(relative.replace(os.sep, "/"))
            if match is None:
                continue
            info = os.stat(path)
            if not stat.S_ISREG(info.st_mode):
                continue
            day = match.groupdict().get("day")
            yield LandingFile(source.name, day, relative, f"{info.st_mtime_ns}:{info.st_size}", _arrived(info))

    def under(self, prefix: str) -> Iterator[str]:
        top = os.path.join(self.root, prefix)
        for folder, _dirs, names in os.walk(top):
            for name in names:
                if os.path.isfile(path := os.path.join(folder, name)):
                    yield os.path.relpath(path, self.root).replace(os.sep, "/")


def _arrived(info: os.stat_result) -> float:
    """The later of mtime and ctime: ``mv``, ``cp -p`` and ``rsync -t`` keep an old mtime, but the
    inode change time says when the file appeared here, so a run that started before is not
    taken for one that read it."""
    return max(info.st_mtime, info.st_ctime)


def _static_prefix(source: Source) -> str:
    """The part of the source's path before its first ``{date}`` or wildcard: where listing starts."""
    cut = min((i for i in (source.path.find(m) for m in ("{date}", "*", "?", "[")) if i >= 0), default=len(source.path))
    return source.path[:cut]


@dataclasses.dataclass(frozen=True)
class S3LandingZone:
    """A landing zone under an ``s3://bucket/prefix`` (S3 or MinIO).

    Listing is paginated (1,000 keys a request) and starts at the source's static prefix, so a
    source's listing does not walk the others. The fingerprint is the ETag plus LastModified: a
    re-sent file with the same bytes keeps its ETag but gets a new LastModified, and is seen.
    """

    root: str
    client: object
    # One listing per prefix for the zone's lifetime (a sensor tick): the tick's files and its
    # landing check share it instead of listing the bucket twice.
    _listings: dict = dataclasses.field(default_factory=dict, compare=False, repr=False)

    def _objects(self, prefix: str) -> list:
        if prefix not in self._listings:
            base = self.root.rstrip("/") + "/"
            self._listings[prefix] = [
                (obj.uri[len(base):], obj) for obj in s3.list_objects(self.client, base + prefix) if not obj.uri.endswith("/")
            ]
        return self._listings[prefix]

    def files(self, source: Source) -> Iterator[LandingFile]:
        regex = path_regex(source)
        for relative, obj in self._objects(_static_prefix(source)):
            match = regex.match(relative)
            if match is None or is_hidden(relative, source):
                continue
            yield LandingFile(
                source.name, match.groupdict().get("day"), relative, f"{obj.etag}:{obj.last_modified}",
                dt.datetime.fromisoformat(obj.last_modified).timestamp(),
            )

    def under(self, prefix: str) -> Iterator[str]:
        return (relative for relative, _ in self._objects(prefix))


def is_hidden(relative: str, source: Source) -> bool:
    """A file or folder whose name starts with '.' (``.DS_Store``, an upload tool's ``.part``), unless
    the source's path names it literally: never the source's file, on any listing (the loader's,
    the sensor's), and the landing check names it."""
    literal = {part for part in source.path.split("/") if part.startswith(".")}
    return any(part.startswith(".") and part not in literal for part in relative.replace(os.sep, "/").split("/"))


@dataclasses.dataclass(frozen=True)
class UnreadFile:
    """A file in a source's landing folder that no load reads, and why (what to do is in ``why``)."""

    path: str  # relative to the landing root
    why: str


def unread_files(
    zone: LandingZone, sources: dict[str, Source], start: str, today: dt.date, only: str | None = None,
) -> dict[str, list[UnreadFile]]:
    """Per source (or for source ``only``), the files under its landing folder that no load reads:
    a name its path does not match (an unknown extension, a folder that is no day, a nested
    folder), a hidden file, a folder whose day is no date, in the future or before ``start``
    (``today`` is the partitions' time zone's). A file another source reads is not reported."""
    regexes = {name: path_regex(source) for name, source in sources.items()}
    foldered = {name: _any_folder_regex(source) for name, source in sources.items() if source.partitioned}
    report: dict[str, list[UnreadFile]] = {name: [] for name in sources if only in (None, name)}
    listed: dict[str, list[str]] = {}
    for name in report:
        source = sources[name]
        prefix = _static_prefix(source)
        if prefix not in listed:
            listed[prefix] = sorted(zone.under(prefix))
        for path in listed[prefix]:
            if is_hidden(path, source):
                report[name].append(UnreadFile(path, "a hidden file (its name, or a folder's, starts with '.') is never "
                                                     "read: remove it, or rename it if it is data"))
                continue
            owners = [n for n, regex in regexes.items() if regex.match(path)]
            if owners and name not in owners:
                continue  # another source's file
            if name in owners:
                day = regexes[name].match(path).groupdict().get("day")
                why = _day_problem(day, start, today) if day else None
            elif name in foldered and (m := foldered[name].match(path)):
                why = f"its folder '{m.group('day')}' is no day (YYYY-MM-DD): {source.path} in sources.yml reads day folders"
            else:
                why = f"no source reads it: its name does not match '{source.path}' (source '{name}' in sources.yml)"
            if why:
                report[name].append(UnreadFile(path, why))
    return report


def _any_folder_regex(source: Source) -> re.Pattern[str]:
    """``path_regex`` with any folder name where the day goes: tells a misnamed day folder apart."""
    return re.compile(path_regex(source).pattern.replace(f"(?P<day>{DAY_PATTERN})", "(?P<day>[^/]+)"))


def _day_problem(day: str, start: str, today: dt.date) -> str | None:
    try:
        date = dt.date.fromisoformat(day)
    except ValueError:
        return f"its folder '{day}' is no valid date"
    if day < start:
        return f"its day {day} is before partitions.start ({start}) in sources.yml: set it to {day} or earlier to load it"
    if date > today:
        return f"its day {day} is in the future: it is loaded once that day has ended (check the folder's name)"
    return None


class LandingRootError(ValueError):
    """RATATOUILLE_LANDING names a local folder that does not exist."""


def check_landing_root(settings: Settings) -> None:
    """A landing root set to a local folder that is not there is a mistake (a typo, a mount not
    mounted): refuse to load rather than look at an empty landing zone. The default root (under
    the home) may be missing until the first files land."""
    configured = os.environ.get("RATATOUILLE_LANDING")
    if configured and not s3.is_s3(settings.landing) and not os.path.isdir(settings.landing):
        raise LandingRootError(
            f"RATATOUILLE_LANDING={configured!r} is not a folder ({settings.landing} does not exist): fix the "
            "variable, mount the landing zone, or create the folder (mkdir -p) if it is meant to start empty."
        )


def landing_zone(root: str, settings: Settings | None = None) -> LandingZone:
    if s3.is_s3(root):
        return S3LandingZone(root, s3.client(settings))
    return LocalLandingZone(root)
