"""Data branches across the lakehouse: a name that each table may have as an Iceberg branch.

A write with ``branch=<name>`` (``write_window``) makes the table's branch at main's head on
first use and commits there; main is untouched. These functions look at one branch name over
every table: list them, diff a branch with main per table and partition, publish it (main
fast-forwarded to the branch's head, table by table, in layer order) and drop it.

Publishing never merges: main moves to the branch's head only when main's head is the branch's
own ancestor (nothing was committed to main since the branch was made). A table whose main moved
is refused by name, and the other tables still publish; run the branch's work again on a new
branch made from today's main, or roll main back first.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import CommitFailedException
from pyiceberg.table import Table
from pyiceberg.table.snapshots import ancestors_of

from ratatouille_assets.lakehouse.errors import LakehouseError
from ratatouille_assets.lakehouse.pyiceberg_adapter import manage_snapshots
from ratatouille_assets.lakehouse.tables import list_tables
from ratatouille_assets.lakehouse.write import MAIN_BRANCH
from ratatouille_assets.layers import LAYERS


class BranchError(LakehouseError, ValueError):
    """A branch operation that cannot be done as asked."""


def check_name(name: str) -> str:
    if not name or name == MAIN_BRANCH or name.strip() != name or any(c in name for c in " \t\n'\"\\"):
        raise BranchError(f"{name!r} is not a branch name to work on: give a name other than main, without spaces or quotes")
    return name


def _layer_order(name: str) -> tuple[int, str]:
    layer = name.split(".", 1)[0]
    return (LAYERS.index(layer) if layer in LAYERS else len(LAYERS), name)


def branch_head(table: Table, branch: str) -> tuple[str, int | None]:
    """Where a reader on ``branch`` reads ``table``: (metadata location, the branch's head), or
    (location, None: main's current snapshot) when the table has no such branch."""
    ref = table.metadata.refs.get(branch) if branch != MAIN_BRANCH else None
    if ref is None or ref.snapshot_ref_type.value != "branch":
        return table.metadata_location, None
    return table.metadata_location, ref.snapshot_id


def branch_views(catalog: Catalog, branch: str) -> dict[str, tuple[str, int | None]]:
    """``<namespace>.<table>`` -> where a reader on ``branch`` reads it (see :func:`branch_head`)."""
    return {name: branch_head(catalog.load_table(name), branch) for name in list_tables(catalog)}


def tables_with(catalog: Catalog, branch: str) -> list[str]:
    """The tables that have branch ``branch``, in layer order (bronze, silver, gold, others)."""
    out = []
    for name in list_tables(catalog):
        ref = catalog.load_table(name).metadata.refs.get(branch)
        if ref is not None and ref.snapshot_ref_type.value == "branch":
            out.append(name)
    return sorted(out, key=_layer_order)


@dataclasses.dataclass(frozen=True)
class BranchInfo:
    name: str
    tables: tuple[str, ...]
    newest: dt.datetime


def list_branches(catalog: Catalog) -> list[BranchInfo]:
    """Every branch name other than main, with the tables that have it and its newest head's time."""
    found: dict[str, tuple[list[str], int]] = {}
    for name in list_tables(catalog):
        table = catalog.load_table(name)
        for ref_name, ref in table.metadata.refs.items():
            if ref_name == MAIN_BRANCH or ref.snapshot_ref_type.value != "branch":
                continue
            tables, newest = found.setdefault(ref_name, ([], 0))
            tables.append(name)
            found[ref_name] = (tables, max(newest, table.snapshot_by_id(ref.snapshot_id).timestamp_ms))
    return [
        BranchInfo(name, tuple(sorted(tables, key=_layer_order)), dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc))
        for name, (tables, ms) in sorted(found.items())
    ]


@dataclasses.dataclass(frozen=True)
class PartitionDiff:
    partition: str  # the Iceberg partition ("2024-01-02", a month's "2024-01"), or "" for an unpartitioned table
    main_rows: int
    branch_rows: int


@dataclasses.dataclass(frozen=True)
class TableDiff:
    table: str
    main_snapshot: int | None
    branch_snapshot: int
    main_moved: bool  # main has commits the branch does not: publishing it is refused
    partitions: tuple[PartitionDiff, ...]


def diff(catalog: Catalog, branch: str) -> list[TableDiff]:
    """Per table that has ``branch`` and differs from main: the partitions whose files differ."""
    out = []
    for name in tables_with(catalog, branch):
        table = catalog.load_table(name)
        head = table.snapshot_by_name(branch)
        main = table.current_snapshot()
        if main is not None and main.snapshot_id == head.snapshot_id:
            continue
        changed = _changed_partitions(table, main.snapshot_id if main else None, head.snapshot_id)
        out.append(TableDiff(
            table=name, main_snapshot=main.snapshot_id if main else None, branch_snapshot=head.snapshot_id,
            main_moved=not _is_ancestor(table, main.snapshot_id if main else None, head.snapshot_id),
            partitions=tuple(changed),
        ))
    return out


def _files_by_partition(table: Table, snapshot_id: int | None) -> dict[str, dict[str, int]]:
    """partition label -> {file path: rows}"""
    if snapshot_id is None:
        return {}
    schema = table.schema()
    spec_fields = {spec_id: spec.fields for spec_id, spec in table.specs().items()}
    out: dict[str, dict[str, int]] = {}
    for task in table.scan(snapshot_id=snapshot_id).plan_files():
        data_file = task.file
        fields = spec_fields.get(data_file.spec_id, [])
        label = "/".join(
            _label(field.transform, schema.find_field(field.source_id).field_type, data_file.partition[i])
            for i, field in enumerate(fields)
        )
        out.setdefault(label, {})[data_file.file_path] = data_file.record_count
    return out


def _label(transform, source_type, value) -> str:
    """A partition value as people read it: 2024-01-02, 2024-01, 2024."""
    if value is None:
        return "null"
    return transform.to_human_string(transform.result_type(source_type), value)


def _changed_partitions(table: Table, main_id: int | None, branch_id: int) -> list[PartitionDiff]:
    main, branch = _files_by_partition(table, main_id), _files_by_partition(table, branch_id)
    changed = []
    for label in sorted(set(main) | set(branch)):
        if main.get(label, {}).keys() != branch.get(label, {}).keys():
            changed.append(PartitionDiff(label, sum(main.get(label, {}).values()), sum(branch.get(label, {}).values())))
    return changed


def _is_ancestor(table: Table, ancestor_id: int | None, snapshot_id: int) -> bool:
    if ancestor_id is None:
        return True
    return any(s.snapshot_id == ancestor_id for s in ancestors_of(table.snapshot_by_id(snapshot_id), table.metadata))


@dataclasses.dataclass(frozen=True)
class Published:
    table: str
    snapshot_id: int | None  # main's new head (None: refused)
    refused: str = ""


def publish(catalog: Catalog, branch: str, *, attempts: int = 5) -> list[Published]:
    """Fast-forward main to ``branch`` in every table that has it, bronze first, gold last."""
    check_name(branch)
    out = []
    for name in tables_with(catalog, branch):
        out.append(_publish_table(catalog, name, branch, attempts))
    return out


def _publish_table(catalog: Catalog, name: str, branch: str, attempts: int) -> Published:
    for _ in range(attempts):
        table = catalog.load_table(name)
        head = table.snapshot_by_name(branch)
        main = table.current_snapshot()
        if main is not None and main.snapshot_id == head.snapshot_id:
            return Published(name, head.snapshot_id)
        if not _is_ancestor(table, main.snapshot_id if main else None, head.snapshot_id):
            return Published(name, None, refused=(
                f"{name}: main moved since branch {branch!r} was made (main is at {main.snapshot_id}, which the "
                f"branch does not contain): not published. Redo the branch's work on a branch made from today's "
                f"main, or roll main back (rat rollback) before publishing."
            ))
        try:
            # The commit asserts main's head: a write to main meanwhile fails it, and it is checked again.
            with manage_snapshots(table) as snapshots:
                snapshots.set_current_snapshot(snapshot_id=head.snapshot_id)
            return Published(name, head.snapshot_id)
        except CommitFailedException:
            continue
    return Published(name, None, refused=f"{name}: main kept moving during {attempts} attempts to publish; run it again")


def drop(catalog: Catalog, branch: str) -> list[str]:
    """Remove branch ``branch`` from every table that has it (its files go with the orphan sweep
    once no snapshot kept references them)."""
    check_name(branch)
    dropped = []
    for name in tables_with(catalog, branch):
        table = catalog.load_table(name)
        with manage_snapshots(table) as snapshots:
            snapshots.remove_branch(branch)
        dropped.append(name)
    return dropped
