"""A table's past: its history, reading it as it was (time travel), and making it so again (rollback).

Every snapshot a write makes carries the Dagster run id and the window it replaced
(``lakehouse/write.py``), so history is readable per run and per day. A point in a table's past
is given as one text, ``as_of``:

- a snapshot id (digits): that snapshot, on main or on any branch;
- a branch or tag name: its head;
- a timestamp (ISO 8601, ``2026-12-01T14:30:00``, ``2026-12-01 14:30``, ``2026-12-01``; UTC unless
  it carries an offset; a date alone is its midnight): the snapshot main had then.

Only the snapshots a table keeps can be read: maintenance keeps those younger than
``RATATOUILLE_KEEP_DAYS``, at least the newest ``RATATOUILLE_KEEP_SNAPSHOTS``, and every branch
and tag head (``lakehouse/maintenance.py``).

Rollback never rewrites history: it is a new commit that makes main hold what it held then, for
the whole table (the old data files are added back, nothing is copied) or for a window of days
(those days' rows are read as they were and written through :func:`write_window`, the other days
untouched). A model's ``<model>__rejected`` table is rolled back with it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from collections.abc import Iterator

import duckdb
import pyarrow as pa
from pyiceberg.catalog import Catalog
from pyiceberg.conversions import from_bytes
from pyiceberg.exceptions import NoSuchTableError
from pyiceberg.table import Table
from pyiceberg.table.snapshots import Snapshot, ancestors_of
from pyiceberg.types import DateType

from ratatouille_assets.lakehouse import duck
from ratatouille_assets.lakehouse.catalog import table_locations
from ratatouille_assets.lakehouse.errors import LakehouseError
from ratatouille_assets.lakehouse.tables import day_counts
from ratatouille_assets.lakehouse.write import (
    CHUNK_ROWS,
    LANDING_DAY_COLUMN,
    PARTITION_PROPERTY,
    REJECTED_SUFFIX,
    RESTORED_FROM_PROPERTY,
    RUN_ID_PROPERTY,
    STRATEGY_PROPERTY,
    WINDOW_PROPERTY,
    Window,
    WriteResult,
    granularity_of,
    restore_snapshot,
    write_window,
)
from ratatouille_assets.settings import Settings

# Written into the summary of a window's rollback: the snapshot whose rows it restored.
ROLLED_BACK_TO_PROPERTY = "ratatouille.rolled-back-to"


class AsOfError(LakehouseError, ValueError):
    """A point in a table's past that the table does not have (or a text that names none)."""


class RollbackError(LakehouseError, ValueError):
    """A rollback that cannot be done as asked; the message says what would work."""


# --- resolving a point in the past -------------------------------------------------------------

_DIGITS = re.compile(r"-?\d+")


def parse_timestamp(text: str) -> dt.datetime | None:
    """``text`` as an aware UTC datetime, or None when it is no timestamp."""
    try:
        value = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.timezone.utc)
    return value.astimezone(dt.timezone.utc)


def resolve(table: Table, as_of: str | int) -> Snapshot:
    """The snapshot of ``table`` that ``as_of`` names (see the module's docstring)."""
    text = str(as_of).strip()
    identifier = ".".join(table.name())
    if _DIGITS.fullmatch(text):
        snapshot = table.snapshot_by_id(int(text))
        if snapshot is None:
            raise AsOfError(f"{identifier} has no snapshot {text}{_oldest(table)}: `rat history {identifier}` lists the ones it keeps")
        return snapshot
    if text in table.metadata.refs:
        return table.snapshot_by_id(table.metadata.refs[text].snapshot_id)
    moment = parse_timestamp(text)
    if moment is None:
        refs = ", ".join(sorted(table.metadata.refs)) or "none"
        raise AsOfError(
            f"{identifier}: {text!r} is neither a snapshot id, a branch or tag of the table (it has: {refs}), "
            "nor a timestamp such as 2026-12-01T14:30:00"
        )
    snapshot = snapshot_at(table, moment)
    if snapshot is None:
        raise AsOfError(f"{identifier} had no snapshot at {moment.isoformat()}{_oldest(table)}")
    return snapshot


def snapshot_at(table: Table, moment: dt.datetime) -> Snapshot | None:
    """The snapshot main had at ``moment`` (None: the table had none yet, or it is expired)."""
    millis = int(moment.timestamp() * 1000)
    for snapshot in main_ancestry(table):
        if snapshot.timestamp_ms <= millis:
            return snapshot
    return None


def main_ancestry(table: Table) -> list[Snapshot]:
    """Main's snapshots, newest first (back to the oldest one kept)."""
    current = table.current_snapshot()
    return list(ancestors_of(current, table.metadata)) if current else []


def _oldest(table: Table) -> str:
    ancestry = main_ancestry(table)
    if not ancestry:
        return " (it has no snapshot yet)"
    oldest = ancestry[-1]
    return f" (the oldest it keeps on main is {oldest.snapshot_id}, from {_when(oldest).isoformat()})"


def _when(snapshot: Snapshot) -> dt.datetime:
    return dt.datetime.fromtimestamp(snapshot.timestamp_ms / 1000, dt.timezone.utc)


# --- history --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class HistoryEntry:
    """One commit of a table: a write's delete and append snapshots are one entry."""

    snapshot_id: int
    parent_id: int | None
    committed_at: dt.datetime
    operation: str
    run_id: str | None
    partition: str | None
    window: str | None
    added_rows: int
    removed_rows: int
    added_files: int
    removed_files: int
    total_rows: int
    refs: tuple[str, ...]
    on_main: bool
    note: str = ""

    def covers(self, day: dt.date) -> bool:
        """Whether this commit wrote ``day`` (a write of no window wrote every day)."""
        if self.partition == day.isoformat():
            return True
        if not self.window:
            return True  # a write of the whole table
        _, _, spans = self.window.partition(":")
        for span in filter(None, spans.split(",")):  # several: the days a partitioned merge rewrote
            start, _, end = span.partition("..")
            if dt.date.fromisoformat(start) <= day <= dt.date.fromisoformat(end):
                return True
        return False


def history(
    table: Table, *, day: dt.date | None = None, run_id: str | None = None, branches: bool = True
) -> list[HistoryEntry]:
    """The table's commits, newest first: main's, and (``branches``) those only a branch or tag has."""
    on_main = {s.snapshot_id for s in main_ancestry(table)}
    refs: dict[int, list[str]] = {}
    for ref_name, ref in sorted(table.metadata.refs.items()):
        refs.setdefault(ref.snapshot_id, []).append(ref_name)
    by_id = {s.snapshot_id: s for s in table.snapshots()}
    merged_into: dict[int, int] = {}  # a write's delete snapshot -> its append snapshot
    for snapshot in by_id.values():
        parent = by_id.get(snapshot.parent_snapshot_id) if snapshot.parent_snapshot_id is not None else None
        if parent is not None and _op(snapshot) == "append" and _op(parent) == "delete" and _same_write(snapshot, parent):
            merged_into[parent.snapshot_id] = snapshot.snapshot_id
    entries = []
    for snapshot in by_id.values():
        if snapshot.snapshot_id in merged_into and snapshot.snapshot_id not in refs:
            continue
        if not branches and snapshot.snapshot_id not in on_main:
            continue
        parts = [snapshot]
        parent = by_id.get(snapshot.parent_snapshot_id) if snapshot.parent_snapshot_id is not None else None
        if parent is not None and merged_into.get(parent.snapshot_id) == snapshot.snapshot_id:
            parts.insert(0, parent)
        entries.append(_entry(parts, refs, on_main))
    if run_id:
        entries = [e for e in entries if e.run_id == run_id]
    if day:
        entries = [e for e in entries if e.covers(day)]
    return sorted(entries, key=lambda e: (e.committed_at, e.snapshot_id), reverse=True)


def _op(snapshot: Snapshot) -> str:
    return snapshot.summary.operation.value if snapshot.summary else "unknown"


def _props(snapshot: Snapshot) -> dict[str, str]:
    return dict(snapshot.summary.additional_properties) if snapshot.summary else {}


def _same_write(a: Snapshot, b: Snapshot) -> bool:
    pa_, pb = _props(a), _props(b)
    return pa_.get(RUN_ID_PROPERTY) is not None and all(pa_.get(k) == pb.get(k) for k in (RUN_ID_PROPERTY, WINDOW_PROPERTY))


def _entry(parts: list[Snapshot], refs: dict[int, list[str]], on_main: set[int]) -> HistoryEntry:
    last = parts[-1]
    props = _props(last)

    def total(key: str) -> int:
        return sum(int(_props(p).get(key, 0)) for p in parts)

    operation = "replace" if len(parts) == 2 else _op(last)
    note = ""
    if RESTORED_FROM_PROPERTY in props:
        operation, note = "rollback", f"restored snapshot {props[RESTORED_FROM_PROPERTY]}"
    elif ROLLED_BACK_TO_PROPERTY in props:
        operation, note = "rollback", f"window as of snapshot {props[ROLLED_BACK_TO_PROPERTY]}"
    elif props.get(STRATEGY_PROPERTY) == "merge":
        counts = {k: props.get(f"ratatouille.merge.{k}", "?") for k in ("inserted", "updated", "deleted", "kept")}
        operation, note = "merge", ", ".join(f"{v} {k}" for k, v in counts.items())
    elif props.get(STRATEGY_PROPERTY) == "scd2":
        counts = {k: props.get(f"ratatouille.scd2.{k}", "?") for k in ("new_keys", "new_versions", "late", "closed", "unchanged")}
        operation, note = "scd2", ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in counts.items())
    return HistoryEntry(
        snapshot_id=last.snapshot_id,
        parent_id=parts[0].parent_snapshot_id,
        committed_at=_when(last),
        operation=operation,
        run_id=props.get(RUN_ID_PROPERTY),
        partition=props.get(PARTITION_PROPERTY),
        window=props.get(WINDOW_PROPERTY),
        added_rows=total("added-records"),
        removed_rows=total("deleted-records"),
        added_files=total("added-data-files"),
        removed_files=total("deleted-data-files"),
        total_rows=int(props.get("total-records", 0)),
        refs=tuple(name for p in parts for name in refs.get(p.snapshot_id, [])),
        on_main=last.snapshot_id in on_main,
        note=note,
    )


@dataclasses.dataclass(frozen=True)
class RefInfo:
    name: str
    kind: str  # branch | tag
    snapshot_id: int
    committed_at: dt.datetime


def refs(table: Table) -> list[RefInfo]:
    """The table's branches and tags (main first)."""
    out = []
    for name, ref in table.metadata.refs.items():
        snapshot = table.snapshot_by_id(ref.snapshot_id)
        out.append(RefInfo(name, ref.snapshot_ref_type.value, ref.snapshot_id, _when(snapshot)))
    return sorted(out, key=lambda r: (r.name != "main", r.name))


# --- reading the past -----------------------------------------------------------------------------


def views_as_of(
    catalog: Catalog, as_of: str | dict[str, str] | None, branch: str = "main"
) -> dict[str, tuple[str, int | None]]:
    """``<namespace>.<table>`` -> (metadata location, snapshot id or None for current), for reads
    of the lakehouse as of ``as_of``.

    One text applies to every table: a timestamp reads each table as it was then (a table that
    had no snapshot yet is left out); a branch or tag reads the tables that have it there and the
    others on main; a snapshot id reads the one table that has it (the others current). A mapping
    ``{table: as_of}`` reads each named table at its own point and the others current.
    Current is main's head, or ``branch``'s where a table has it (dev mode).
    """
    locations = {f"{ns}.{name}": loc for (ns, name), loc in table_locations(catalog).items()}
    out: dict[str, tuple[str, int | None]] = {name: (loc, None) for name, loc in locations.items()}
    if branch != "main" and not isinstance(as_of, str):
        from ratatouille_assets.lakehouse.branches import branch_views

        out = branch_views(catalog, branch)
    if not as_of:
        return out
    if isinstance(as_of, dict):
        for name, point in as_of.items():
            if name not in locations:
                raise AsOfError(f"{name}: no such table (tables: {', '.join(sorted(locations))})")
            table = catalog.load_table(name)
            out[name] = (table.metadata_location, resolve(table, point).snapshot_id)
        return out
    text = str(as_of).strip()
    moment = None if _DIGITS.fullmatch(text) else parse_timestamp(text)
    found = False
    for name in sorted(locations):
        table = catalog.load_table(name)
        if _DIGITS.fullmatch(text):
            if table.snapshot_by_id(int(text)) is not None:
                out[name], found = (table.metadata_location, int(text)), True
        elif text in table.metadata.refs:
            out[name], found = (table.metadata_location, table.metadata.refs[text].snapshot_id), True
        elif moment is not None:
            snapshot = snapshot_at(table, moment)
            if snapshot is None:
                del out[name]
            else:
                out[name], found = (table.metadata_location, snapshot.snapshot_id), True
    if not found:
        what = "snapshot" if _DIGITS.fullmatch(text) else "branch or tag" if moment is None else "snapshot at that time"
        raise AsOfError(f"no table has the {what} {text!r}: `rat history <table>` lists a table's snapshots and refs")
    return out


def register_views(
    conn: duckdb.DuckDBPyConnection, catalog: Catalog, as_of: str | dict[str, str] | None = None, branch: str = "main"
) -> list[str]:
    """Create a ``<namespace>.<table>`` view per table, each as of ``as_of`` (see :func:`views_as_of`)."""
    views = views_as_of(catalog, as_of, branch)
    for name, (location, snapshot_id) in sorted(views.items()):
        namespace, _, table = name.partition(".")
        duck.point_view(conn, namespace, table, location, snapshot_id)
    return sorted(views)


# --- rollback -------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class RollbackResult:
    table: str
    to_snapshot: int
    from_snapshot: int | None
    snapshot_id: int | None  # the new commit (None: the table already was so)
    window: Window | None
    # day -> (rows before, rows after): the window's days, or the days a whole-table rollback changed
    days: dict[dt.date, tuple[int, int]]
    rows_before: int
    rows_after: int
    metadata_location: str
    how: str  # files (old files added back), rows (old rows rewritten), unchanged
    dropped_columns: tuple[str, ...] = ()
    companion: RollbackResult | None = None


def partition_column(table: Table) -> str | None:
    """The column a table's days are on (None: unpartitioned)."""
    fields = table.spec().fields
    if len(fields) != 1:
        return None
    return table.schema().find_field(fields[0].source_id).name


def rollback(
    catalog: Catalog,
    identifier: str,
    to: str | int,
    *,
    run_id: str,
    days: tuple[dt.date, dt.date] | None = None,
    settings: Settings | None = None,
    to_snapshot: int | None = None,
    branch: str = "main",
) -> RollbackResult:
    """Make main hold ``identifier`` as of ``to``: the whole table, or only the days ``days``
    (inclusive; the other days stay as they are). ``<identifier>__rejected``, when it exists, is
    rolled back with it, to the snapshot its own run wrote (``to`` as a point in time otherwise).
    A rollback commits to main, so it is refused in dev mode (``branch`` other than main)."""
    if branch != "main":
        raise RollbackError(
            f"{identifier}: a rollback commits to main, and dev mode (branch {branch!r}) never writes main: "
            "run it without RATATOUILLE_BRANCH, or drop and remake the branch (rat branch drop)"
        )
    try:
        table = catalog.load_table(identifier)
    except NoSuchTableError:
        raise RollbackError(f"{identifier}: no such table") from None
    target = catalog_snapshot(table, to, to_snapshot)
    current = table.current_snapshot()
    if days is None:
        result = _rollback_table(catalog, table, identifier, target, run_id, settings)
    else:
        result = _rollback_window(catalog, table, identifier, target, days, run_id, settings)
    companion_id = identifier + REJECTED_SUFFIX
    if not identifier.endswith(REJECTED_SUFFIX) and catalog.table_exists(companion_id):
        companion = catalog.load_table(companion_id)
        point = _companion_snapshot(companion, target)
        if point is not None:
            try:
                companion_result = rollback(
                    catalog, companion_id, point.snapshot_id, run_id=run_id, days=days, settings=settings,
                    to_snapshot=point.snapshot_id,
                )
            except RollbackError:
                companion_result = None
            result = dataclasses.replace(result, companion=companion_result)
    return dataclasses.replace(result, from_snapshot=current.snapshot_id if current else None)


def catalog_snapshot(table: Table, to: str | int, to_snapshot: int | None = None) -> Snapshot:
    """The snapshot ``to`` names (``to_snapshot``, when given, is its id already)."""
    return table.snapshot_by_id(to_snapshot) if to_snapshot is not None else resolve(table, to)


def _companion_snapshot(companion: Table, target: Snapshot) -> Snapshot | None:
    """The rejected table's snapshot of the run that wrote ``target``, else its state at that time."""
    run = _props(target).get(RUN_ID_PROPERTY)
    if run:
        written = [s for s in companion.snapshots() if _props(s).get(RUN_ID_PROPERTY) == run]
        if written:
            return max(written, key=lambda s: s.sequence_number or 0)
    return snapshot_at(companion, _when(target))


def _rollback_table(catalog, table, identifier, target, run_id, settings) -> RollbackResult:
    before = _total(table.current_snapshot())
    changed_days: set[dt.date] = set()
    column = partition_column(table)
    if column:
        changed_days = _changed_days(table, column, target)
    old_counts = _counts(table, column, changed_days, table.current_snapshot())
    try:
        result = restore_snapshot(catalog, identifier, target.snapshot_id, run_id=run_id)
        how = "files" if result else "unchanged"
    except ValueError:
        result = write_window(
            catalog, identifier, _rows(table, target, None, settings), window=None, run_id=run_id,
            extra_properties={ROLLED_BACK_TO_PROPERTY: str(target.snapshot_id)},
        )
        how = "rows"
    table = catalog.load_table(identifier)
    new_counts = _counts(table, column, changed_days, table.current_snapshot())
    return RollbackResult(
        table=identifier, to_snapshot=target.snapshot_id, from_snapshot=None,
        snapshot_id=result.snapshot_id if result else None, window=None,
        days={d: (old_counts.get(d, 0), new_counts.get(d, 0)) for d in sorted(changed_days)},
        rows_before=before, rows_after=_total(table.current_snapshot()),
        metadata_location=table.metadata_location, how=how,
    )


def _rollback_window(catalog, table, identifier, target, days, run_id, settings) -> RollbackResult:
    column = partition_column(table)
    if column is None:
        raise RollbackError(f"{identifier} is not partitioned by day: roll back the whole table (no --day/--start)")
    start, end = days
    nulls_by = LANDING_DAY_COLUMN if LANDING_DAY_COLUMN in table.schema().column_names and column != LANDING_DAY_COLUMN else None
    window = Window(column=column, start=start, end=end, nulls_by=nulls_by)
    before = day_counts(table, window) if table.current_snapshot() else {d: 0 for d in window.days()}
    target_columns = [f.name for f in table.schemas()[target.schema_id].fields] if target.schema_id in table.schemas() else []
    dropped = tuple(c for c in target_columns if c not in table.schema().column_names)
    result: WriteResult = write_window(
        catalog, identifier, _rows(table, target, window, settings), window=window, run_id=run_id,
        granularity=granularity_of(table, column) or "day",
        extra_properties={ROLLED_BACK_TO_PROPERTY: str(target.snapshot_id)},
    )
    table = catalog.load_table(identifier)
    after = day_counts(table, window, result.snapshot_id)
    return RollbackResult(
        table=identifier, to_snapshot=target.snapshot_id, from_snapshot=None, snapshot_id=result.snapshot_id,
        window=window, days={d: (before[d], after[d]) for d in window.days()},
        rows_before=sum(before.values()), rows_after=sum(after.values()),
        metadata_location=table.metadata_location, how="rows", dropped_columns=dropped,
    )


def _rows(table: Table, target: Snapshot, window: Window | None, settings: Settings | None) -> Iterator[pa.Table]:
    """The rows ``target`` held (in ``window``), with the columns the table has now."""
    conn = duck.connect(settings)
    try:
        relation = conn.sql(f"SELECT * FROM {duck.scan_sql(table.metadata_location, target.snapshot_id)}")
        keep = [c for c in relation.columns if c in table.schema().column_names]
        where = f" WHERE {_window_sql(window)}" if window else ""
        select = ", ".join(duck.quote_ident(c) for c in keep)
        reader = conn.execute(
            f"SELECT {select} FROM {duck.scan_sql(table.metadata_location, target.snapshot_id)}{where}"
        ).to_arrow_reader(CHUNK_ROWS)
        empty = True
        for batch in reader:
            empty = False
            yield pa.Table.from_batches([batch])
        if empty:
            yield reader.schema.empty_table()
    finally:
        conn.close()


def _window_sql(window: Window) -> str:
    column = duck.quote_ident(window.column)
    sql = window.to_sql(column)
    if window.nulls_by:
        sql = f"({sql} OR ({column} IS NULL AND {window.to_sql(duck.quote_ident(window.nulls_by))}))"
    return sql


def _total(snapshot: Snapshot | None) -> int:
    return int(_props(snapshot).get("total-records", 0)) if snapshot else 0


def _changed_days(table: Table, column: str, target: Snapshot) -> set[dt.date]:
    """The days whose rows a whole-table rollback to ``target`` may change: every day that a file
    of main but not of ``target``, or of ``target`` but not of main, holds (by its column bounds)."""
    current = table.current_snapshot()
    now = {t.file.file_path: t.file for t in table.scan(snapshot_id=current.snapshot_id).plan_files()} if current else {}
    then = {t.file.file_path: t.file for t in table.scan(snapshot_id=target.snapshot_id).plan_files()}
    changed = [f for p, f in now.items() if p not in then] + [f for p, f in then.items() if p not in now]
    field = table.schema().find_field(column)
    days: set[dt.date] = set()
    for data_file in changed:
        low, high = (data_file.lower_bounds or {}).get(field.field_id), (data_file.upper_bounds or {}).get(field.field_id)
        if low is None or high is None:
            continue
        first, last = _day_of(field.field_type, low), _day_of(field.field_type, high)
        days.update(first + dt.timedelta(days=i) for i in range((last - first).days + 1))
    return days


def _day_of(field_type, raw: bytes) -> dt.date:
    value = from_bytes(field_type, raw)
    if isinstance(field_type, DateType):
        return dt.date(1970, 1, 1) + dt.timedelta(days=value)
    return (dt.datetime(1970, 1, 1) + dt.timedelta(microseconds=value)).date()


def _counts(table: Table, column: str | None, days: set[dt.date], snapshot: Snapshot | None) -> dict[dt.date, int]:
    if not column or not days or snapshot is None:
        return {}
    nulls_by = LANDING_DAY_COLUMN if LANDING_DAY_COLUMN in table.schema().column_names and column != LANDING_DAY_COLUMN else None
    window = Window(column=column, start=min(days), end=max(days), nulls_by=nulls_by)
    return {d: n for d, n in day_counts(table, window, snapshot.snapshot_id).items() if d in days}
