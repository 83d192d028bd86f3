"""Read the SodaCL files (``soda/<layer>/<table>.yml``) into named checks.

Each check gets a stable identifier (its ``name:`` attribute, or its text) that becomes the
Dagster asset check name, and a severity: a check that only has a ``warn`` threshold warns and
does not block; every other check fails and blocks downstream assets.
"""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path
from typing import Any

import yaml

from ratatouille_assets.layers import LAYERS

_OPERATORS = ((">=", " gte "), ("<=", " lte "), ("!=", " ne "), (">", " gt "), ("<", " lt "), ("=", " eq "), ("%", " pct "))


class SodaConfigError(ValueError):
    """A SodaCL file cannot be turned into checks; the message names the file and the check."""


@dataclasses.dataclass(frozen=True)
class SodaCheck:
    name: str
    text: str
    config: dict[str, Any] | None
    blocking: bool

    @property
    def description(self) -> str:
        return f"Soda: {self.text}" + ("" if self.blocking else " (warn only, does not block)")


@dataclasses.dataclass(frozen=True)
class DatasetChecks:
    layer: str
    table: str
    path: Path
    checks: tuple[SodaCheck, ...]

    @property
    def identifier(self) -> str:
        return f"{self.layer}.{self.table}"

    def sodacl(self, dataset: str) -> str:
        """The checks as SodaCL for ``dataset``, each named by its identifier so results map back."""
        items = [{c.text: {**(c.config or {}), "name": c.name}} for c in self.checks]
        return yaml.safe_dump({f"checks for {dataset}": items}, sort_keys=False)


def check_name(text: str) -> str:
    """A Dagster-safe identifier for a check text: ``row_count > 0`` -> ``row_count_gt_0``."""
    for op, word in _OPERATORS:
        text = text.replace(op, word)
    name = re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")
    if not name:
        raise ValueError(f"cannot derive a check name from {text!r}")
    return name


def _parse_item(item: Any, where: str) -> SodaCheck:
    if isinstance(item, str):
        text, config = item, None
    elif isinstance(item, dict) and len(item) == 1:
        text, config = next(iter(item.items()))
        if config is not None and not isinstance(config, dict):
            raise SodaConfigError(f"{where}: the attributes of '{text}' must be a mapping")
        config = dict(config or {}) or None
    else:
        raise SodaConfigError(f"{where}: each check is a string or a one-key mapping, got {item!r}")
    name = check_name(str((config or {}).get("name") or text))
    if config:
        config.pop("name", None)
        config = config or None
    blocking = not (config and "warn" in config and "fail" not in config)
    return SodaCheck(name=name, text=str(text), config=config, blocking=blocking)


def parse_file(path: Path, layer: str) -> DatasetChecks:
    table = path.stem
    try:
        document = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise SodaConfigError(f"{path}: not valid YAML: {exc}") from exc
    expected = f"checks for {table}"
    unknown = [k for k in document if k != expected]
    if unknown or expected not in document:
        raise SodaConfigError(
            f"{path}: expected exactly one section '{expected}:' (the file name is the dataset), found {list(document)}"
        )
    checks = [_parse_item(item, f"{path}: check {i + 1}") for i, item in enumerate(document[expected] or [])]
    seen: dict[str, str] = {}
    for check in checks:
        if check.name in seen:
            raise SodaConfigError(
                f"{path}: checks '{seen[check.name]}' and '{check.text}' both get the name '{check.name}'; "
                "give one a distinct 'name:'"
            )
        seen[check.name] = check.text
    return DatasetChecks(layer=layer, table=table, path=path, checks=tuple(checks))


def soda_files(soda_dir: Path) -> list[Path]:
    """Every SodaCL file under ``soda_dir``, at any depth (``soda/<layer>/<table>.yml``,
    ``soda/example/<layer>/<table>.yml``), symlinked folders included."""
    found = []
    for folder, _dirs, files in os.walk(soda_dir, followlinks=True):
        found += [Path(folder) / f for f in files if f.endswith((".yml", ".yaml"))]
    return sorted(found)


def load_checks(soda_dir: Path) -> dict[str, DatasetChecks]:
    """Every SodaCL file, keyed by ``<layer>.<table>``: the file's folder is its layer, its name the table."""
    out: dict[str, DatasetChecks] = {}
    for path in soda_files(Path(soda_dir)):
        layer = path.parent.name
        if layer not in LAYERS:
            raise SodaConfigError(
                f"{path}: a SodaCL file lives in a folder named after its layer ({', '.join(LAYERS)}), "
                f"e.g. soda/silver/{path.stem}.yml; '{layer}' is not a layer"
            )
        dataset = parse_file(path, layer)
        if dataset.identifier in out:
            raise SodaConfigError(
                f"{out[dataset.identifier].path} and {path} both hold the checks of {dataset.identifier}: keep one file"
            )
        out[dataset.identifier] = dataset
    return out
