"""Source contracts, declared once, in one YAML file (``sources.yml``).

Everything else that needs to know a source is derived from this file: the bronze assets, the
landing sensor, the dbt sources (``dbt_project/models/_sources.generated.yml``, see
:mod:`ratatouille_assets.project.dbt_sources`), the deduplication and window macros of the dbt
project, and the first daily partition.

Two kinds of source:

- **partitioned** (the default): files land in one folder per day (``{date}`` in ``path``); each
  day is its own bronze partition, replaced whole when that day is loaded again.
- **reference** (``partitioned: false``): lookup or dimension files with no event time, anywhere
  under ``<landing>/<source>/``; the bronze table is unpartitioned and replaced whole by each load.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from pathlib import Path
from typing import Any

import yaml

from ratatouille_assets.lakehouse.write import GRANULARITIES

FORMATS = {"csv": ".csv", "jsonl": ".jsonl", "parquet": ".parquet", "xlsx": ".xlsx"}
# What a bad landing file does to its partition: set it aside and load the rest, or stop the load.
ON_BAD_FILE = ("quarantine", "fail")
# What a load does with a day (or a reference source) that has no landing files at all: refuse, so
# a folder that vanished never replaces a day's rows with nothing, or load the day empty.
ON_MISSING_FILES = ("fail", "empty")
# What a value that does not convert to its declared type, or would change if it did, does: set
# its file aside (the default), or become NULL, counted per day and on the snapshot.
ON_BAD_VALUE = ("quarantine", "null")
FRESHNESS_PERIODS = ("minute", "hour", "day")
DEFAULT_START = "2024-01-01"
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_TYPE = re.compile(
    r"^(varchar|text|string|bigint|integer|int|smallint|double|float|boolean|date|timestamp|timestamptz"
    r"|decimal\(\s*\d+\s*,\s*\d+\s*\))$",
    re.IGNORECASE,
)
_SOURCE_FIELDS = (
    "description", "format", "path", "partitioned", "columns", "primary_key", "event_time", "latest_by",
    "late_arrival_days", "freshness", "on_bad_file", "on_missing_files", "on_bad_value", "partition_granularity",
    "sheet", "write_audit_publish",
)
_TOP_LEVEL = ("partitions", "sources")


class SourceConfigError(ValueError):
    """sources.yml is invalid; the message names the file, the source and the field."""


@dataclasses.dataclass(frozen=True)
class Source:
    name: str
    format: str
    path: str
    columns: dict[str, str]
    primary_key: tuple[str, ...]
    event_time: str | None = None
    description: str = ""
    on_bad_file: str = "quarantine"
    on_missing_files: str = "fail"
    on_bad_value: str = "quarantine"
    partitioned: bool = True
    latest_by: str | None = None
    late_arrival_days: int = 0
    freshness: dict[str, Any] | None = None
    partition_granularity: str = "day"
    sheet: str | None = None  # xlsx: the worksheet read (None: the first)
    # Write-audit-publish for this source's bronze table (RATATOUILLE_WAP=off turns it off everywhere).
    write_audit_publish: bool = True

    @property
    def is_reference(self) -> bool:
        return not self.partitioned

    def landing_glob(self, day: str | None = None) -> str:
        """The landing path pattern (of one day, for a partitioned source), relative to the landing root."""
        if self.partitioned:
            if day is None:
                raise ValueError(f"source '{self.name}' is partitioned: its files are listed per day")
            return self.path.format(date=day)
        return self.path

    def landing_dir(self, day: str | None = None) -> str:
        return str(Path(self.landing_glob(day)).parent)


@dataclasses.dataclass(frozen=True)
class SourcesFile:
    """What ``sources.yml`` declares: the sources, where daily partitions start, and the Iceberg
    partition granularity of every partitioned table (sources and models) that sets none."""

    path: Path
    sources: dict[str, Source]
    start: str = DEFAULT_START
    granularity: str = "day"

    @property
    def partitioned(self) -> dict[str, Source]:
        return {n: s for n, s in self.sources.items() if s.partitioned}

    @property
    def reference(self) -> dict[str, Source]:
        return {n: s for n, s in self.sources.items() if not s.partitioned}


def _fail(where: str, message: str) -> SourceConfigError:
    return SourceConfigError(f"{where}: {message}")


def _default_path(name: str, fmt: str, partitioned: bool) -> str:
    ext = FORMATS[fmt]
    return f"{name}/{{date}}/*{ext}" if partitioned else f"{name}/**/*{ext}"


def _columns(where: str, columns: Any) -> dict[str, str]:
    if not isinstance(columns, dict) or not columns:
        raise _fail(where, "columns must be a non-empty mapping of column name -> type")
    for col, typ in columns.items():
        if not _NAME.match(str(col)) or str(col).startswith("_"):
            raise _fail(f"{where}, column '{col}'", "column names are lowercase identifiers not starting with '_'")
        if not _TYPE.match(str(typ).strip()):
            raise _fail(f"{where}, column '{col}'", f"unknown type '{typ}'")
    return {str(k): str(v).strip().lower() for k, v in columns.items()}


def _freshness(where: str, value: Any) -> dict[str, Any] | None:
    """dbt's source freshness block: ``{warn_after: {count: N, period: hour}, error_after: ...}``."""
    if value is None:
        return None
    if not isinstance(value, dict) or not value or set(value) - {"warn_after", "error_after"}:
        raise _fail(where, "freshness takes warn_after and/or error_after, e.g. {warn_after: {count: 1, period: day}}")
    out = {}
    for level, rule in value.items():
        if (not isinstance(rule, dict) or set(rule) != {"count", "period"} or not isinstance(rule["count"], int)
                or rule["count"] < 1 or rule["period"] not in FRESHNESS_PERIODS):
            raise _fail(where, f"freshness.{level} must be {{count: <positive integer>, period: "
                               f"{' | '.join(FRESHNESS_PERIODS)}}}, got {rule!r}")
        out[level] = {"count": rule["count"], "period": rule["period"]}
    return out


def _source(name: str, spec: Any, origin: str, default_granularity: str = "day") -> Source:
    where = f"{origin}: source '{name}'"
    if not _NAME.match(str(name)):
        raise _fail(where, "names are lowercase letters, digits and underscores, starting with a letter")
    if not isinstance(spec, dict):
        raise _fail(where, "expected a mapping with format, columns and primary_key")
    unknown = sorted(set(spec) - set(_SOURCE_FIELDS))
    if unknown:
        raise _fail(where, f"unknown field(s) {', '.join(unknown)} (known: {', '.join(_SOURCE_FIELDS)})")
    missing = [k for k in ("format", "columns") if k not in spec]
    if missing:
        raise _fail(where, f"missing field(s): {', '.join(missing)}")
    fmt = spec["format"]
    if fmt not in FORMATS:
        raise _fail(where, f"format '{fmt}' is not one of {', '.join(FORMATS)}")
    partitioned = spec.get("partitioned", True)
    if not isinstance(partitioned, bool):
        raise _fail(where, f"partitioned must be true or false, got {partitioned!r}")
    path = str(spec.get("path") or _default_path(name, fmt, partitioned))
    if partitioned and "{date}" not in path:
        raise _fail(where, f"path '{path}' must contain '{{date}}' (the partition day), "
                           "or set partitioned: false for a reference source with no days")
    if not partitioned and "{date}" in path:
        raise _fail(where, f"path '{path}' has '{{date}}' but the source is a reference source (partitioned: false)")
    if ".." in Path(path).parts or path.startswith("/"):
        raise _fail(where, f"path '{path}' must stay inside the landing zone")
    columns = _columns(where, spec["columns"])
    pk = spec.get("primary_key") or []
    pk = [pk] if isinstance(pk, str) else list(pk)
    event_time = spec.get("event_time")
    latest_by = spec.get("latest_by")
    if event_time is not None and not partitioned:
        raise _fail(where, "event_time says which day a record belongs to; a reference source has no days "
                           "(use latest_by to say which record of a key is the newest)")
    for field, keys in (("primary_key", pk), ("event_time", [event_time]), ("latest_by", [latest_by])):
        for key in keys:
            if key is not None and key not in columns:
                raise _fail(where, f"{field} '{key}' is not a declared column (columns: {', '.join(columns)})")
    late = spec.get("late_arrival_days", 0)
    if not isinstance(late, int) or isinstance(late, bool) or late < 0:
        raise _fail(where, f"late_arrival_days must be a whole number of days >= 0, got {late!r}")
    if late and not partitioned:
        raise _fail(where, "late_arrival_days applies to partitioned sources only")
    on_bad_file = spec.get("on_bad_file", "quarantine")
    if on_bad_file not in ON_BAD_FILE:
        raise _fail(where, f"on_bad_file '{on_bad_file}' is not one of {', '.join(ON_BAD_FILE)}")
    sheet = spec.get("sheet")
    if sheet is not None and (fmt != "xlsx" or not isinstance(sheet, str) or not sheet.strip()):
        raise _fail(where, "sheet names the worksheet of an xlsx source (a non-empty name)"
                    if fmt == "xlsx" else f"sheet applies to xlsx sources only (this one is {fmt})")
    on_missing_files = spec.get("on_missing_files", "fail")
    if on_missing_files not in ON_MISSING_FILES:
        raise _fail(where, f"on_missing_files '{on_missing_files}' is not one of {', '.join(ON_MISSING_FILES)}")
    on_bad_value = spec.get("on_bad_value", "quarantine")
    if on_bad_value not in ON_BAD_VALUE:
        raise _fail(where, f"on_bad_value '{on_bad_value}' is not one of {', '.join(ON_BAD_VALUE)}")
    granularity = spec.get("partition_granularity", default_granularity if partitioned else "day")
    if granularity not in GRANULARITIES:
        raise _fail(where, f"partition_granularity '{granularity}' is not one of {', '.join(GRANULARITIES)}")
    if "partition_granularity" in spec and not partitioned:
        raise _fail(where, "partition_granularity applies to partitioned sources only (a reference table is not partitioned)")
    wap = spec.get("write_audit_publish", True)
    if not isinstance(wap, bool):
        raise _fail(where, f"write_audit_publish is true or false, got {wap!r}")
    return Source(
        name=name,
        format=fmt,
        path=path,
        columns=columns,
        primary_key=tuple(pk),
        event_time=event_time,
        description=str(spec.get("description", "")).strip(),
        on_bad_file=on_bad_file,
        on_missing_files=on_missing_files,
        on_bad_value=on_bad_value,
        partitioned=partitioned,
        latest_by=latest_by,
        late_arrival_days=late,
        freshness=_freshness(where, spec.get("freshness")),
        partition_granularity=granularity,
        sheet=sheet,
        write_audit_publish=wap,
    )


def _start(origin: str, partitions: Any) -> str:
    if partitions is None:
        return DEFAULT_START
    if not isinstance(partitions, dict) or set(partitions) - {"start", "granularity"}:
        raise _fail(origin, "partitions takes start (the first day, YYYY-MM-DD, of daily data) and "
                            f"granularity ({' | '.join(GRANULARITIES)}: the default Iceberg partitioning of daily tables)")
    start = partitions.get("start", DEFAULT_START)
    try:
        day = start if isinstance(start, dt.date) else dt.date.fromisoformat(str(start))
    except ValueError:
        raise _fail(origin, f"partitions.start must be a day, YYYY-MM-DD, got {start!r}") from None
    return day.isoformat()


def _granularity(origin: str, partitions: Any) -> str:
    granularity = (partitions or {}).get("granularity", "day")
    if granularity not in GRANULARITIES:
        raise _fail(origin, f"partitions.granularity '{granularity}' is not one of {', '.join(GRANULARITIES)}")
    return granularity


def parse_sources_file(document: Any, origin: str = "sources.yml") -> SourcesFile:
    if not isinstance(document, dict) or "sources" not in document:
        raise _fail(origin, "expected a top-level 'sources:' mapping of source name -> definition")
    unknown = sorted(set(document) - set(_TOP_LEVEL))
    if unknown:
        raise _fail(origin, f"unknown top-level key(s) {', '.join(unknown)} (known: {', '.join(_TOP_LEVEL)})")
    entries = document["sources"] or {}
    if not isinstance(entries, dict):
        raise _fail(origin, "'sources:' must be a mapping of source name -> definition")
    start = _start(origin, document.get("partitions"))
    granularity = _granularity(origin, document.get("partitions"))
    sources = {str(name): _source(str(name), spec, origin, granularity) for name, spec in entries.items()}
    return SourcesFile(path=Path(origin), sources=sources, start=start, granularity=granularity)


def parse_sources(document: Any, origin: str = "sources.yml") -> dict[str, Source]:
    return parse_sources_file(document, origin).sources


def load_sources_file(path: Path) -> SourcesFile:
    """Read and validate ``sources.yml``."""
    try:
        document = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError as exc:
        raise SourceConfigError(f"{path}: the sources file does not exist (set RATATOUILLE_SOURCES_FILE)") from exc
    except yaml.YAMLError as exc:
        raise SourceConfigError(f"{path}: not valid YAML: {exc}") from exc
    return parse_sources_file(document, origin=str(path))


def load_sources(path: Path) -> dict[str, Source]:
    return load_sources_file(path).sources
