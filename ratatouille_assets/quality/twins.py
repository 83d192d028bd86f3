"""Checks declared twice: a dbt test and a Soda check of the same table that judge the same thing.

A project may check a key with dbt's ``unique`` and again with Soda's ``duplicate_count``. Both
run, each with its own scan of the window just written: on a day of 10M rows a uniqueness check
costs about a second, so the second declaration doubles the cost of the check for nothing. When
the definitions load, :func:`declared_twice` names each such pair and both files; the checks still
both run (a warning, not an error: the project is right, only slower).

Recognised pairs, on the same table and columns, the dbt test without a ``where`` and the Soda
check without attributes other than its thresholds and labels (and ``valid values`` for accepted
values):

=========================================  ===========================================
dbt test                                   Soda check
=========================================  ===========================================
``unique``, ``unique_combination``         ``duplicate_count(<columns>) = 0``
(``dbt_utils.unique_combination_of_columns``)
``not_null``                               ``missing_count(<column>) = 0``
``accepted_values``                        ``invalid_count(<column>) = 0`` with ``valid values``
``relationships`` (to, field)              ``values in (<column>) must exist in <to> (<field>)``
=========================================  ===========================================
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from ratatouille_assets.quality.sodacl import DatasetChecks, SodaCheck

_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_COLUMNS = rf"\(\s*({_NAME}(?:\s*,\s*{_NAME})*)\s*\)"
_SODA = (
    ("unique", re.compile(rf"^duplicate_count\s*{_COLUMNS}\s*=\s*0$")),
    ("not_null", re.compile(rf"^missing_count\s*{_COLUMNS}\s*=\s*0$")),
    ("accepted_values", re.compile(rf"^invalid_count\s*{_COLUMNS}\s*=\s*0$")),
    ("relationships", re.compile(rf"^values in\s*{_COLUMNS}\s*must exist in\s+({_NAME})\s*{_COLUMNS}$")),
)
# Attributes that leave what a check judges as it is: its thresholds, and labels for Soda Cloud.
_NEUTRAL = {"warn", "fail", "attributes", "identity"}
_DBT_UNIQUE = ("unique", "unique_combination", "unique_combination_of_columns")
_REF = re.compile(r"""ref\(\s*['"](\w+)['"]\s*\)""")
_WHAT = {
    "unique": "the uniqueness of {columns}",
    "not_null": "the presence of {columns}",
    "accepted_values": "the accepted values of {columns}",
    "relationships": "the existence of each {columns} in {to}",
}


@dataclasses.dataclass(frozen=True)
class _Judges:
    """What a check judges: its table, kind, columns, and for a relationship the other side."""

    table: str  # layer.table
    kind: str
    columns: frozenset[str]
    to: tuple[str, frozenset[str]] | None = None

    def phrase(self) -> str:
        columns = ", ".join(sorted(self.columns))
        to = f"{self.to[0]} ({', '.join(sorted(self.to[1]))})" if self.to else ""
        return _WHAT[self.kind].format(columns=columns, to=to)


def _split(columns: str) -> frozenset[str]:
    return frozenset(c.strip().lower() for c in columns.split(","))


def _soda_judges(dataset: DatasetChecks, check: SodaCheck) -> _Judges | None:
    config = check.config or {}
    # Beyond its thresholds and labels, a check's attributes change what it judges (a filter, more
    # values that count as missing, other validity rules): then it is no twin. `valid values` is the
    # one an accepted-values check needs.
    judged = set(config) - _NEUTRAL
    text = " ".join(check.text.split())
    for kind, pattern in _SODA:
        if match := pattern.match(text):
            if judged != ({"valid values"} if kind == "accepted_values" else set()):
                return None
            to = (match.group(2).lower(), _split(match.group(3))) if kind == "relationships" else None
            return _Judges(dataset.identifier.lower(), kind, _split(match.group(1)), to)
    return None


def _dbt_judges(test: Mapping[str, Any], model: Mapping[str, Any]) -> _Judges | None:
    meta = test.get("test_metadata") or {}
    if (test.get("config") or {}).get("where"):
        return None
    kwargs, name = meta.get("kwargs") or {}, meta.get("name")
    table = f"{model.get('schema')}.{model.get('alias') or model.get('name')}".lower()
    if name in _DBT_UNIQUE:
        columns = kwargs.get("columns") or kwargs.get("combination_of_columns") or [kwargs.get("column_name")]
        if not all(isinstance(c, str) for c in columns):
            return None
        return _Judges(table, "unique", frozenset(c.lower() for c in columns))
    column = kwargs.get("column_name")
    if not isinstance(column, str):
        return None
    if name in ("not_null", "accepted_values"):
        return _Judges(table, name, frozenset({column.lower()}))
    if name == "relationships" and isinstance(kwargs.get("field"), str) and (ref := _REF.search(str(kwargs.get("to")))):
        return _Judges(table, name, frozenset({column.lower()}), (ref.group(1).lower(), frozenset({kwargs["field"].lower()})))
    return None


def _dbt_tests(manifest: Mapping[str, Any]) -> Iterator[tuple[_Judges, Mapping[str, Any]]]:
    nodes = manifest.get("nodes") or {}
    for test in nodes.values():
        if test.get("resource_type") != "test" or not test.get("test_metadata"):
            continue
        model = nodes.get(test.get("attached_node") or "")
        if model and (judges := _dbt_judges(test, model)):
            yield judges, test


class ChecksDeclaredTwice(UserWarning):
    """A Soda check repeats a dbt test of the same table (see :func:`declared_twice`)."""


def declared_twice(manifest: Mapping[str, Any], datasets: Mapping[str, DatasetChecks], dbt_dir: Path) -> list[str]:
    """One message per Soda check that a dbt test of the same table already makes, naming both files."""
    tests: dict[_Judges, list[Mapping[str, Any]]] = {}
    for judges, test in _dbt_tests(manifest):
        tests.setdefault(judges, []).append(test)
    messages = []
    for dataset in datasets.values():
        for check in dataset.checks:
            judges = _soda_judges(dataset, check)
            for test in tests.get(judges, []) if judges else []:
                messages.append(
                    f"{dataset.identifier}: {judges.phrase()} is checked twice, by the dbt test "
                    f"{test.get('name')} ({dbt_dir / test.get('original_file_path', '')}) and by the Soda check "
                    f"'{check.text}' ({dataset.path}). Each scans the window on every run: keep one of them."
                )
    return messages
