"""Audit a freshly written window of a table against its Soda checks.

Called from the bronze assets and, through the dbt plugin's ``audit`` hook, right after each dbt
model is written, so a failing blocking check stops downstream models inside the same dbt run.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import json
from collections.abc import Callable
from pathlib import Path

from ratatouille_assets.lakehouse.branches import branch_head
from ratatouille_assets.lakehouse.catalog import load_catalog
from ratatouille_assets.lakehouse.duck import quote_ident
from ratatouille_assets.lakehouse.wap import is_audit_branch
from ratatouille_assets.lakehouse.write import Window
from ratatouille_assets.quality.scan import CheckOutcome, run_checks
from ratatouille_assets.quality.sodacl import DatasetChecks, load_checks, soda_files
from ratatouille_assets.settings import Settings, get_settings


class QualityGateError(Exception):
    """A blocking check failed on data that was just written; downstream must not run."""


def _checks(soda_dir: Path) -> dict[str, DatasetChecks]:
    """The parsed SodaCL files, re-read when any of them changes (edits apply without a restart)."""
    stamp = tuple((str(p), p.stat().st_mtime_ns) for p in soda_files(Path(soda_dir)))
    return _parse_checks(Path(soda_dir), stamp)


@functools.lru_cache(maxsize=8)
def _parse_checks(soda_dir: Path, stamp: tuple) -> dict[str, DatasetChecks]:
    return load_checks(soda_dir)


def window_filter(window: Window | None) -> str | None:
    if window is None:
        return None
    return window.to_sql(quote_ident(window.column))


def window_now(window: Window | None) -> dt.datetime | None:
    """Soda's NOW for a window: midnight after its last day (None: the real now)."""
    if window is None:
        return None
    return dt.datetime.combine(window.end + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC)


def audit_table(
    identifier: str,
    metadata_location: str,
    *,
    window: Window | None,
    settings: Settings | None = None,
    resolve: Callable[[str], str | tuple[str, int | None]] | None = None,
    snapshot_id: int | None = None,
    audit_branch: str | None = None,
) -> list[CheckOutcome]:
    """Run the Soda checks of ``identifier`` (``layer.table``) over ``window`` of the snapshot just
    written (``snapshot_id``; default: the table's current one). Tables a reference check reads are
    read on the run's ``audit_branch`` where they have it (written by the same run, not published
    yet), else on the settings' branch where they have it, else on main."""
    settings = settings or get_settings()
    dataset = _checks(settings.soda_dir).get(identifier)
    if dataset is None:
        return []
    if resolve is None:
        catalog = load_catalog(settings)
        layer = identifier.split(".")[0]

        def resolve(name: str) -> tuple[str, int | None]:
            table = catalog.load_table(f"{layer}.{name}")
            if audit_branch and audit_branch in table.metadata.refs:
                return branch_head(table, audit_branch)
            return branch_head(table, settings.branch)
    return run_checks(
        dataset, metadata_location, settings=settings, row_filter=window_filter(window), now=window_now(window),
        resolve=resolve, snapshot_id=snapshot_id,
    )


def blocked_message(identifier: str, outcomes: list[CheckOutcome], held_on: str | None = None) -> str | None:
    """Why downstream stops; with ``held_on``, the audit branch that keeps the rows (main unchanged)."""
    blocked = [o for o in outcomes if o.blocks]
    if not blocked:
        return None
    details = "; ".join(f"{o.name} ({o.message})" for o in blocked)
    return f"{identifier}: blocking quality check(s) failed, downstream assets will not run{held(identifier, held_on)}: {details}"


def held(identifier: str, branch: str | None) -> str:
    if not branch or not is_audit_branch(branch):
        return ""
    return (f"; nothing was published: the rows are held on audit branch {branch!r} and readers still see the "
            f"previous snapshot (see them: rat query \"SELECT * FROM {identifier}\" --as-of {identifier}={branch})")


def to_json(outcomes: list[CheckOutcome], skipped: str | None = None) -> str:
    return json.dumps({"outcomes": [dataclasses.asdict(o) for o in outcomes], "skipped": skipped}, default=str)


@dataclasses.dataclass(frozen=True)
class Audit:
    """What the checks of one table said about the window just written (or why they did not run)."""

    outcomes: list[CheckOutcome]
    skipped: str | None = None


def from_json(text: str) -> Audit:
    document = json.loads(text)
    out = []
    for item in document["outcomes"]:
        item["samples"] = tuple(item.get("samples") or ())
        out.append(CheckOutcome(**item))
    return Audit(out, document.get("skipped"))


def nothing_to_check(rows: int, rejected: int, window: Window | None) -> str | None:
    """Why the checks of a write do not run: it holds no rows and rejected none.

    A source that has no files for a day (the example shop beside the user's own data, a day
    nothing was delivered) is not a failed check. That a day's data is missing is what the
    source's freshness (sources.yml) and the row counts per partition show.
    """
    if rows or rejected:
        return None
    where = f"in {window.start}..{window.end}" if window else "in the table"
    return f"no rows {where} and none rejected: nothing to check"


def dbt_audit_hook(
    identifier: str, metadata_location: str, window: Window | None, audit_dir: Path, *, rows: int, rejected: int,
    snapshot_id: int | None = None, branch: str | None = None,
) -> None:
    """The dbt plugin's ``audit`` hook: record outcomes for Dagster, raise if a blocking check failed."""
    dataset = _checks(get_settings().soda_dir).get(identifier)
    if dataset is None:
        return
    audit_dir.mkdir(parents=True, exist_ok=True)
    skipped = nothing_to_check(rows, rejected, window)
    if skipped:
        (audit_dir / f"{identifier}.json").write_text(to_json([], skipped))
        return
    outcomes = audit_table(identifier, metadata_location, window=window, snapshot_id=snapshot_id, audit_branch=branch)
    (audit_dir / f"{identifier}.json").write_text(to_json(outcomes))
    message = blocked_message(identifier, outcomes, held_on=branch)
    if message:
        raise QualityGateError(message)


def read_audit(audit_dir: Path, identifier: str) -> Audit:
    """One model's audit (no outcomes if it has no Soda checks or was not written)."""
    path = audit_dir / f"{identifier}.json"
    return from_json(path.read_text()) if path.exists() else Audit([])


def read_audits(audit_dir: Path) -> dict[str, Audit]:
    if not audit_dir.is_dir():
        return {}
    return {p.stem: from_json(p.read_text()) for p in sorted(audit_dir.glob("*.json"))}
