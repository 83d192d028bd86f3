"""Run a dataset's Soda checks against one window of its Iceberg table, through DuckDB.

The table is exposed to Soda as a view over ``iceberg_scan(<metadata>)`` filtered to the window
just written (partition pruning, nothing copied), in a connection of its own so that Soda's
schema lookups see only that dataset.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import re
from collections.abc import Callable
from typing import Any

from soda.sampler.sample_context import SampleContext
from soda.sampler.sample_ref import SampleRef
from soda.sampler.sampler import Sampler
from soda.scan import Scan

from pyiceberg.exceptions import NoSuchTableError

from ratatouille_assets.lakehouse import duck, trace
from ratatouille_assets.quality.sodacl import DatasetChecks
from ratatouille_assets.settings import Settings

SAMPLE_ROWS = 5
_REFERENCE = re.compile(r"must (?:not )?exist in\s+([A-Za-z_][A-Za-z0-9_]*)")
DATA_SOURCE = "ratatouille"
log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class CheckOutcome:
    name: str
    outcome: str  # pass | warn | fail | error
    blocking: bool
    value: Any
    thresholds: dict[str, Any]
    failing_rows: int | None
    samples: tuple[dict[str, Any], ...]
    message: str

    @property
    def passed(self) -> bool:
        return self.outcome == "pass"

    @property
    def blocks(self) -> bool:
        """A failed (or unevaluable) blocking check stops downstream assets."""
        return self.blocking and self.outcome in ("fail", "error")


class _CapturingSampler(Sampler):
    """Keeps a few failing rows per check in memory (Soda's default sends them nowhere locally)."""

    def __init__(self) -> None:
        self.samples: dict[str, tuple[int, tuple[dict[str, Any], ...]]] = {}

    def store_sample(self, sample_context: SampleContext) -> SampleRef:
        sample = sample_context.sample
        columns = [c.name for c in sample.get_schema().columns]
        rows = tuple(dict(zip(columns, row)) for row in sample.get_rows()[:SAMPLE_ROWS])
        total = sample.get_rows_count()
        if sample_context.check_name:
            self.samples[sample_context.check_name] = (total, rows)
        return SampleRef(
            name=sample_context.sample_name, schema=sample.get_schema(), total_row_count=total,
            stored_row_count=len(rows), type=SampleRef.TYPE_NOT_PERSISTED,
        )


def _failing_rows(result: dict[str, Any]) -> int | None:
    for block in (result.get("diagnostics") or {}).get("blocks") or []:
        file = block.get("file") or {}
        if "totalRowCount" in file:
            return int(file["totalRowCount"])
    return None


def run_checks(
    dataset: DatasetChecks,
    metadata_location: str,
    *,
    settings: Settings,
    row_filter: str | None = None,
    now: dt.datetime | None = None,
    resolve: Callable[[str], str | tuple[str, int | None]] | None = None,
    snapshot_id: int | None = None,
) -> list[CheckOutcome]:
    """Scan ``dataset``'s checks over the rows of its table that match ``row_filter``.

    ``now`` is Soda's ``NOW`` (freshness checks): the end of the window for a partition, so a
    partition's freshness means "its newest event is close to the end of its day".
    ``resolve`` maps another dataset of the same layer to its metadata location, for reference
    checks (``values in (x) must exist in <dataset> (y)``); those are read whole. It may return
    ``(location, snapshot id)`` to read another snapshot than the current one (a branch's head).
    ``snapshot_id`` is the snapshot of the table to check (default: its current one).
    """
    if not dataset.checks:
        return []
    with trace.span("soda.scan", table=dataset.identifier, checks=len(dataset.checks)):
        return _run_checks(dataset, metadata_location, settings=settings, row_filter=row_filter, now=now,
                           resolve=resolve, snapshot_id=snapshot_id)


def _temp_view(conn, name: str, metadata_location: str, row_filter: str | None, snapshot_id: int | None = None) -> None:
    where = f" WHERE {row_filter}" if row_filter else ""
    conn.execute(f"CREATE TEMP VIEW {duck.quote_ident(name)} AS SELECT * FROM "
                 f"{duck.scan_sql(metadata_location, snapshot_id)}{where}")


def dataset_sodacl(dataset: DatasetChecks, checks: list) -> str:
    return dataclasses.replace(dataset, checks=tuple(checks)).sodacl(dataset.table)


def _references(check_text: str) -> set[str]:
    return set(_REFERENCE.findall(check_text))


def _run_checks(
    dataset: DatasetChecks,
    metadata_location: str,
    *,
    settings: Settings,
    row_filter: str | None,
    now: dt.datetime | None,
    resolve: Callable[[str], str | tuple[str, int | None]] | None,
    snapshot_id: int | None = None,
) -> list[CheckOutcome]:
    missing: set[str] = set()
    # Views are TEMP: private to this connection of the shared database, so Soda sees only them.
    conn = duck.session(settings)
    try:
        _temp_view(conn, dataset.table, metadata_location, row_filter, snapshot_id)
        for other in sorted({m for c in dataset.checks for m in _references(c.text)} - {dataset.table}):
            if resolve is None:
                raise ValueError(f"{dataset.path}: reference checks need a resolver for dataset '{other}'")
            try:
                target = resolve(other)
                location, at = target if isinstance(target, tuple) else (target, None)
                _temp_view(conn, other, location, None, at)
            except NoSuchTableError:
                missing.add(other)
        runnable = [c for c in dataset.checks if not (_references(c.text) & missing)]
        scan = Scan()
        scan.disable_telemetry()
        scan.set_scan_definition_name(f"ratatouille_{dataset.layer}_{dataset.table}")
        scan.set_data_source_name(DATA_SOURCE)
        scan.add_duckdb_connection(conn, data_source_name=DATA_SOURCE)
        scan.add_variables({"NOW": (now or dt.datetime.now(dt.UTC)).strftime("%Y-%m-%dT%H:%M:%S+00:00")})
        sampler = _CapturingSampler()
        scan.sampler = sampler
        if runnable:
            scan.add_sodacl_yaml_str(
                dataset_sodacl(dataset, runnable), file_name=str(dataset.path)
            )
            scan.execute()
        results = {r["name"]: r for r in scan.get_scan_results()["checks"]}
        errors = scan.get_error_logs_text() or ""
    finally:
        conn.close()

    outcomes = []
    for check in dataset.checks:
        result = results.get(check.name)
        absent = sorted(_references(check.text) & missing)
        if absent:
            outcomes.append(CheckOutcome(
                name=check.name, outcome="error", blocking=check.blocking, value=None, thresholds={},
                failing_rows=None, samples=(),
                message=f"{dataset.path}: check '{check.text}' refers to {dataset.layer}.{absent[0]}, which does not "
                f"exist yet: materialize {dataset.layer}.{absent[0]} first, then re-run {dataset.identifier}.",
            ))
            continue
        if result is None or result.get("outcome") is None:
            outcomes.append(CheckOutcome(
                name=check.name, outcome="error", blocking=check.blocking, value=None, thresholds={},
                failing_rows=None, samples=(),
                message=f"{dataset.path}: check '{check.text}' could not be evaluated. {errors}".strip(),
            ))
            continue
        diagnostics = result.get("diagnostics") or {}
        total, samples = sampler.samples.get(check.name, (None, ()))
        failing = _failing_rows(result)
        if failing is None:
            failing = total
        thresholds = {k: diagnostics[k] for k in ("fail", "warn") if k in diagnostics}
        outcomes.append(CheckOutcome(
            name=check.name,
            outcome=result["outcome"],
            blocking=check.blocking,
            value=diagnostics.get("value"),
            thresholds=thresholds,
            failing_rows=failing,
            samples=samples,
            message=f"{check.text}: {result['outcome']} (value {diagnostics.get('value')!r})",
        ))
    return outcomes
