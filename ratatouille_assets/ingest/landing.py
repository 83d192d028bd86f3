"""The landing zone as a listing of files with fingerprints, for the landing sensor.

A fingerprint changes when a file's content may have changed (local: mtime and size; S3: the
ETag), so a cursor of ``{file: fingerprint}`` tells new files, late files for old days and
re-sent files apart from files already processed, whatever order they arrive in.
"""

from __future__ import annotations

import dataclasses
import glob
import os
import re
from collections.abc import Iterator
from typing import Protocol

from ratatouille_assets.ingest.sources import Source

DAY_PATTERN = r"\d{4}-\d{2}-\d{2}"


@dataclasses.dataclass(frozen=True)
class LandingFile:
    source: str
    day: str
    path: str  # relative to the landing root
    fingerprint: str


class LandingZone(Protocol):
    def files(self, source: Source) -> Iterator[LandingFile]:
        """Every file of ``source`` in the zone, with the day its folder names."""
        ...


def _path_regex(source: Source) -> re.Pattern[str]:
    parts = [re.escape(p) for p in source.path.split("{date}")]
    pattern = f"(?P<day>{DAY_PATTERN})".join(parts).replace(r"\*", "[^/]*").replace(r"\?", "[^/]")
    return re.compile(f"^{pattern}$")


@dataclasses.dataclass(frozen=True)
class LocalLandingZone:
    """A landing zone on a local (or mounted) folder."""

    root: str

    def files(self, source: Source) -> Iterator[LandingFile]:
        regex = _path_regex(source)
        for path in sorted(glob.glob(os.path.join(self.root, source.path.replace("{date}", "*")))):
            relative = os.path.relpath(path, self.root)
            match = regex.match(relative.replace(os.sep, "/"))
            if match is None or not os.path.isfile(path):
                continue
            stat = os.stat(path)
            yield LandingFile(source.name, match["day"], relative, f"{stat.st_mtime_ns}:{stat.st_size}")


def landing_zone(root: str) -> LandingZone:
    if root.startswith("s3://"):
        raise NotImplementedError("an S3 landing zone comes with the S3 warehouse (issue 6)")
    return LocalLandingZone(root)
