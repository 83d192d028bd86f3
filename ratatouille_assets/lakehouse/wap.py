"""Write-audit-publish: a run's writes wait on an audit branch until its checks pass.

A run writes each table to its own branch, ``audit-<run id>``, made in the write's commit at the
head of the branch readers use (main, or the dev branch). Checks read that branch's head. When
they pass, :func:`publish` moves the readers' branch to the audited snapshot and removes the audit
branch, in one metadata commit; when they fail, nothing is published: the audit branch stays for
inspection until :func:`expire_audit_branches` removes it after the retention period.

Publishing never lets rows through that were not audited:

- readers' head unchanged since the audit branch was made: a fast-forward to the audited snapshot,
  with the commit asserting that head (a write meanwhile fails it, and it is looked at again);
- readers' head moved (another run published another window of the same table meanwhile): the
  audited window's rows, read from the audit branch's head, replace that window on today's head
  (one commit through the write path). The window's rows are exactly those the checks read; the
  other days are those of today's head, each audited by the run that published it. A merge's
  rows are computed from the head it read, so they are never carried onto another head: the
  publish fails (:class:`HeadMovedError`, the audit branch kept) and the run is to be repeated.
  An append's rows are the files the run added on the branch: exactly those rows are appended to
  today's head.

Nothing here knows Dagster or the checks: the caller decides what passed.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
import time

import pyarrow as pa
from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import CommitFailedException
from pyiceberg.expressions import AlwaysTrue
from pyiceberg.table import Table
from pyiceberg.table.snapshots import ancestors_of

from ratatouille_assets.lakehouse import trace
from ratatouille_assets.lakehouse.errors import HeadMovedError
from ratatouille_assets.lakehouse.pyiceberg_adapter import manage_snapshots
from ratatouille_assets.lakehouse.tables import list_tables
from ratatouille_assets.lakehouse.write import (
    APPEND_KEY_PROPERTY,
    HEAD_DEPENDENT_STRATEGIES,
    MAIN_BRANCH,
    RUN_ID_PROPERTY,
    STRATEGY_PROPERTY,
    RetryPolicy,
    Window,
    fork_point,
    granularity_of,
    write_window,
)
from ratatouille_assets.settings import RESERVED_BRANCH_PREFIX

# Set on the commit that rebased an audited window onto a head that had moved: the audited snapshot.
REBASED_FROM_PROPERTY = "ratatouille.rebased-from"


def audit_branch(run_id: str) -> str:
    """The audit branch of a run (the same name in every table the run writes)."""
    return f"{RESERVED_BRANCH_PREFIX}{run_id}"


def is_audit_branch(name: str) -> bool:
    return name.startswith(RESERVED_BRANCH_PREFIX)


@dataclasses.dataclass(frozen=True)
class Publication:
    table: str
    branch: str  # the audit branch
    target: str  # the branch readers use: main, or the dev branch
    snapshot_id: int | None  # the target's head after publishing (None: nothing was on the branch)
    how: str  # "fast-forward", "rebased", or "nothing" (the table has no such audit branch)
    attempts: int = 1


def _head(table: Table, target: str) -> int | None:
    """The target's head, or, for a branch the table does not have yet, where it would start."""
    return fork_point(table.metadata, target)


def _contains(table: Table, snapshot_id: int, ancestor_id: int | None) -> bool:
    if ancestor_id is None:
        return True
    return any(s.snapshot_id == ancestor_id for s in ancestors_of(table.snapshot_by_id(snapshot_id), table.metadata))


def publish(
    catalog: Catalog,
    identifier: str,
    branch: str,
    *,
    window: Window | None,
    run_id: str,
    target: str = MAIN_BRANCH,
    retry: RetryPolicy | None = None,
) -> Publication:
    """Make ``target`` of ``identifier`` hold what ``branch`` audited, then remove ``branch``.

    ``window`` is what the run wrote (None: the whole table): on a target that moved since the
    branch was made, exactly those rows are carried over (see the module's docstring).
    """
    started = time.monotonic()
    publication = _publish(catalog, identifier, branch, window, run_id, target, retry or RetryPolicy(), started)
    trace.record("iceberg.publish", time.monotonic() - started, table=identifier, how=publication.how)
    return publication


def _publish(
    catalog: Catalog, identifier: str, branch: str, window: Window | None, run_id: str, target: str,
    retry: RetryPolicy, started: float,
) -> Publication:
    for attempt in itertools.count(1):
        table = catalog.load_table(identifier)
        ref = table.metadata.refs.get(branch)
        if ref is None:
            return Publication(identifier, branch, target, _head(table, target), "nothing", attempt)
        audited = ref.snapshot_id
        if _contains(table, audited, _head(table, target)):
            try:
                with manage_snapshots(table) as snapshots:
                    # The first ref assertion of the commit is the target's head (see write.py).
                    if target == MAIN_BRANCH:
                        snapshots.set_current_snapshot(snapshot_id=audited)
                    else:
                        snapshots.create_branch(audited, target)
                    snapshots.remove_branch(branch)
                return Publication(identifier, branch, target, audited, "fast-forward", attempt)
            except CommitFailedException:
                if retry.exhausted(attempt, time.monotonic() - started):
                    raise
                time.sleep(retry.delay(attempt))
                continue
        return _rebase(catalog, table, identifier, branch, audited, window, run_id, target, retry, attempt)
    raise AssertionError("unreachable")


def _rebase(
    catalog: Catalog, table: Table, identifier: str, branch: str, audited: int, window: Window | None, run_id: str,
    target: str, retry: RetryPolicy, attempts: int,
) -> Publication:
    """The audited window's rows onto the target's current head (the write path retries conflicts)."""
    summary = table.snapshot_by_id(audited).summary
    if summary and summary.additional_properties.get(STRATEGY_PROPERTY) in HEAD_DEPENDENT_STRATEGIES:
        raise HeadMovedError(
            f"{identifier}: nothing published: {target} moved since this run merged into it (another run "
            f"wrote the table meanwhile), and a merge's rows hold the head it read. Run again to merge into "
            f"the new head; the audited rows stay on {branch} until the retention period."
        )
    schema = table.schema()
    appending = bool(summary) and summary.additional_properties.get(STRATEGY_PROPERTY) == "append"
    if appending:
        reader = _added_rows(table, audited)
    else:
        scan = table.scan(row_filter=window.to_filter(schema) if window else AlwaysTrue(), snapshot_id=audited)
        reader = scan.to_arrow_batch_reader()
    carried = {k: v for k, v in (summary.additional_properties if summary else {}).items() if k.startswith("ratatouille.")}
    carried[REBASED_FROM_PROPERTY] = str(audited)
    carried.pop("ratatouille.branch", None)

    def batches():
        produced = False
        for batch in reader:
            produced = True
            yield pa.Table.from_batches([batch])
        if not produced:
            yield reader.schema.empty_table()

    result = write_window(
        catalog, identifier, batches(), window=window, run_id=run_id, branch=target,
        partition_key=carried.get("ratatouille.partition"),
        extra_properties={k: v for k, v in carried.items() if k not in ("ratatouille.run-id", "ratatouille.rows",
                                                                         "ratatouille.partition", "ratatouille.window")},
        retry=retry, granularity=(granularity_of(table, window.column) or "day") if window else "day",
        append=(summary.additional_properties.get(APPEND_KEY_PROPERTY) or True) if appending else False,
    )
    _remove_branch(catalog, identifier, branch)
    return Publication(identifier, branch, target, result.snapshot_id, "rebased", attempts + result.attempts - 1)


def _added_rows(table: Table, audited: int) -> pa.RecordBatchReader:
    """The rows of the data files ``audited`` holds that the snapshot its run started from did
    not: what the run's appends added on the branch."""
    from pyiceberg.io.pyarrow import ArrowScan, schema_to_pyarrow

    run = table.snapshot_by_id(audited).summary.additional_properties.get(RUN_ID_PROPERTY)
    base = None
    for snapshot in ancestors_of(table.snapshot_by_id(audited), table.metadata):
        props = snapshot.summary.additional_properties if snapshot.summary else {}
        if props.get(RUN_ID_PROPERTY) != run:
            base = snapshot.snapshot_id
            break
    before = {t.file.file_path for t in table.scan(snapshot_id=base).plan_files()} if base is not None else set()
    added = [t for t in table.scan(snapshot_id=audited).plan_files() if t.file.file_path not in before]
    if not added:
        return schema_to_pyarrow(table.schema(), include_field_ids=False).empty_table().to_reader()
    return ArrowScan(table.metadata, table.io, table.schema(), AlwaysTrue()).to_table(added).to_reader()


def _remove_branch(catalog: Catalog, identifier: str, branch: str) -> bool:
    for _ in range(5):
        table = catalog.load_table(identifier)
        if branch not in table.metadata.refs:
            return False
        try:
            with manage_snapshots(table) as snapshots:
                snapshots.remove_branch(branch)
            return True
        except CommitFailedException:
            continue
    return False


@dataclasses.dataclass(frozen=True)
class HeldBranch:
    table: str
    branch: str
    snapshot_id: int
    written: dt.datetime


def held_branches(catalog: Catalog, tables: list[str] | None = None) -> list[HeldBranch]:
    """Every audit branch still in the lakehouse (or in ``tables``): runs whose checks failed (or
    that stopped before publishing), newest first."""
    out = []
    for name in tables or list_tables(catalog):
        table = catalog.load_table(name)
        for ref_name, ref in table.metadata.refs.items():
            if is_audit_branch(ref_name) and ref.snapshot_ref_type.value == "branch":
                snap = table.snapshot_by_id(ref.snapshot_id)
                written = dt.datetime.fromtimestamp((snap.timestamp_ms if snap else 0) / 1000, dt.UTC)
                out.append(HeldBranch(name, ref_name, ref.snapshot_id, written))
    return sorted(out, key=lambda h: (h.written, h.table), reverse=True)


def expire_audit_branches(
    catalog: Catalog, *, older_than: dt.timedelta, now: dt.datetime | None = None, dry_run: bool = False,
    tables: list[str] | None = None,
) -> list[HeldBranch]:
    """Remove audit branches whose head is older than ``older_than`` (their snapshots then expire
    with the table's history, and their files go with the orphan sweep)."""
    cutoff = (now or dt.datetime.now(dt.UTC)) - older_than
    removed = []
    for held in held_branches(catalog, tables):
        if held.written < cutoff and (dry_run or _remove_branch(catalog, held.table, held.branch)):
            removed.append(held)
    return removed
