"""The one write path to Iceberg.

Every table write in the platform (bronze ingest and dbt models alike) goes through
:func:`write_window`, so idempotency, conflict retries and snapshot metadata live here only.

A write *owns* a window of an identity-partitioned date column (or the whole table when the table
is unpartitioned) and replaces exactly the rows of that window in one atomic commit, together with
any additive schema change. Re-running the same write gives the same table.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import itertools
import logging
import random
import time
import uuid
import warnings
from collections.abc import Callable, Iterable, Iterator

import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import (
    CommitFailedException,
    NamespaceAlreadyExistsError,
    NoSuchTableError,
    TableAlreadyExistsError,
    ValidationError,
)
from pyiceberg.expressions import (
    AlwaysFalse,
    AlwaysTrue,
    And,
    BooleanExpression,
    GreaterThanOrEqual,
    IsNull,
    LessThan,
    LessThanOrEqual,
    Or,
)
from pyiceberg.io.pyarrow import schema_to_pyarrow
from pyiceberg.manifest import DataFile
from pyiceberg.schema import Schema
from pyiceberg.table import Table
from pyiceberg.table.update.snapshot import ManageSnapshots
from pyiceberg.transforms import DayTransform, IdentityTransform, MonthTransform, Transform, YearTransform
from pyiceberg.types import DateType, TimestampType, TimestamptzType
from sqlalchemy.exc import OperationalError

from ratatouille_assets.lakehouse import trace
from ratatouille_assets.lakehouse.errors import (
    CatalogLockedError,
    CommitConflictError,
    HeadMovedError,
    IncompatibleSchemaError,
    PartitionContractError,
    PartitionTypeError,
    SchemaChangeRefusedError,
    SchemaEvolutionError,
    SnapshotExpiredError,
)
from ratatouille_assets.lakehouse.pyiceberg_adapter import PendingFiles, start_write, transaction, write_files
from ratatouille_assets.settings import RESERVED_BRANCH_PREFIX

log = logging.getLogger(__name__)

# Keys written into every snapshot summary, so a partition can be traced to its snapshot.
RUN_ID_PROPERTY = "ratatouille.run-id"
PARTITION_PROPERTY = "ratatouille.partition"
WINDOW_PROPERTY = "ratatouille.window"
ROWS_PROPERTY = "ratatouille.rows"
# How the rows were computed, when not by replacing what the run owns: "merge" (an upsert into the
# head it read) or "scd2" (versions added to the history it read). Such a snapshot cannot be
# carried onto a head that moved (see wap.py).
STRATEGY_PROPERTY = "ratatouille.strategy"
# On an append's snapshot: what makes it once-only (the Dagster root run id; see write_window).
APPEND_KEY_PROPERTY = "ratatouille.append-key"
HEAD_DEPENDENT_STRATEGIES = ("merge", "scd2")
# write_window(expect_head=ANY_HEAD): the data does not depend on what the table held.
ANY_HEAD = object()
MAIN_BRANCH = "main"
BRANCH_PROPERTY = "ratatouille.branch"  # on a snapshot written to a branch other than main
AUDIT_BRANCH_PROPERTY = "ratatouille.audit-branch"  # on a snapshot written to a run's audit branch

# A model's rejected rows live in a table of their own beside it, ``<model>__rejected``, written in
# the same run and window; a row with no partition value is filed there by its landing day.
REJECTED_SUFFIX = "__rejected"
LANDING_DAY_COLUMN = "_landing_date"


# pyiceberg retries a conflicting commit by itself (commit.retry.*), but only the snapshot part of
# a transaction. We retry the whole write (reload, re-evolve the schema, rebuild, recommit) in
# write_window, so the table's own retry is off: one retry policy, in one place, observable.
#
# Daily writes add a manifest per commit; readers (DuckDB's iceberg_scan, every dashboard query)
# open every manifest of the snapshot, so after a year a query read 365 of them (~0.6 ms each).
# Appends merge small manifests once 16 have accumulated: reads stay flat as history grows.
#
# Every commit also rewrites the table metadata, which lists every snapshot: after a year of daily
# writes a commit cost 16x a first-day commit (pyiceberg deep-copies the metadata per update). A
# write keeps metadata files only for the last 20 commits; expiring snapshots (and deleting the
# files only they referenced) is maintenance's job (lakehouse/maintenance.py), on a schedule and
# by policy, never a side effect of a write.
TABLE_PROPERTIES = {
    "commit.retry.num-retries": "0",
    "commit.manifest-merge.enabled": "true",
    "commit.manifest.min-count-to-merge": "16",
    "write.metadata.delete-after-commit.enabled": "true",
    "write.metadata.previous-versions-max": "20",
}


def use_system_memory_pool() -> None:
    """Make the C library's allocator pyarrow's default for this process (the definitions call it).

    Measured on the model stream's batches (fresh 250k-row batches from DuckDB, as a model
    writes them): with pyarrow's default, mimalloc, splitting each into kept and rejected rows
    took ~100 ms; with the system allocator ~10 ms. A whole 10M-row day ran 47 s against 37 s, peak
    RSS 2.76 against 2.79 GB. DuckDB allocates its own Arrow buffers; this changes what pyarrow
    allocates (filters, casts, Parquet encoding). A process that never builds the definitions (a
    notebook) keeps its own choice."""
    if pa.default_memory_pool().backend_name != "system":
        pa.set_memory_pool(pa.system_memory_pool())


@dataclasses.dataclass(frozen=True)
class Window:
    """An inclusive range of days on a table's partition column (a DATE, or the day of a TIMESTAMP).

    ``nulls_by`` names a DATE column that files rows whose partition value is NULL (the rejected
    rows of a model, by their ``_landing_date``): such rows belong to the window when that column
    is in it, so a rerun of the window replaces them like every other row.

    ``only``: the days of ``start..end`` the window holds, when not all of them (a partitioned
    merge replaces the days its changes touch, which need not be contiguous); empty: no day.
    """

    column: str
    start: dt.date
    end: dt.date
    nulls_by: str | None = None
    only: frozenset[dt.date] | None = None

    def __post_init__(self) -> None:
        if self.end < self.start:
            raise ValueError(f"window end {self.end} is before its start {self.start}")
        if self.only is not None:
            object.__setattr__(self, "only", frozenset(self.only))
            if any(d < self.start or d > self.end for d in self.only):
                raise ValueError(f"window days {sorted(self.only)} are not all in {self.start}..{self.end}")

    @classmethod
    def of_days(cls, column: str, days: Iterable[dt.date], nulls_by: str | None = None) -> Window:
        """The window of exactly ``days`` (not empty)."""
        chosen = frozenset(days)
        if not chosen:
            raise ValueError("a window of days needs at least one day")
        window = cls(column, min(chosen), max(chosen), nulls_by)
        return window if len(chosen) == len(window.days()) else dataclasses.replace(window, only=chosen)

    def __str__(self) -> str:
        """``column:start..end``; with chosen days, their runs: ``column:a..b,c..c`` (no day: ``column:``)."""
        return f"{self.column}:" + ",".join(f"{a.isoformat()}..{b.isoformat()}" for a, b in self.runs())

    def days(self) -> list[dt.date]:
        every = [self.start + dt.timedelta(days=i) for i in range((self.end - self.start).days + 1)]
        return every if self.only is None else [d for d in every if d in self.only]

    def runs(self) -> list[tuple[dt.date, dt.date]]:
        """The window as ranges of consecutive days, first to last."""
        if self.only is None:
            return [(self.start, self.end)]
        out: list[tuple[dt.date, dt.date]] = []
        for day in sorted(self.only):
            if out and day == out[-1][1] + dt.timedelta(days=1):
                out[-1] = (out[-1][0], day)
            else:
                out.append((day, day))
        return out

    def to_filter(self, schema: Schema | None = None) -> BooleanExpression:
        """The rows of the window, as an Iceberg filter on ``schema`` (a timestamp column: its days)."""
        kind = _column_kind(schema, self.column) if schema is not None else "date"
        runs = self.runs()
        expression = _any([_day_range(self.column, start, end, kind) for start, end in runs])
        if self.nulls_by is not None:
            nulls = _any([_day_range(self.nulls_by, start, end, "date") for start, end in runs])
            expression = Or(expression, And(IsNull(self.column), nulls))
        return expression

    def to_sql(self, expression: str) -> str:
        """The window as a SQL condition on ``expression`` (a DATE or TIMESTAMP column: a timestamp
        is in the window when its day is), without ``nulls_by``. Plain comparisons with the column
        itself, so DuckDB prunes files on it."""
        ranges = [f"({expression} >= DATE '{a.isoformat()}' AND {expression} < DATE '{(b + dt.timedelta(days=1)).isoformat()}')"
                  for a, b in self.runs()]
        return "(" + " OR ".join(ranges) + ")" if ranges else "false"


def _any(expressions: list[BooleanExpression]) -> BooleanExpression:
    """Or of ``expressions`` as a balanced tree (pyiceberg's visitors recurse: a chain of a thousand
    days would exceed Python's recursion limit)."""
    if not expressions:
        return AlwaysFalse()
    if len(expressions) == 1:
        return expressions[0]
    middle = len(expressions) // 2
    return Or(_any(expressions[:middle]), _any(expressions[middle:]))


def _day_range(column: str, start: dt.date, end: dt.date, kind: str) -> BooleanExpression:
    if kind == "date":
        return And(GreaterThanOrEqual(column, start.isoformat()), LessThanOrEqual(column, end.isoformat()))
    suffix = "+00:00" if kind == "timestamptz" else ""
    after = end + dt.timedelta(days=1)
    return And(
        GreaterThanOrEqual(column, f"{start.isoformat()}T00:00:00{suffix}"),
        LessThan(column, f"{after.isoformat()}T00:00:00{suffix}"),
    )


def _column_kind(schema: Schema, column: str) -> str:
    field_type = schema.find_field(column).field_type
    if isinstance(field_type, TimestamptzType):
        return "timestamptz"
    if isinstance(field_type, TimestampType):
        return "timestamp"
    if isinstance(field_type, DateType):
        return "date"
    raise PartitionTypeError(f"partition column '{column}' is {field_type}: partition on a DATE or TIMESTAMP column")


@dataclasses.dataclass(frozen=True)
class WriteResult:
    table: str
    snapshot_id: int | None
    metadata_location: str
    rows_written: int
    total_rows: int
    attempts: int
    schema: Schema
    summary: dict[str, str]


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    """How long a conflicting commit keeps trying: at least ``attempts`` times and at least
    ``patience_s`` seconds, whichever is later. A writer whose commit takes long (a window of
    years) against writers that commit often must never give up on a commit that would succeed
    a second later, so the bound is time as well as attempts."""

    attempts: int = 8
    base_delay_s: float = 0.05
    max_delay_s: float = 2.0
    patience_s: float = 120.0

    def exhausted(self, attempt: int, elapsed_s: float) -> bool:
        return attempt >= self.attempts and elapsed_s >= self.patience_s

    def delay(self, attempt: int) -> float:
        # Full jitter: conflicting writers spread out instead of retrying in lockstep.
        return random.uniform(0, min(self.max_delay_s, self.base_delay_s * 2**attempt))


def normalize_arrow(data: pa.Table) -> pa.Table:
    """Make Arrow types Iceberg can hold: microsecond timestamps, signed ints, plain strings."""
    fields = []
    for field in data.schema:
        t = field.type
        if pa.types.is_timestamp(t) and (t.unit != "us" or t.tz not in (None, "UTC")):
            # Iceberg keeps instants in UTC (and files them by their UTC day): same instants, UTC labels.
            t = pa.timestamp("us", tz="UTC" if t.tz else None)
        elif pa.types.is_unsigned_integer(t):
            t = pa.int64() if t.bit_width >= 32 else pa.int32()
        elif pa.types.is_large_string(t):
            t = pa.string()
        elif pa.types.is_dictionary(t):
            t = t.value_type
        elif pa.types.is_null(t):
            t = pa.string()
        fields.append(pa.field(field.name, t, nullable=True))
    return data.cast(pa.schema(fields))


def _ensure_namespace(catalog: Catalog, namespace: str) -> None:
    try:
        catalog.create_namespace(namespace)
    except NamespaceAlreadyExistsError:
        pass
    except Exception as exc:
        # Two first writers at once: the SQL catalog's check passes for both and the second insert
        # fails on its database's unique key (an IntegrityError, not NamespaceAlreadyExistsError).
        try:
            catalog.load_namespace_properties(namespace)
        except Exception:  # noqa: BLE001 - it really does not exist: the original error is the one to see
            raise exc from None
        log.info("namespace %s was created by a concurrent writer", namespace)


# How coarse a table's Iceberg partitions are on its window column. Dagster partitions stay daily
# whatever this says: a write replaces exactly its window's days, inside a month or year partition
# too (the files of a partially covered partition are rewritten without those days). A source of a
# few hundred rows a day is better kept as one file per month than 30 files of a few KB.
GRANULARITIES = ("day", "month", "year")
_COARSE = {"month": MonthTransform, "year": YearTransform}


def partition_transform(arrow_type: pa.DataType, granularity: str = "day") -> Transform:
    """How a table is partitioned on its window column: by value (a DATE, day granularity), by day
    (a TIMESTAMP), or by month or year."""
    if granularity not in GRANULARITIES:
        raise ValueError(f"partition granularity must be one of {', '.join(GRANULARITIES)}, got {granularity!r}")
    if not (pa.types.is_date(arrow_type) or pa.types.is_timestamp(arrow_type)):
        raise PartitionTypeError(f"is {arrow_type}: partition on a DATE or TIMESTAMP column")
    if granularity in _COARSE:
        return _COARSE[granularity]()
    return IdentityTransform() if pa.types.is_date(arrow_type) else DayTransform()


def _partition_name(column: str, transform: Transform) -> str:
    if isinstance(transform, IdentityTransform):
        return column
    return f"{column}_{ {DayTransform: 'day', MonthTransform: 'month', YearTransform: 'year'}[type(transform)] }"


def granularity_of(table: Table, column: str) -> str | None:
    """The granularity ``table`` is partitioned on ``column`` with (None: not partitioned on it)."""
    if column not in table.schema().column_names:
        return None
    field_id = table.schema().find_field(column).field_id
    for field in table.spec().fields:
        if field.source_id == field_id:
            if isinstance(field.transform, (IdentityTransform, DayTransform)):
                return "day"
            if isinstance(field.transform, MonthTransform):
                return "month"
            if isinstance(field.transform, YearTransform):
                return "year"
    return None


def load_or_create(
    catalog: Catalog, identifier: str, schema: pa.Schema, partition_column: str | None, granularity: str = "day"
) -> Table:
    """Load ``identifier``, creating it from ``schema`` (partitioned on ``partition_column``) if it does not exist.

    At day granularity a DATE column is identity-partitioned, a TIMESTAMP column by its day;
    month and year partition either by month or year. Creation and the partition spec are one
    commit, so no writer ever sees an unpartitioned table.
    """
    try:
        return catalog.load_table(identifier)
    except NoSuchTableError:
        pass
    transform = None
    if partition_column:
        if partition_column not in schema.names:
            raise SchemaEvolutionError(f"{identifier}: partition column '{partition_column}' is not in the data")
        try:
            transform = partition_transform(schema.field(partition_column).type, granularity)
        except PartitionTypeError as exc:
            raise PartitionTypeError(f"{identifier}: partition column '{partition_column}' {exc}") from None
    _ensure_namespace(catalog, identifier.split(".")[0])
    try:
        with catalog.create_table_transaction(identifier, schema=schema, properties=TABLE_PROPERTIES) as tx:
            if partition_column:
                with tx.update_spec() as spec:
                    spec.add_field(partition_column, transform, _partition_name(partition_column, transform))
    except (TableAlreadyExistsError, CommitFailedException):
        pass  # a concurrent writer created it first: use theirs
    return catalog.load_table(identifier)


def _needs_schema_update(table_schema: Schema, data: pa.Schema) -> bool:
    """Whether ``data`` brings columns the table lacks or types it must widen to hold them."""
    current = schema_to_pyarrow(table_schema, include_field_ids=False)
    for field in data:
        if field.name not in current.names:
            return True
        if not _castable(field.type, current.field(field.name).type):
            return True
    return False


def _castable(src: pa.DataType, dst: pa.DataType) -> bool:
    if src == dst:
        return True
    if pa.types.is_integer(src) and pa.types.is_integer(dst):
        return dst.bit_width >= src.bit_width
    if pa.types.is_floating(src) and pa.types.is_floating(dst):
        return dst.bit_width >= src.bit_width
    # pyiceberg reads strings as large_string: the same Iceberg type, no schema change.
    if _is_text(src) and _is_text(dst):
        return True
    if _is_bytes(src) and _is_bytes(dst):
        return True
    if pa.types.is_timestamp(src) and pa.types.is_timestamp(dst):
        return (src.tz is None) == (dst.tz is None)
    if pa.types.is_decimal(src) and pa.types.is_decimal(dst):
        return src.scale == dst.scale and dst.precision >= src.precision
    return False


def type_fits(src: pa.DataType, dst: pa.DataType) -> bool:
    """Whether values of Arrow type ``src`` can be written into a table column of type ``dst``:
    as they are, or by widening the column (int to long, float to double, a larger decimal)."""
    return _castable(src, dst) or _castable(dst, src)


def table_types(catalog: Catalog, identifier: str) -> dict[str, pa.DataType]:
    """The Arrow type of each column of ``identifier`` ({} for a table not created yet)."""
    try:
        table = catalog.load_table(identifier)
    except NoSuchTableError:
        return {}
    return {f.name: f.type for f in schema_to_pyarrow(table.schema(), include_field_ids=False)}


def _is_text(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t)


def _is_bytes(t: pa.DataType) -> bool:
    return pa.types.is_binary(t) or pa.types.is_large_binary(t)


def _as_day(value) -> dt.date:
    return value.date() if isinstance(value, dt.datetime) else value


def _check_window(identifier: str, data: pa.Table, window: Window | None) -> None:
    """Every row belongs to the window: its partition value's day is in it (or, with ``nulls_by``,
    a NULL partition value and a ``nulls_by`` day in it)."""
    if window is None or data.num_rows == 0:
        return
    if window.column not in data.column_names:
        raise SchemaEvolutionError(f"{identifier}: the data has no partition column '{window.column}'")
    col = data.column(window.column)
    if not (pa.types.is_date(col.type) or pa.types.is_timestamp(col.type)):
        raise PartitionTypeError(
            f"{identifier}: partition column '{window.column}' is {col.type}: partition on a DATE or TIMESTAMP column"
        )
    if col.null_count:
        nulls = data.filter(pc.is_null(col))
        if window.nulls_by is None or window.nulls_by not in data.column_names:
            raise PartitionContractError(
                f"{identifier}: {col.null_count} rows have a NULL '{window.column}'; they belong to no partition"
            )
        by = nulls.column(window.nulls_by)
        if by.null_count or _as_day(pc.min(by).as_py()) < window.start or _as_day(pc.max(by).as_py()) > window.end:
            raise PartitionContractError(
                f"{identifier}: rows with a NULL '{window.column}' are filed by '{window.nulls_by}', which must be "
                f"in the window {window.start}..{window.end}"
            )
        col = data.filter(pc.is_valid(col)).column(window.column)
        if len(col) == 0:
            return
    lo, hi = _as_day(pc.min(col).as_py()), _as_day(pc.max(col).as_py())
    if lo < window.start or hi > window.end:
        raise PartitionContractError(
            f"{identifier}: rows with {window.column} from {lo} to {hi} fall outside the window being written "
            f"({window.start}..{window.end}); a write may only replace the window it owns"
        )
    if window.only is not None:
        days = col if pa.types.is_date(col.type) else pc.cast(col, pa.date32())
        stray = sorted(d for d in pc.unique(days).to_pylist() if d not in window.only)
        if stray:
            raise PartitionContractError(
                f"{identifier}: rows with {window.column} on {', '.join(str(d) for d in stray[:5])}"
                f"{' …' if len(stray) > 5 else ''} fall outside the days being written ({window}); a write may only "
                "replace the days it owns"
            )


class Segment:
    """Rows of a write that are kept all together or not at all: one landing file too large to
    hold in memory, streamed. Its tables (``tables``, an iterable) are written to data files of
    their own as they arrive; if iterating them raises :class:`DropSegment`, those files are
    deleted and the write goes on without any of its rows (any other error fails the write)."""

    def __init__(self, tables: Iterable[pa.Table]) -> None:
        self.tables = tables


class DropSegment(Exception):
    """Raised while a :class:`Segment` is read: forget every row of it and go on."""


Chunks = pa.Table | Iterable[pa.Table | Segment]
# What _chunks yields around a segment's own chunks, so the writer can forget them.
_SEGMENT_START, _SEGMENT_END, _SEGMENT_DROPPED = object(), object(), object()
# Rows handed to pyiceberg at once: its partitioning and Parquet encoding copy what they are given,
# so this bounds a write's memory whatever the size of the window (10M+ rows a day).
CHUNK_ROWS = 500_000
# Coalesced inputs averaging fewer rows a record batch than this are copied into one (_concat).
COMBINE_BELOW_ROWS = 65_536
# Chunks being encoded while the next is computed (see _write_window).
WRITE_AHEAD = 2


def write_window(
    catalog: Catalog,
    identifier: str,
    data: Chunks,
    *,
    window: Window | None,
    run_id: str,
    partition_key: str | None = None,
    branch: str = "main",
    fork_from: str = "main",
    extra_properties: dict[str, str] | Callable[[], dict[str, str]] | None = None,
    retry: RetryPolicy | None = None,
    on_attempt: Callable[[int], None] | None = None,
    schema_change: str = "append",
    granularity: str = "day",
    expect_head: int | None | object = ANY_HEAD,
    append: bool | str = False,
) -> WriteResult:
    """Atomically replace ``window`` of ``identifier`` with ``data`` (the whole table if ``window`` is None).

    ``data`` is an Arrow table or an iterable of them (a stream: each chunk is written to data
    files as it arrives, so memory stays bounded). Creates the table on first write
    (partitioned on ``window.column``: by value for a DATE, by day for a TIMESTAMP).

    ``schema_change`` says what a schema that differs from the table's does (see
    :data:`SCHEMA_CHANGES`): ``append`` adds the columns the data brings and widens types (columns
    the data lacks read NULL in the new rows); ``sync`` also drops the table's columns the data
    lacks; ``fail`` refuses any difference. Schema changes are their own commit, before the data.
    ``granularity`` (day, month, year) is how coarse the Iceberg partitions on ``window.column``
    are; a table partitioned otherwise has its spec evolved (its own commit; older files keep
    theirs). The window replaced is the same days whatever the granularity.
    ``branch`` other than main: the commit goes to that Iceberg branch of the table; a branch the
    table does not have yet is made, in the same commit, at the head of ``fork_from`` (that
    branch's, or main's where the table has no ``fork_from`` branch), so it holds every other day
    as its origin does.
    Then one commit replaces the window with every
    data file written; on a conflict the table is reloaded and the same files are committed
    again, with bounded, jittered backoff. ``extra_properties`` may be a callable, evaluated once
    the stream is consumed. If anything fails before the commit, the files written are deleted.
    ``expect_head``: the snapshot ``data`` was computed from (a merge: the table's rows plus the
    changes), None for a table with no snapshot; if the branch written (or, for a branch made in
    this commit, its origin) has another head at commit time, :class:`HeadMovedError` is raised and
    nothing is committed: carrying the files over would undo the write that moved it.
    ``append``: the rows are added, nothing is replaced (strategy='append'). True, or a key naming
    the work (a Dagster root run id, the same for a run and its re-executions; True: ``run_id``):
    a write whose key already appended this window to the branch's history (a replay) commits
    nothing and returns that earlier snapshot.

    Raises:
        SchemaEvolutionError: the data cannot fit the table by adding columns or widening types, or
            its schema differs and ``schema_change`` is ``fail``.
        PartitionContractError: a row's partition value is not a day in the window.
        CommitConflictError: every attempt conflicted.
    """
    if schema_change not in SCHEMA_CHANGES:
        raise ValueError(f"schema_change must be one of {', '.join(SCHEMA_CHANGES)}, got {schema_change!r}")
    if granularity not in GRANULARITIES:
        raise ValueError(f"granularity must be one of {', '.join(GRANULARITIES)}, got {granularity!r}")
    with trace.span("iceberg.write", table=identifier) as span:
        return _write_window(
            catalog, identifier, data, window=window, run_id=run_id, partition_key=partition_key, branch=branch,
            fork_from=fork_from, extra_properties=extra_properties, retry=retry or RetryPolicy(), on_attempt=on_attempt, span=span,
            schema_change=schema_change, granularity=granularity, expect_head=expect_head, append=append,
        )


REBUILD_SUFFIX = "__rebuild"


def rebuild_table(catalog: Catalog, identifier: str, data: Chunks, *, window: Window | None, run_id: str, **options) -> WriteResult:
    """Replace ``identifier`` by a new table built from ``data`` alone (a full refresh).

    Unlike :func:`write_window`, nothing of the old table survives: not its rows outside the
    window, not its schema or partitioning. The new table is written completely under a staging
    name first, then takes the old one's place in the catalog (drop, rename: the table is missing
    for that instant only, and a failed build leaves the old table untouched).
    """
    branch = options.get("branch", MAIN_BRANCH)
    if branch != MAIN_BRANCH:
        raise SchemaChangeRefusedError(
            f"{identifier}: a full refresh replaces the whole table in the catalog, main included, and branch "
            f"{branch!r} may not write main. Rebuild it without RATATOUILLE_BRANCH, or change the model so its "
            "schema evolves in place (new columns, widened types)."
        )
    staging = identifier + REBUILD_SUFFIX
    try:
        catalog.drop_table(staging)  # left by a build that died before its swap
    except NoSuchTableError:
        pass
    try:
        result = write_window(catalog, staging, data, window=window, run_id=run_id, **options)
    except BaseException:
        try:
            catalog.drop_table(staging)  # nothing of a failed build stays in the catalog
        except NoSuchTableError:
            pass
        raise
    try:
        catalog.drop_table(identifier)
    except NoSuchTableError:
        pass
    catalog.rename_table(staging, identifier)
    table = catalog.load_table(identifier)
    return dataclasses.replace(result, table=identifier, metadata_location=table.metadata_location)


def _chunks(data: Chunks, span: dict) -> Iterator[pa.Table | object]:
    """Normalized chunks of about CHUNK_ROWS rows; time spent waiting for the caller's data is
    recorded as ``input_seconds`` (trace: excluded from the write's own time).

    Small inputs of the same schema (a history of small daily files) are coalesced up to
    CHUNK_ROWS, so a partition gets a few large data files instead of one tiny file per input;
    an input whose schema differs (a file with an extra column) starts a new chunk rather than
    being unified by guessed type promotion. At least one (possibly empty) table is yielded.
    A :class:`Segment`'s chunks come between ``_SEGMENT_START`` and ``_SEGMENT_END`` (or
    ``_SEGMENT_DROPPED``: forget them), never coalesced with rows outside it.
    """
    source = iter([data] if isinstance(data, pa.Table) else data)
    pending: list[pa.Table] = []
    pending_rows = 0
    while True:
        t = time.perf_counter()
        try:
            table = next(source)
        except StopIteration:
            break
        finally:
            span["input_seconds"] = span.get("input_seconds", 0.0) + time.perf_counter() - t
        if isinstance(table, Segment):
            if pending:
                yield from _sliced(_concat(pending))
                pending, pending_rows = [], 0
            yield _SEGMENT_START
            try:
                for chunk in _chunks(table.tables, span):
                    if not isinstance(chunk, pa.Table):
                        raise TypeError("a Segment's tables may not hold another Segment")
                    yield chunk
            except DropSegment:
                yield _SEGMENT_DROPPED
            else:
                yield _SEGMENT_END
            continue
        table = normalize_arrow(table)
        if pending and (table.schema != pending[0].schema or pending_rows + table.num_rows > CHUNK_ROWS):
            yield from _sliced(_concat(pending))
            pending, pending_rows = [], 0
        if table.num_rows or not pending:
            pending.append(table)
            pending_rows += table.num_rows
    if pending:
        yield from _sliced(_concat(pending))


def _concat(tables: list[pa.Table]) -> pa.Table:
    """One table of ``tables``: a copy into one chunk only where they are small (many tiny files'
    rows, which the Parquet writer and the partition sort handle better whole); a few large
    record batches stay as they are (a copy of them cost seconds a day at 10M rows)."""
    tables = [t for t in tables if t.num_rows] or tables[:1]
    if len(tables) == 1:
        return tables[0]
    table = pa.concat_tables(tables)
    batches = table.column(0).num_chunks if table.num_columns else 1
    return table.combine_chunks() if table.num_rows / batches < COMBINE_BELOW_ROWS else table


def _sliced(table: pa.Table) -> Iterator[pa.Table]:
    if table.num_rows <= CHUNK_ROWS:
        yield table
        return
    for offset in range(0, table.num_rows, CHUNK_ROWS):
        yield table.slice(offset, CHUNK_ROWS)


def _write_window(
    catalog: Catalog,
    identifier: str,
    data: Chunks,
    *,
    window: Window | None,
    run_id: str,
    partition_key: str | None,
    branch: str,
    fork_from: str,
    extra_properties: dict[str, str] | Callable[[], dict[str, str]] | None,
    retry: RetryPolicy,
    on_attempt: Callable[[int], None] | None,
    span: dict,
    schema_change: str,
    granularity: str,
    expect_head: int | None | object = ANY_HEAD,
    append: bool | str = False,
) -> WriteResult:
    append_key = (run_id if append is True else append) or None
    if append_key:
        try:
            done = appended_by(catalog.load_table(identifier).metadata, append_key, branch, fork_from, window)
        except NoSuchTableError:
            done = None
        if done is not None:
            log.info("%s: %s already appended %s (snapshot %d): nothing to do", identifier, append_key,
                     window or "its rows", done.snapshot_id)
            return _result_of(identifier, catalog.load_table(identifier), done, attempts=0)
    chunks = _chunks(data, span)
    head: list = []  # up to the first table: its schema creates the table
    for item in chunks:
        head.append(item)
        if isinstance(item, pa.Table):
            break
    first = head[-1] if head and isinstance(head[-1], pa.Table) else None
    if first is None:
        raise ValueError(f"{identifier}: nothing to write, not even an empty table with the schema")
    try:
        table = catalog.load_table(identifier)
        created = False
    except NoSuchTableError:
        table = load_or_create(catalog, identifier, first.schema, window.column if window else None, granularity)
        created = True
    if window is not None and granularity_of(table, window.column) != granularity:
        _main_only(identifier, branch, f"changing its partitioning to {granularity}")
        table = _repartition(catalog, table, identifier, window.column, granularity, retry)
    if not created and schema_change != "append":
        if any(n not in first.schema.names for n in table.schema().column_names):
            _main_only(identifier, branch, "dropping columns the data lacks (on_schema_change: sync_all_columns)")
        table = _apply_schema_policy(catalog, table, identifier, first.schema, schema_change, retry)
    _check_branch(table, identifier, branch)

    # 1. Data files, chunk by chunk (nothing is visible to readers yet). A chunk's files are
    #    encoded in pyiceberg's writer pool while the next chunk is computed; at most
    #    WRITE_AHEAD chunks are in flight, which bounds the memory this adds.
    files: list[DataFile] = []
    in_flight: collections.deque[PendingFiles] = collections.deque()

    def settle(keep: int = 0) -> None:
        while len(in_flight) > keep:
            files.extend(in_flight.popleft().result())

    rows = 0
    write_uuid, counter = uuid.uuid4(), itertools.count(0)
    segment: tuple[int, int] | None = None  # files and rows before the segment being written
    try:
        for chunk in itertools.chain(head, chunks):
            if chunk is _SEGMENT_START:
                settle()
                segment = (len(files), rows)
                continue
            if chunk is _SEGMENT_END or chunk is _SEGMENT_DROPPED:
                settle()
                if chunk is _SEGMENT_DROPPED:
                    _delete_files(table, files[segment[0]:])
                    del files[segment[0]:]
                    rows = segment[1]
                segment = None
                continue
            _check_window(identifier, chunk, window)
            if _needs_schema_update(table.schema(), chunk.schema):
                table = _evolve(catalog, table, identifier, chunk.schema, retry)
            if chunk.num_rows:
                aligned = _cast_to_table_schema(table.schema(), chunk)
                for partition, part in _by_partition(table, aligned):
                    if partition is None:
                        files += write_files(table.metadata, table.io, part, write_uuid, counter)
                    else:
                        in_flight.append(start_write(table.metadata, table.io, part, partition, write_uuid, counter))
                        settle(keep=WRITE_AHEAD)
                rows += chunk.num_rows
        settle()
    except BaseException:
        while in_flight:  # every file started is written (or failed) before it can be deleted
            try:
                files.extend(in_flight.popleft().result())
            except BaseException as exc:  # noqa: BLE001 - the first error is the one raised
                files.extend(getattr(exc, "written", []))
        _delete_files(table, files)
        raise
    span["rows"], span["files"] = rows, len(files)

    # 2. One commit: drop the window's old files, add the new ones; on conflict commit them again.
    extra = extra_properties() if callable(extra_properties) else (extra_properties or {})
    properties = {
        RUN_ID_PROPERTY: run_id,
        ROWS_PROPERTY: str(rows),
        **({STRATEGY_PROPERTY: "append", APPEND_KEY_PROPERTY: append_key} if append_key else {}),
        **({PARTITION_PROPERTY: partition_key} if partition_key else {}),
        **({WINDOW_PROPERTY: str(window)} if window else {}),
        # The branch readers see the rows on: for an audit branch, the one it publishes to.
        **({AUDIT_BRANCH_PROPERTY: branch} if branch.startswith(RESERVED_BRANCH_PREFIX) else {}),
        **({BRANCH_PROPERTY: reader_branch} if (reader_branch := (
            fork_from if branch.startswith(RESERVED_BRANCH_PREFIX) else branch)) != MAIN_BRANCH else {}),
        **extra,
    }
    row_filter = window.to_filter(table.schema()) if window else AlwaysTrue()
    started = time.monotonic()
    for attempt in itertools.count(1):
        if on_attempt:
            on_attempt(attempt)
        tx = None
        try:
            with transaction(table) as tx:
                if expect_head is not ANY_HEAD:
                    _check_head(tx.table_metadata, identifier, branch, fork_from, expect_head)
                missing = {k: v for k, v in TABLE_PROPERTIES.items() if k not in table.properties}
                if missing:  # tables created before a property was introduced get it (values set on a table stay)
                    tx.set_properties(missing)
                if branch != MAIN_BRANCH and branch not in tx.table_metadata.refs:
                    # Made in this commit, at its origin's head; the commit then asserts that no
                    # one made it meanwhile (a transaction keeps the first ref assertion it gets).
                    fork = fork_point(tx.table_metadata, fork_from)
                    if fork is None:
                        # Iceberg refuses a branch on a table with no snapshot: main first gets an
                        # empty one (its readers see the same empty table as before), in this commit.
                        with tx.update_snapshot(snapshot_properties={RUN_ID_PROPERTY: run_id}).fast_append():
                            pass
                        fork = tx.table_metadata.current_snapshot_id
                    ManageSnapshots(tx).create_branch(fork, branch).commit()
                if append_key:
                    done = appended_by(tx.table_metadata, append_key, branch, fork_from, window)
                    if done is not None:  # the same run's append committed meanwhile
                        raise _AlreadyAppended(done)
                else:
                    with warnings.catch_warnings():
                        # The first write of a window deletes nothing; that is expected, not a problem.
                        warnings.filterwarnings("ignore", message="Delete operation did not match any records")
                        tx.delete(row_filter, snapshot_properties=properties, branch=branch)
                with tx.update_snapshot(snapshot_properties=properties, branch=branch).merge_append() as append:
                    for data_file in files:
                        append.append_data_file(data_file)
            break
        except _AlreadyAppended as already:
            _delete_files(table, files)
            return _result_of(identifier, catalog.load_table(identifier), already.snapshot, attempts=attempt)
        except HeadMovedError:
            _delete_files(table, files)
            raise
        except (CommitFailedException, OperationalError, ValueError) as exc:
            if isinstance(exc, ValueError) and not stale_sequence(exc):
                raise
            locked = isinstance(exc, OperationalError)
            if locked and not _catalog_locked(exc):
                # Not known to have failed before the catalog took the commit (a dropped
                # connection may come after it): the files may be referenced now, so they stay.
                raise
            if not isinstance(exc, CommitFailedException) and tx is not None:
                # pyiceberg cleans up a refused commit's manifests itself, but not a locked or stale one's.
                _delete_paths(table, _attempt_manifests(table, tx))
            if retry.exhausted(attempt, time.monotonic() - started):
                _delete_files(table, files)
                if locked:
                    raise CatalogLockedError(
                        f"{identifier}: the catalog database stayed locked for {time.monotonic() - started:.0f}s "
                        f"over {attempt} attempts: another process holds a write lock on it (SQLite does not say "
                        "which; `fuser` on the catalog file lists the processes that have it open). Nothing was "
                        "committed: run again once that process has finished, or put the catalog on PostgreSQL "
                        "(RATATOUILLE_CATALOG_URI) for many concurrent writers."
                    ) from None
                raise CommitConflictError(
                    f"{identifier}: commit still conflicted after {attempt} attempts in "
                    f"{time.monotonic() - started:.0f}s; last error: {exc}"
                ) from exc
            delay = retry.delay(attempt)
            log.info("%s: %s (attempt %d), retrying in %.2fs", identifier,
                     "catalog locked" if locked else "commit conflict", attempt, delay)
            time.sleep(delay)
            table = _reload(catalog, identifier, retry, started)

    table = catalog.load_table(identifier)
    snapshot = table.current_snapshot() if branch == MAIN_BRANCH else table.snapshot_by_name(branch)
    summary = dict(snapshot.summary.additional_properties) if snapshot and snapshot.summary else {}
    if snapshot and snapshot.summary:
        summary["operation"] = snapshot.summary.operation.value
    return WriteResult(
        table=identifier,
        snapshot_id=snapshot.snapshot_id if snapshot else None,
        metadata_location=table.metadata_location,
        rows_written=rows,
        total_rows=int(summary.get("total-records", rows)),
        attempts=attempt,
        schema=table.schema(),
        summary=summary,
    )


class _AlreadyAppended(Exception):
    def __init__(self, snapshot) -> None:
        self.snapshot = snapshot


def appended_by(metadata, key: str, branch: str, fork_from: str, window: Window | None):
    """The snapshot in the history a write to ``branch`` builds on in which the append keyed
    ``key`` added ``window`` (None: unpartitioned), or None."""
    head = write_base(metadata, branch, fork_from)
    want = str(window) if window else None
    while head is not None:
        snapshot = metadata.snapshot_by_id(head)
        if snapshot is None:  # expired: the history before it is gone too
            return None
        props = snapshot.summary.additional_properties if snapshot.summary else {}
        if props.get(APPEND_KEY_PROPERTY) == key and props.get(WINDOW_PROPERTY) == want:
            return snapshot
        head = snapshot.parent_snapshot_id
    return None


def _result_of(identifier: str, table: Table, snapshot, attempts: int) -> WriteResult:
    """What a write that found its work already done returns: that snapshot, nothing written."""
    summary = dict(snapshot.summary.additional_properties) if snapshot.summary else {}
    if snapshot.summary:
        summary["operation"] = snapshot.summary.operation.value
    return WriteResult(table=identifier, snapshot_id=snapshot.snapshot_id,
                       metadata_location=table.metadata_location, rows_written=0,
                       total_rows=int(summary.get("total-records", 0)), attempts=attempts,
                       schema=table.schema(), summary=summary)


def write_base(metadata, branch: str, fork_from: str) -> int | None:
    """The snapshot a write to ``branch`` lands on: its head, or where it would be made from."""
    ref = metadata.refs.get(branch)
    return ref.snapshot_id if ref is not None else fork_point(metadata, fork_from)


def _check_head(metadata, identifier: str, branch: str, fork_from: str, expected: int | None) -> None:
    head = write_base(metadata, branch, fork_from)
    if head != expected:
        raise HeadMovedError(
            f"{identifier}: the table changed while this write was computed from it (read at snapshot "
            f"{expected}, its head is now {head}): another run wrote it meanwhile. Nothing was committed; "
            "run again to compute from the new head."
        )


def _main_only(identifier: str, branch: str, change: str) -> None:
    """Refuse, on a data branch, a change Iceberg makes to the whole table (main's readers included).

    An audit branch takes it: the change is the project's own declaration (a new granularity,
    sync_all_columns), made on the table as the write begins; only the rows wait for the checks."""
    if branch != MAIN_BRANCH and not branch.startswith(RESERVED_BRANCH_PREFIX):
        raise SchemaChangeRefusedError(
            f"{identifier}: {change} changes the table for main too (Iceberg keeps one schema and partition "
            f"spec per table), and branch {branch!r} may not change main. Make that change without "
            "RATATOUILLE_BRANCH, or keep the columns (new columns and widened types are fine on a branch)."
        )


def _check_branch(table: Table, identifier: str, branch: str) -> None:
    ref = table.metadata.refs.get(branch) if branch != MAIN_BRANCH else None
    if ref is not None and ref.snapshot_ref_type.value != "branch":
        raise ValueError(f"{identifier}: {branch!r} is a tag, not a branch: a write cannot go to it")


def fork_point(metadata, origin: str) -> int | None:
    """Where a new branch made from ``origin`` starts: ``origin``'s head, or main's where the table
    has no branch ``origin`` (None: the table has no snapshot yet)."""
    ref = metadata.refs.get(origin) if origin != MAIN_BRANCH else None
    if ref is not None and ref.snapshot_ref_type.value == "branch":
        return ref.snapshot_id
    current = metadata.current_snapshot_id
    return current if current not in (None, -1) else None


def _by_partition(table: Table, data: pa.Table) -> Iterator[tuple[tuple | None, pa.Table]]:
    """``data`` cut into slices of one partition value each (sorted on it, NULLs last), each with
    that value as the table's spec has it (``()`` unpartitioned, None: not known here).

    pyiceberg filters what it is given once per partition value in it: a chunk of a model over
    years of days (every day in every chunk) cost partitions x rows and one tiny file per day and
    chunk. Sorted and sliced here, each slice is one pass; a single-value chunk is passed as is."""
    fields = table.spec().fields
    if not fields:
        yield (), data
        return
    if len(fields) != 1 or data.num_rows == 0:
        yield None, data
        return
    field = fields[0]
    source = table.schema().find_field(field.source_id)
    if source.name not in data.column_names:
        yield None, data
        return
    keys = field.transform.pyarrow_transform(source.field_type)(data.column(source.name))
    if keys.null_count == 0:
        low, high = pc.min_max(keys).values()
        if low == high:  # one day (the common case): no sort
            yield (low.as_py(),), data
            return
    order = pc.sort_indices(pa.table({"k": keys}), sort_keys=[("k", "ascending", "at_end")])
    # Each run of one value in the sorted keys (NULLs are one run) is a slice.
    ordered_keys = keys.take(order).combine_chunks()
    ends = pc.run_end_encode(ordered_keys).run_ends.to_pylist()
    if len(ends) == 1:
        yield (ordered_keys[0].as_py(),), data
        return
    ordered = data.take(order)
    for begin, end in zip([0, *ends], ends):
        yield (ordered_keys[begin].as_py(),), ordered.slice(begin, end - begin)


def stale_sequence(exc: ValueError) -> bool:
    """pyiceberg's answer when another branch of the table took a commit since the table was
    loaded: the new snapshot's sequence number was computed from the older metadata. The catalog
    refused it before writing anything (the ref assertions only guard the branch written), so it
    is a conflict like any other: reload and commit again."""
    return "older than last sequence number" in str(exc)


def _catalog_locked(exc: OperationalError) -> bool:
    """SQLite's answer when another connection holds the write lock past the busy timeout."""
    return "database is locked" in str(exc.orig) or "database is busy" in str(exc.orig)


def _reload(catalog: Catalog, identifier: str, retry: RetryPolicy, started: float) -> Table:
    """The table again, waiting out a locked catalog as long as the commit would."""
    attempt = 0
    while True:
        try:
            return catalog.load_table(identifier)
        except OperationalError as exc:
            attempt += 1
            if not _catalog_locked(exc) or retry.exhausted(attempt, time.monotonic() - started):
                raise
            time.sleep(retry.delay(attempt))


# What a write whose schema differs from its table's does (dbt's on_schema_change, minus "ignore",
# which would drop the new columns' values without a word).
SCHEMA_CHANGES = ("append", "sync", "fail")


def schema_differences(table_schema: Schema, data: pa.Schema) -> list[str]:
    """How ``data`` differs from the table: added and missing columns, types that need a change."""
    current = schema_to_pyarrow(table_schema, include_field_ids=False)
    added = [f.name for f in data if f.name not in current.names]
    missing = [name for name in current.names if name not in data.names]
    retyped = [
        f"{f.name} ({current.field(f.name).type} -> {f.type})"
        for f in data
        if f.name in current.names and not _castable(f.type, current.field(f.name).type)
    ]
    out = []
    if added:
        out.append("new column(s) " + ", ".join(added))
    if missing:
        out.append("missing column(s) " + ", ".join(missing))
    if retyped:
        out.append("changed type(s) " + ", ".join(retyped))
    return out


def _apply_schema_policy(
    catalog: Catalog, table: Table, identifier: str, schema: pa.Schema, policy: str, retry: RetryPolicy
) -> Table:
    """``fail``: refuse any difference; ``sync``: drop the table's columns the data lacks (new
    columns and widened types follow in the write, as for ``append``)."""
    differences = schema_differences(table.schema(), schema)
    if not differences:
        return table
    if policy == "fail":
        raise SchemaChangeRefusedError(
            f"{identifier}: the schema changed ({'; '.join(differences)}) and on_schema_change is 'fail'. "
            "Rebuild the table with a full refresh, or set on_schema_change to append_new_columns or sync_all_columns."
        )
    dropped = [name for name in table.schema().column_names if name not in schema.names]
    if not dropped:
        return table
    for attempt in range(1, retry.attempts + 1):
        try:
            with table.update_schema() as update:
                for name in dropped:
                    update.delete_column(name)
            return catalog.load_table(identifier)
        except CommitFailedException:
            if attempt == retry.attempts:
                raise
            time.sleep(retry.delay(attempt))
            table = catalog.load_table(identifier)
            dropped = [name for name in table.schema().column_names if name not in schema.names]
            if not dropped:
                return table
    return table


def _evolve(catalog: Catalog, table: Table, identifier: str, schema: pa.Schema, retry: RetryPolicy) -> Table:
    """Add the columns ``schema`` brings (or widen types), as its own commit; retried on conflict.

    Nullable columns with no data yet are harmless if the data commit never comes."""
    for attempt in range(1, retry.attempts + 1):
        try:
            with table.update_schema() as update:
                update.union_by_name(schema)
            return catalog.load_table(identifier)
        except (ValidationError, ValueError, TypeError) as exc:
            raise IncompatibleSchemaError(
                f"{identifier}: the incoming schema cannot be merged into the table: {exc}. "
                "Only added columns and widened types evolve automatically; rename or retype the "
                "column in the source contract, or migrate the table."
            ) from exc
        except CommitFailedException:
            if attempt == retry.attempts:
                raise
            time.sleep(retry.delay(attempt))
            table = catalog.load_table(identifier)
            if not _needs_schema_update(table.schema(), schema):
                return table
    return table


def _attempt_manifests(base: Table, tx) -> list[str]:
    """The manifest lists and manifests a transaction on ``base`` wrote for its new snapshots."""
    known = {snapshot.snapshot_id for snapshot in base.metadata.snapshots}
    new = [snapshot for snapshot in tx.table_metadata.snapshots if snapshot.snapshot_id not in known]
    new_ids = {snapshot.snapshot_id for snapshot in new}
    paths = []
    for snapshot in new:
        paths.append(snapshot.manifest_list)
        try:
            manifests = snapshot.manifests(base.io)
        except Exception:  # noqa: BLE001 - a list that was never written: nothing of it to delete
            continue
        paths += [m.manifest_path for m in manifests if m.added_snapshot_id in new_ids]
    return paths


def _delete_paths(table: Table, paths: list[str]) -> None:
    for path in paths:
        try:
            table.io.delete(path)
        except Exception:  # noqa: BLE001 - cleanup must not hide the original error
            log.warning("could not delete uncommitted file %s", path)


def _delete_files(table: Table, files: list[DataFile]) -> None:
    """Best effort: data files of a write that never committed are unreferenced garbage."""
    _delete_paths(table, [data_file.file_path for data_file in files])


def _cast_to_table_schema(schema: Schema, data: pa.Table) -> pa.Table:
    """Order and cast ``data`` as the table; columns the batch lacks become nulls (history is never rewritten)."""
    target = schema_to_pyarrow(schema, include_field_ids=False)
    columns = [
        data.column(f.name).cast(f.type) if f.name in data.column_names else pa.nulls(data.num_rows, type=f.type)
        for f in target
    ]
    return pa.Table.from_arrays(columns, schema=pa.schema([pa.field(f.name, f.type, nullable=True) for f in target]))


def _repartition(
    catalog: Catalog, table: Table, identifier: str, column: str, granularity: str, retry: RetryPolicy
) -> Table:
    """Evolve the partition spec on ``column`` to ``granularity`` (its own commit, retried on conflict).

    Files written before keep their old partitioning (Iceberg reads both); new files get the new
    one. A table not partitioned on ``column`` at all (created by hand) gets it added."""
    if column not in table.schema().column_names:
        return table  # the data check names the missing column
    for attempt in itertools.count(1):
        current = granularity_of(table, column)
        if current == granularity:
            return table
        log.warning("%s: partitioning on %s changes from %s to %s", identifier, column, current or "none", granularity)
        transform = partition_transform(schema_to_pyarrow(table.schema()).field(column).type, granularity)
        try:
            with table.update_spec() as spec:
                field_id = table.schema().find_field(column).field_id
                for field in table.spec().fields:
                    if field.source_id == field_id:
                        spec.remove_field(field.name)
                spec.add_field(column, transform, _partition_name(column, transform))
            return catalog.load_table(identifier)
        except CommitFailedException:
            if attempt >= retry.attempts:
                raise
            time.sleep(retry.delay(attempt))
            table = catalog.load_table(identifier)
    return table


# What a restore of a whole table writes into its snapshot summary, beside the run id.
RESTORED_FROM_PROPERTY = "ratatouille.restored-from"


def restore_snapshot(
    catalog: Catalog,
    identifier: str,
    snapshot_id: int,
    *,
    run_id: str,
    extra_properties: dict[str, str] | None = None,
    retry: RetryPolicy | None = None,
    on_attempt: Callable[[int], None] | None = None,
) -> WriteResult | None:
    """Make main hold exactly the data files of ``snapshot_id`` again, as one new commit.

    History is never rewritten: the snapshots after ``snapshot_id`` stay (and can be restored in
    turn); the new snapshot removes the files they added and adds back the files they removed,
    which are the same files (no data is copied). The table keeps its current schema, so columns
    added since read NULL in the restored rows. Returns None when main already holds exactly those
    files. Raises ``ValueError`` when a file of the snapshot was written under another partition
    spec (the caller rewrites the rows instead).
    """
    retry = retry or RetryPolicy()
    properties = {RUN_ID_PROPERTY: run_id, RESTORED_FROM_PROPERTY: str(snapshot_id), **(extra_properties or {})}
    started = time.monotonic()
    table = catalog.load_table(identifier)
    target = _live_files(table, snapshot_id)
    if any(f.spec_id != table.spec().spec_id for f in target.values()):
        raise ValueError(f"{identifier}: snapshot {snapshot_id} has files of an older partition spec")
    for attempt in itertools.count(1):
        current = _live_files(table, table.current_snapshot().snapshot_id) if table.current_snapshot() else {}
        removed = [f for path, f in current.items() if path not in target]
        added = [f for path, f in target.items() if path not in current]
        if not removed and not added:
            return None
        try:
            if on_attempt:
                on_attempt(attempt)
            with transaction(table) as tx:
                with tx.update_snapshot(snapshot_properties=properties).overwrite() as overwrite:
                    for data_file in removed:
                        overwrite.delete_data_file(data_file)
                    for data_file in added:
                        overwrite.append_data_file(data_file)
                # The files re-added are ``snapshot_id``'s: maintenance may expire it and delete
                # them at any time. A tag set on it (and removed) in this commit makes the catalog
                # refuse the commit if the snapshot is gone, instead of committing missing files.
                guard = f"ratatouille-restore-{uuid.uuid4().hex[:12]}"
                ManageSnapshots(tx).create_tag(snapshot_id, guard).remove_tag(guard).commit()
            break
        except (CommitFailedException, OperationalError, ValueError) as exc:
            if isinstance(exc, OperationalError) and not _catalog_locked(exc):
                raise
            if isinstance(exc, ValueError) and f"unknown snapshot {snapshot_id}" in str(exc):
                raise SnapshotExpiredError(
                    f"{identifier}: snapshot {snapshot_id} expired (table maintenance) while it was being "
                    "restored; nothing was committed. Pick a snapshot the retention policy keeps "
                    "(`rat history`), or raise RATATOUILLE_KEEP_DAYS / RATATOUILLE_KEEP_SNAPSHOTS."
                ) from None
            if isinstance(exc, ValueError) and not stale_sequence(exc):
                raise
            if retry.exhausted(attempt, time.monotonic() - started):
                raise CommitConflictError(f"{identifier}: restore still conflicted after {attempt} attempts: {exc}") from exc
            time.sleep(retry.delay(attempt))
            table = _reload(catalog, identifier, retry, started)
    table = catalog.load_table(identifier)
    snapshot = table.current_snapshot()
    summary = dict(snapshot.summary.additional_properties) if snapshot.summary else {}
    return WriteResult(
        table=identifier,
        snapshot_id=snapshot.snapshot_id,
        metadata_location=table.metadata_location,
        rows_written=sum(f.record_count for f in added),
        total_rows=int(summary.get("total-records", 0)),
        attempts=attempt,
        schema=table.schema(),
        summary=summary,
    )


def _live_files(table: Table, snapshot_id: int) -> dict[str, DataFile]:
    """The data files ``snapshot_id`` reads, by path."""
    return {task.file.file_path: task.file for task in table.scan(snapshot_id=snapshot_id).plan_files()}


# What a compaction writes into its snapshot summary, beside the run id: the history shows it as a
# maintenance commit, and readers of changes know its rows are the same rows as before.
MAINTENANCE_PROPERTY = "ratatouille.maintenance"


@dataclasses.dataclass(frozen=True)
class FileGroup:
    """Small files of one partition to be rewritten as fewer files holding the same rows.

    ``partition_files`` is every live file of that partition when the group was planned: if any
    commit changed the partition since (a write replaced its rows, another compaction ran), the
    group is skipped rather than replayed on data it has not seen."""

    partition: str  # a readable partition value, e.g. "month=2024-03"
    inputs: tuple[DataFile, ...]
    partition_files: frozenset[str]


@dataclasses.dataclass
class RewriteResult:
    table: str
    rewritten: list[FileGroup] = dataclasses.field(default_factory=list)
    skipped: list[FileGroup] = dataclasses.field(default_factory=list)  # the partition changed meanwhile
    files_added: int = 0
    snapshot_id: int | None = None
    attempts: int = 0


def partition_label(table: Table, data_file: DataFile) -> str:
    """``day=2024-03-01`` (or ``""`` for an unpartitioned table): one spelling per partition."""
    spec = table.specs()[data_file.spec_id]
    return spec.partition_to_path(data_file.partition, table.schema()) if spec.fields else ""


def live_files_by_partition(table: Table) -> dict[str, dict[str, DataFile]]:
    """Main's live data files, by partition label, then path."""
    out: dict[str, dict[str, DataFile]] = {}
    if table.current_snapshot() is None:
        return out
    for task in table.scan().plan_files():
        out.setdefault(partition_label(table, task.file), {})[task.file.file_path] = task.file
    return out


def rewrite_files(
    catalog: Catalog,
    identifier: str,
    groups: list[FileGroup],
    *,
    run_id: str,
    retry: RetryPolicy | None = None,
    on_attempt: Callable[[int], None] | None = None,
) -> RewriteResult:
    """Replace each group's files by the same rows in as few files as the table's writer makes, in
    one commit on main that removes exactly those files.

    A conflicting commit is retried on the reloaded table; a group whose partition changed in the
    meantime is dropped (its new files deleted), never committed over data it did not read. Killed
    at any point, the table is as before or as after: new files not yet committed are orphans the
    sweep removes, and the replaced files stay readable until their snapshots expire."""
    from pyiceberg.io.pyarrow import ArrowScan
    from pyiceberg.table import FileScanTask

    retry = retry or RetryPolicy()
    result = RewriteResult(table=identifier)
    written: dict[FileGroup, list[DataFile]] = {}
    started = time.monotonic()
    table = catalog.load_table(identifier)
    pending = list(groups)
    for attempt in itertools.count(1):
        result.attempts = attempt
        live = live_files_by_partition(table)
        for group in list(pending):
            if frozenset(live.get(group.partition, {})) != group.partition_files or any(
                    f.spec_id != table.spec().spec_id for f in group.inputs):
                pending.remove(group)
                result.skipped.append(group)
                _delete_files(table, written.pop(group, []))
        if not pending:
            return result
        write_uuid = uuid.uuid4()
        counter = itertools.count(0)
        try:
            for group in pending:
                if group in written:
                    continue
                tasks = [FileScanTask(f) for f in group.inputs]
                rows = ArrowScan(table.metadata, table.io, table.schema(), AlwaysTrue()).to_table(tasks)
                rows = _cast_to_table_schema(table.schema(), rows)
                written[group] = write_files(table.metadata, table.io, rows, write_uuid, counter)
        except BaseException:
            for files in written.values():
                _delete_files(table, files)
            raise
        if on_attempt:
            on_attempt(attempt)
        properties = {RUN_ID_PROPERTY: run_id, MAINTENANCE_PROPERTY: "compact"}
        tx = None
        try:
            with transaction(table) as tx:
                with tx.update_snapshot(snapshot_properties=properties).overwrite() as overwrite:
                    for group in pending:
                        for data_file in group.inputs:
                            overwrite.delete_data_file(data_file)
                        for data_file in written[group]:
                            overwrite.append_data_file(data_file)
            break
        except (CommitFailedException, OperationalError, ValueError) as exc:
            if isinstance(exc, OperationalError) and not _catalog_locked(exc):
                raise
            if isinstance(exc, ValueError) and not stale_sequence(exc):
                raise
            if not isinstance(exc, CommitFailedException) and tx is not None:
                _delete_paths(table, _attempt_manifests(table, tx))
            if retry.exhausted(attempt, time.monotonic() - started):
                for files in written.values():
                    _delete_files(table, files)
                raise CommitConflictError(f"{identifier}: compaction still conflicted after {attempt} attempts: {exc}") from exc
            log.info("%s: compaction conflicted with a commit (attempt %d); judging the new head", identifier, attempt)
            time.sleep(retry.delay(attempt))
            table = _reload(catalog, identifier, retry, started)
    result.rewritten = pending
    result.files_added = sum(len(written[g]) for g in pending)
    result.snapshot_id = table.current_snapshot().snapshot_id  # the transaction updated ``table``
    return result
