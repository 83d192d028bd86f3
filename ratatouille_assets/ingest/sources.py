"""Source contracts, declared in one YAML file (``sources.yml``)."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import yaml

FORMATS = {"csv": ".csv", "jsonl": ".jsonl", "parquet": ".parquet"}
# What a bad landing file does to its partition: set it aside and load the rest, or stop the load.
ON_BAD_FILE = ("quarantine", "fail")
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_TYPE = re.compile(
    r"^(varchar|text|string|bigint|integer|int|smallint|double|float|boolean|date|timestamp|timestamptz"
    r"|decimal\(\s*\d+\s*,\s*\d+\s*\))$",
    re.IGNORECASE,
)


class SourceConfigError(ValueError):
    """sources.yml is invalid; the message names the source and field."""


@dataclasses.dataclass(frozen=True)
class Source:
    name: str
    format: str
    path: str
    columns: dict[str, str]
    primary_key: tuple[str, ...]
    event_time: str
    description: str = ""
    on_bad_file: str = "quarantine"

    def landing_glob(self, day: str) -> str:
        """The landing path pattern for one day, relative to the landing root."""
        return self.path.format(date=day)

    def landing_dir(self, day: str) -> str:
        return str(Path(self.landing_glob(day)).parent)


def _fail(where: str, message: str) -> SourceConfigError:
    return SourceConfigError(f"{where}: {message}")


def parse_sources(document: dict, origin: str = "sources.yml") -> dict[str, Source]:
    if not isinstance(document, dict) or not isinstance(document.get("sources"), dict):
        raise _fail(origin, "expected a top-level 'sources:' mapping of source name -> definition")
    out: dict[str, Source] = {}
    for name, spec in document["sources"].items():
        where = f"{origin}: source '{name}'"
        if not _NAME.match(str(name)):
            raise _fail(where, "names are lowercase letters, digits and underscores, starting with a letter")
        if not isinstance(spec, dict):
            raise _fail(where, "expected a mapping with format, path, columns, primary_key, event_time")
        missing = [k for k in ("format", "path", "columns", "primary_key", "event_time") if k not in spec]
        if missing:
            raise _fail(where, f"missing field(s): {', '.join(missing)}")
        fmt = spec["format"]
        if fmt not in FORMATS:
            raise _fail(where, f"format '{fmt}' is not one of {', '.join(FORMATS)}")
        if "{date}" not in spec["path"]:
            raise _fail(where, f"path '{spec['path']}' must contain '{{date}}' (the partition day)")
        if ".." in Path(spec["path"]).parts or spec["path"].startswith("/"):
            raise _fail(where, f"path '{spec['path']}' must stay inside the landing zone")
        columns = spec["columns"]
        if not isinstance(columns, dict) or not columns:
            raise _fail(where, "columns must be a non-empty mapping of column name -> type")
        for col, typ in columns.items():
            if not _NAME.match(str(col)) or str(col).startswith("_"):
                raise _fail(f"{where}, column '{col}'", "column names are lowercase identifiers not starting with '_'")
            if not _TYPE.match(str(typ).strip()):
                raise _fail(f"{where}, column '{col}'", f"unknown type '{typ}'")
        pk = spec["primary_key"]
        pk = [pk] if isinstance(pk, str) else list(pk)
        for key in [*pk, spec["event_time"]]:
            if key not in columns:
                raise _fail(where, f"'{key}' is used as a key or event_time but is not a declared column")
        on_bad_file = spec.get("on_bad_file", "quarantine")
        if on_bad_file not in ON_BAD_FILE:
            raise _fail(where, f"on_bad_file '{on_bad_file}' is not one of {', '.join(ON_BAD_FILE)}")
        out[name] = Source(
            name=name,
            format=fmt,
            path=spec["path"],
            columns={str(k): str(v).strip().lower() for k, v in columns.items()},
            primary_key=tuple(pk),
            event_time=spec["event_time"],
            description=str(spec.get("description", "")).strip(),
            on_bad_file=on_bad_file,
        )
    return out


def load_sources(path: Path) -> dict[str, Source]:
    """Read and validate ``sources.yml``."""
    try:
        document = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError as exc:
        raise SourceConfigError(f"{path}: the sources file does not exist (set RATATOUILLE_SOURCES_FILE)") from exc
    except yaml.YAMLError as exc:
        raise SourceConfigError(f"{path}: not valid YAML: {exc}") from exc
    return parse_sources(document, origin=str(path))
