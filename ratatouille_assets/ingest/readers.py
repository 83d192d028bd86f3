"""Read one day of landing files for a source into Arrow, file by file, cast to the source's contract.

DuckDB does the parsing (CSV, JSON lines, Parquet), in memory, through the same configured
connection as everything else, so the reader works the same on a local folder and on S3.

Each file is judged on its own. A file that cannot be read or breaks the contract is a
:class:`BadFile` whose message names the file, the reason and the fix; the source's
``on_bad_file`` decides whether it stops the partition or is quarantined while the day's good
files load. Columns a file adds beyond the contract are kept: bronze grows a nullable column.
"""

from __future__ import annotations

import collections
import contextlib
import csv
import dataclasses
import datetime as dt
import gzip
import os
import re
import tempfile
import time
import zlib
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import PurePath

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from ratatouille_assets.ingest.casts import LOSSY_MARKER, Cast, column_cast
from ratatouille_assets.ingest.landing import COMPRESSED_SUFFIX, is_hidden, listing_glob, path_regex, static_dir
from ratatouille_assets.ingest.quarantine import QuarantinedFile, bad_file_message, quarantine_file
from ratatouille_assets.ingest.sources import Source
from ratatouille_assets.lakehouse import s3
from ratatouille_assets.lakehouse.duck import extension_path, prefetched, quote_ident
from ratatouille_assets.lakehouse.write import DropSegment, Segment, type_fits

LINEAGE_COLUMNS = ("_landing_date", "_source_file", "_ingested_at", "_run_id")
# A reference source has no landing day: its rows carry no _landing_date.
REFERENCE_LINEAGE_COLUMNS = LINEAGE_COLUMNS[1:]
PARTITION_COLUMN = "_landing_date"
# A window's files are read ahead of the writer by this many threads, at most READ_AHEAD reads
# (a file, or a batch of files) in flight (bounded memory). The DuckDB queries release the GIL, so
# over years of small daily files the reads overlap with each other and with the Iceberg writes.
READ_THREADS = 2
READ_AHEAD = 4
# Files are checked one by one, then read in batches: consecutive files of a window whose columns
# and types are the same go through one DuckDB scan (a query costs ~1-2 ms whatever its size, which
# was most of a years-long backfill of small daily files). A batch holds at most this many files
# and this many bytes on disk; a batch that fails is read again file by file, so a bad file is
# judged, named and set aside exactly as when read alone.
BATCH_FILES = 256
BATCH_BYTES = 32 << 20
BATCHES_AHEAD = 2  # batches read ahead of the writer (each at most BATCH_BYTES on disk)
# A file larger than this on disk (a compressed file or Parquet counts STREAM_EXPANSION times its
# size) is not read whole: its rows are streamed to the writer in record batches of
# STREAM_BATCH_ROWS, so memory is bounded inside a file too (a 25M-row landing file). The writer
# keeps such a file all-or-nothing (a write Segment): a bad row anywhere in it, even the last,
# drops every data file of that file and the rest of the window loads as before.
STREAM_BYTES = 64 << 20
STREAM_EXPANSION = 4
STREAM_BATCH_ROWS = 250_000
STREAM_AHEAD = 2  # record batches DuckDB computes while the writer encodes the current one
# The column a batched scan numbers each row's file in (not a name a landing file may use): DuckDB's
# virtual column file_index (the position in the list of files scanned), which a file's own column
# of that name would shadow; such a file is read alone.
_BATCH_FILE_COLUMN = "__ratatouille_file"
_FILE_INDEX = "file_index"

# An explicit dialect, not a sniffed one: a ragged row must be an error, never padded with nulls
# or "explained" by sniffing a different delimiter or a header further down.
_CSV_DIALECT = "header = true, all_varchar = true, delim = ',', quote = '\"', escape = '\"', skip = 0, strict_mode = true"
_CSV_REJECTS = ("ratatouille_csv_rejects", "ratatouille_csv_scans")
_CSV_REJECTS_KEPT = 100  # per file: enough to name the first bad line, bounded when every line is bad
_RERUN = "then re-materialize the partition"


class IngestError(Exception):
    """A landing file could not be read against its contract. The message names file and fix."""


class BadFile(IngestError):
    """One landing file is unusable; ``str()`` is the whole message, the parts are kept for the quarantine."""

    def __init__(self, file: str, *, source: str, day: str, reason: str, detail: str, action: str) -> None:
        super().__init__(bad_file_message(file, source=source, day=day, reason=reason, detail=detail, action=action))
        self.file, self.reason, self.detail, self.action = file, reason, detail, action


class _Reject(Exception):
    """Raised by the checks below; :func:`read_file` adds file, source and day to make a :class:`BadFile`."""

    def __init__(self, reason: str, detail: str, action: str) -> None:
        super().__init__(detail)
        self.reason, self.detail, self.action = reason, detail, action


def _lit(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


_WILDCARD = re.compile(r"([*?\[])")


def glob_escape(path: str) -> str:
    """``path`` as a DuckDB glob that matches only itself: each wildcard character in a class of
    its own (``[*]``, ``[?]``, ``[[]``). DuckDB's readers glob every path they are given, so a file
    named ``*.csv`` or ``a[1].csv`` would otherwise read its neighbours instead of itself."""
    return _WILDCARD.sub(r"[\1]", path)


def _file(path: str) -> str:
    """The SQL literal a DuckDB reader is given for one listed file: exactly that file."""
    return _lit(glob_escape(path))


def join_landing(root: str, relative: str) -> str:
    return f"{root.rstrip('/')}/{relative}" if root.startswith("s3://") else os.path.join(root, relative)


def relative_path(path: str, landing_root: str) -> str:
    """How a file is named in lineage and messages: relative to the landing root, local or S3."""
    if landing_root.startswith("s3://"):
        root = landing_root.rstrip("/") + "/"
        return path[len(root):] if path.startswith(root) else path
    return os.path.relpath(path, landing_root)


def list_files(conn: duckdb.DuckDBPyConnection, landing_root: str, source: Source, day: str | None = None) -> list[str]:
    """The files of ``source`` (of ``day``, for a partitioned source), sorted by name: the order
    they are read and deduplicated in."""
    return [path for path, _ in _listed(conn, landing_root, source, listing_glob(source, day))]


def _listed(conn: duckdb.DuckDBPyConnection, landing_root: str, source: Source, relative: str) -> list[tuple[str, re.Match]]:
    """The files under ``landing_root`` that match the glob ``relative`` and are ``source``'s, sorted,
    each with its match of the source's path (its day)."""
    if not landing_root.startswith("s3://") and not os.path.isdir(join_landing(landing_root, static_dir(relative))):
        return []
    # The root is a literal name; only the source's own path pattern globs.
    pattern = join_landing(glob_escape(landing_root), relative)
    regex, out = path_regex(source), []
    for (path,) in conn.execute(f"SELECT file FROM glob({_lit(pattern)}) ORDER BY file").fetchall():
        rel = relative_path(path, landing_root).replace(os.sep, "/")
        # A hidden file is never a source's (the landing sensor's listing skips it too).
        if (match := regex.match(rel)) and not is_hidden(rel, source):
            out.append((path, match))
    return out


# A window of more days than this is listed with one glob over all day folders (then grouped by
# day) instead of one glob per day: fewer listing requests for a long history on S3, and less
# work than globbing thousands of folders one by one.
ONE_LISTING_DAYS = 31


def list_window_files(
    conn: duckdb.DuckDBPyConnection, landing_root: str, source: Source, days: list[str] | None
) -> dict[str | None, list[str]]:
    """The files of each day of ``days`` (None: every file of a reference source), sorted by name."""
    if days is None:
        return {None: list_files(conn, landing_root, source)}
    if len(days) <= ONE_LISTING_DAYS:
        return {day: list_files(conn, landing_root, source, day) for day in days}
    out: dict[str | None, list[str]] = {day: [] for day in days}
    for path, match in _listed(conn, landing_root, source, listing_glob(source, every_day=True)):
        if match.group("day") in out:
            out[match.group("day")].append(path)
    return out


@dataclasses.dataclass
class PartitionRead:
    """What :func:`stream_window` found of one day, filled in as the stream is consumed."""

    files: list[str] = dataclasses.field(default_factory=list)
    quarantined: list[QuarantinedFile] = dataclasses.field(default_factory=list)
    rows: int = 0
    nulled: int = 0  # values set to NULL (on_bad_value: null)
    read_seconds: float = 0.0


def stream_window(
    conn: duckdb.DuckDBPyConnection,
    source: Source,
    landing_root: str,
    listing: dict[str | None, list[str]],
    run_id: str,
    reads: dict[str | None, PartitionRead],
    *,
    quarantine_root: str | None = None,
    max_file_bytes: int | None = None,
    column_types: dict[str, pa.DataType] | None = None,
) -> Iterator[pa.Table]:
    """The good files of each day of ``listing`` (its keys, in order, each with its full paths;
    ``{None: files}`` for a reference source), one Arrow table per file, in listing order; each
    day's :class:`PartitionRead` in ``reads``. A day with no good file yields an empty table (the
    schema). The files are checked and read ahead by ``READ_THREADS`` threads: checked one by one,
    read in batches of files of one shape (``BATCH_FILES``, ``BATCH_BYTES``; at most
    ``BATCHES_AHEAD`` in memory), a batch that fails file by file; a worksheet, or a source with
    ``on_bad_value: null``, file by file (at most ``READ_AHEAD`` in memory).

    With ``on_bad_file: fail`` the first bad file in listing order raises :class:`BadFile`; nothing
    is quarantined and the consumer (the write path) commits nothing. With ``quarantine`` each bad
    file is copied under ``quarantine_root`` and skipped.

    ``column_types`` are the bronze table's column types: a file whose extra column has a type
    that cannot go into the table's column (or into the type an earlier file of the window gave
    it) is a bad file of its own, so it does not fail the whole write.

    A file larger than ``STREAM_BYTES`` comes as a write :class:`Segment` of record batches (read
    in this thread, in order, while the threads read the next files ahead): it is judged as it is
    read, and a bad one raises :class:`DropSegment` (quarantined) or :class:`BadFile` (fail) from
    inside the segment; the writer then drops whatever of it was written.
    """
    known = dict(column_types or {})
    jobs = [(day, path) for day, paths in listing.items() for path in paths]
    ingested_at = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    threads = max(1, min(READ_THREADS, len(jobs)))
    # One connection per reader thread, opened here (a DuckDB connection is used by one thread at a time).
    (timezone,) = conn.execute("SELECT current_setting('TimeZone')").fetchone()
    free = []
    for _ in range(threads):
        cursor = conn.cursor()
        cursor.execute(f"SET TimeZone = {_lit(timezone)}")
        free.append(cursor)
    cursors = list(free)
    streaming = conn.cursor()  # a streamed file is read from the consumer's side, one at a time
    streaming.execute(f"SET TimeZone = {_lit(timezone)}")
    cursors.append(streaming)
    reader = _Reader(source, landing_root, run_id, ingested_at, max_file_bytes)
    segments: list[Iterator[pa.Table]] = []  # closed before the cursors: each may read ahead in a thread

    def streamed(found: PartitionRead, day: str | None, checked: _Checked) -> Iterator[pa.Table]:
        started, rows, nulled = time.perf_counter(), 0, {}
        try:
            for table in reader.stream(streaming, checked, nulled):
                if not rows and (bad := _extra_type_conflict(source, table, known, checked.file, day)):
                    raise bad
                rows += table.num_rows
                yield _ordered(source, table)
        except BadFile as bad:
            found.read_seconds += time.perf_counter() - started
            if source.on_bad_file == "fail":
                raise
            found.quarantined.append(_quarantine(bad, checked.path, source, day, run_id, quarantine_root))
            raise DropSegment(checked.file) from None
        found.read_seconds += time.perf_counter() - started
        found.files.append(checked.path)
        found.rows += rows
        found.nulled += nulled.get("values", 0)

    def with_cursor(task, *args):
        cursor = free.pop()
        try:
            return task(cursor, *args)
        finally:
            free.append(cursor)

    pool = ThreadPoolExecutor(threads, thread_name_prefix=f"read-{source.name}")
    try:
        outcomes = reader.outcomes(jobs, lambda task, *args: pool.submit(with_cursor, task, *args))
        for day in listing:
            found = reads[day] = PartitionRead()
            while outcomes.peek() is not None and outcomes.peek().day == day:
                outcome = next(outcomes)
                if outcome.stream is not None:
                    segments.append(streamed(found, day, outcome.stream))
                    yield Segment(segments[-1])
                    continue
                path, table, bad = outcome.path, outcome.table, outcome.bad
                found.read_seconds += outcome.seconds
                if bad is None:
                    bad = _extra_type_conflict(source, table, known, relative_path(path, landing_root), day)
                if bad is not None:
                    if source.on_bad_file == "fail":
                        raise bad
                    found.quarantined.append(_quarantine(bad, path, source, day, run_id, quarantine_root))
                    continue
                found.files.append(path)
                found.rows += table.num_rows
                if table.schema.metadata and NULLED_KEY in table.schema.metadata:
                    found.nulled += int(table.schema.metadata[NULLED_KEY])
                    table = table.replace_schema_metadata(None)
                yield _ordered(source, table)
            if not found.files:
                yield empty_table(conn, source)
    finally:
        for segment in segments:  # a write that failed mid-file left it open
            segment.close()
        pool.shutdown(wait=True, cancel_futures=True)
        for cursor in cursors:
            cursor.close()


@dataclasses.dataclass(frozen=True)
class _Outcome:
    """One listed file, read: its table, or why it is bad."""

    day: str | None
    path: str
    table: pa.Table | None
    bad: BadFile | None
    seconds: float
    stream: _Checked | None = None  # too large to read whole: streamed by the consumer


@dataclasses.dataclass(frozen=True)
class _Checked:
    """One listed file that passed the checks made before its data is read."""

    day: str | None
    path: str
    file: str  # relative to the landing root: lineage and messages
    size: int
    present: dict[str, str]
    extras: list[str]
    casts: dict[str, Cast]

    def batch_key(self) -> tuple:
        """Files with one key can share a scan: same columns, same types, same compression."""
        return (tuple(self.present.items()), self.path.endswith(COMPRESSED_SUFFIX))


class _Peekable:
    def __init__(self, items: Iterator) -> None:
        self._items, self._next = items, None
        self._done = False

    def peek(self):
        if self._next is None and not self._done:
            self._next = next(self._items, None)
            self._done = self._next is None
        return self._next

    def __iter__(self):
        return self

    def __next__(self):
        item = self.peek()
        if item is None:
            raise StopIteration
        self._next = None
        return item


class _Reader:
    """Reads a window's listed files in order: checked one by one, read in batches where they can be."""

    def __init__(self, source: Source, landing_root: str, run_id: str, ingested_at: dt.datetime,
                 max_file_bytes: int | None) -> None:
        self.source, self.landing_root, self.run_id = source, landing_root, run_id
        self.ingested_at, self.max_file_bytes = ingested_at, max_file_bytes
        # A worksheet, or a source whose bad values become NULL (counted per file), is read file by file.
        self.streams = source.format in ("csv", "jsonl", "parquet")  # a worksheet is always read whole
        self.batches = self.streams and source.on_bad_value != "null"
        self.real_dirs: dict[str, str] = {}

    def outcomes(self, jobs: list[tuple[str | None, str]], submit) -> _Peekable:
        return _Peekable(self._outcomes(jobs, submit))

    def _outcomes(self, jobs, submit) -> Iterator[_Outcome]:
        """Each job's outcome, in job order. ``submit(task, *args)`` runs ``task(cursor, *args)`` on a
        reader thread and returns its future; at most READ_AHEAD reads are in flight."""
        if not self.batches:
            reading: collections.deque = collections.deque()
            for job in jobs:  # checked first where the file may be streamed instead
                reading.append(submit(self._check if self.streams else self._read_one, *job))
                if len(reading) >= READ_AHEAD:
                    yield reading.popleft().result()
            while reading:
                yield reading.popleft().result()
            return
        checking: collections.deque = collections.deque()
        reading = collections.deque()
        remaining = iter(jobs)
        batch: list[_Checked] = []
        batch_bytes = 0

        def top_up() -> None:  # checks hold no data: look further ahead than a batch
            while len(checking) < 2 * BATCH_FILES and (job := next(remaining, None)) is not None:
                checking.append(submit(self._check, *job))

        def close() -> None:
            nonlocal batch_bytes
            if batch:
                reading.append(submit(self._read_batch, list(batch)))
                batch.clear()
                batch_bytes = 0

        top_up()
        while checking:
            checked = checking.popleft().result()
            top_up()
            if isinstance(checked, _Outcome):  # bad before its data was read, or read on its own
                close()
                reading.append(checked)
            else:
                if batch and (checked.batch_key() != batch[0].batch_key() or len(batch) >= BATCH_FILES
                              or batch_bytes + checked.size > BATCH_BYTES):
                    close()
                batch.append(checked)
                batch_bytes += checked.size
            while len(reading) > BATCHES_AHEAD:
                yield from _results(reading.popleft())
        close()
        while reading:
            yield from _results(reading.popleft())

    def _read_one(self, conn: duckdb.DuckDBPyConnection, day: str | None, path: str) -> _Outcome:
        started = time.perf_counter()
        try:
            table = read_file(conn, self.source, path, landing_root=self.landing_root, day=day, run_id=self.run_id,
                              ingested_at=self.ingested_at, max_file_bytes=self.max_file_bytes, real_dirs=self.real_dirs)
            return _Outcome(day, path, table, None, time.perf_counter() - started)
        except BadFile as bad:
            return _Outcome(day, path, None, bad, time.perf_counter() - started)

    def _check(self, conn: duckdb.DuckDBPyConnection, day: str | None, path: str) -> _Checked | _Outcome:
        """The checks of :func:`read_file` that come before the data: a bad file's outcome, or the
        file ready to be read (a file DuckDB cannot address by its own path is read on its own now)."""
        started = time.perf_counter()
        source, file = self.source, relative_path(path, self.landing_root)
        if _needs_local_copy(path):  # read_file makes the copy and reads it
            return self._read_one(conn, day, path)
        try:
            _check_location(path, self.landing_root, self.real_dirs)
            size, present, extras, casts = _contract(conn, source, path, self.max_file_bytes)
        except _Reject as reject:
            return _Outcome(day, path, None, _bad_file(reject, file, source, day), time.perf_counter() - started)
        checked = _Checked(day, path, file, size, present, extras, casts)
        if size * (STREAM_EXPANSION if path.endswith((COMPRESSED_SUFFIX, ".parquet")) else 1) > STREAM_BYTES:
            return _Outcome(day, path, None, None, time.perf_counter() - started, stream=checked)
        if _BATCH_FILE_COLUMN in present or any(c.lower() == _FILE_INDEX for c in present):
            # its file could not be told from the scan's own column: read it alone
            return self._read_one(conn, day, path)
        if not self.batches:  # read alone: bad values made NULL are counted per file
            try:
                table = _read_checked(conn, source, checked, run_id=self.run_id, ingested_at=self.ingested_at)
            except _Reject as reject:
                return _Outcome(day, path, None, _bad_file(reject, file, source, day), time.perf_counter() - started)
            return _Outcome(day, path, table, None, time.perf_counter() - started)
        return checked

    def stream(self, conn: duckdb.DuckDBPyConnection, checked: _Checked, nulled: dict) -> Iterator[pa.Table]:
        """``checked``'s rows in record batches, as :func:`read_file` would give them whole; the
        values made NULL (``on_bad_value: null``) in ``nulled['values']`` once all are read.

        Raises:
            BadFile: at the batch where the file turns out bad (the whole file is judged, as read whole).
        """
        source = self.source
        relation = _data_relation(conn, source, checked.path, checked.present)
        select = _select(source, checked, run_id=self.run_id, ingested_at=self.ingested_at)
        try:
            try:
                batches = conn.execute(f"SELECT {select} FROM {relation}").to_arrow_reader(STREAM_BATCH_ROWS)
                for batch in prefetched(batches, STREAM_AHEAD):
                    yield pa.Table.from_batches([batch])
            except (OSError, pa.ArrowException) as exc:  # DuckDB's error, raised through the Arrow stream
                raise _as_duckdb_error(exc) from exc
            if source.on_bad_value == "null":
                nulled["values"] = _nulled_count(conn, relation, checked.casts)
        except duckdb.Error as exc:
            if source.on_bad_value == "null":
                reject = _parse_failure(conn, source, checked.path, exc)
            else:
                reject = _read_failure(conn, source, checked.path, relation, checked.casts, checked.present, exc)
            raise _bad_file(reject, checked.file, source, checked.day) from exc

    def _read_batch(self, conn: duckdb.DuckDBPyConnection, batch: list[_Checked]) -> list[_Outcome]:
        """One scan over ``batch`` (files of one batch key), cut into one table per file; if the scan
        fails, every file is read on its own, so the bad one is found and named as it would be alone."""
        started = time.perf_counter()
        source, first = self.source, batch[0]
        paths = "[" + ", ".join(_file(c.path) for c in batch) + "]"
        relation = _data_relation(conn, source, paths, first.present, literal=True)
        select = ", ".join([
            *(cast.select(c) for c, cast in first.casts.items()), *map(quote_ident, first.extras),
            f"TIMESTAMP {_lit(self.ingested_at.strftime('%Y-%m-%d %H:%M:%S.%f'))} AS _ingested_at",
            f"{_lit(self.run_id)} AS _run_id", f"{_FILE_INDEX} AS {quote_ident(_BATCH_FILE_COLUMN)}",
        ])
        try:
            scanned = conn.execute(f"SELECT {select} FROM {relation}").to_arrow_table()
            tables = _split_by_file(scanned, batch, self.source)
        except (duckdb.Error, _UnexpectedScan):
            return [self._read_one(conn, c.day, c.path) for c in batch]
        seconds = (time.perf_counter() - started) / len(batch)
        return [_Outcome(c.day, c.path, table, None, seconds) for c, table in zip(batch, tables)]


class _UnexpectedScan(Exception):
    """A batched scan named a file it was not given, or mixed files' rows: read the files one by one."""


def _results(item: _Outcome | Future) -> list[_Outcome]:
    """An outcome known at check time, or a batch's outcomes once its read is done."""
    return [item] if isinstance(item, _Outcome) else item.result()


def _split_by_file(scanned: pa.Table, batch: list[_Checked], source: Source) -> list[pa.Table]:
    """The batched scan's rows as one table per file of ``batch`` (in order), each with the lineage
    columns a file read alone gets, in the same order and types."""
    index = scanned.column(_BATCH_FILE_COLUMN).combine_chunks().cast(pa.int32())
    scanned = scanned.drop_columns([_BATCH_FILE_COLUMN])
    if len(index):
        low, high = (v.as_py() for v in pc.min_max(index).values())
        if low < 0 or high >= len(batch):
            raise _UnexpectedScan(f"the scan numbered a file {high} it was not given")
        if len(index) > 1 and pc.any(pc.less(index[1:], index[:-1])).as_py():  # DuckDB keeps file order
            raise _UnexpectedScan("the scan's rows are not in file order")
    counts = {row["values"]: row["counts"] for row in pc.value_counts(index).to_pylist()}
    # Rows are in file order: each file's lineage is its value repeated (a copy per row, not a take).
    lineage = {
        "_source_file": [pa.scalar(c.file, pa.string()) for c in batch],
        "_landing_date": [pa.scalar(dt.date.fromisoformat(c.day) if c.day else None, pa.date32()) for c in batch],
    }
    added = {name: pa.chunked_array([pa.repeat(value, counts.get(i, 0)) for i, value in enumerate(values)],
                                    values[0].type)
             for name, values in lineage.items()}
    ordered = {name: scanned.column(name) for name in scanned.column_names}
    ordered.update(added)
    wanted = [*batch[0].casts, *batch[0].extras, *lineage_columns(source)]
    table = pa.table({name: ordered[name] for name in wanted})
    tables, offset = [], 0
    for i in range(len(batch)):
        tables.append(table.slice(offset, counts.get(i, 0)))
        offset += counts.get(i, 0)
    return tables


def _extra_type_conflict(
    source: Source, table: pa.Table, known: dict[str, pa.DataType], file: str, day: str | None
) -> BadFile | None:
    """A :class:`BadFile` if an extra column of ``table`` cannot be stored beside the types in
    ``known`` (the table's, and what earlier files of the window brought); else record its extras."""
    fixed = {*source.columns, *lineage_columns(source)}
    extras = [f for f in table.schema if f.name not in fixed]
    conflicts = [(f, known[f.name]) for f in extras if f.name in known and not type_fits(f.type, known[f.name])]
    if conflicts:
        detail = "; ".join(f"extra column '{f.name}' is {f.type} here but {other} in bronze.{source.name} "
                           "(or an earlier file of this load)" for f, other in conflicts)
        return BadFile(file, source=source.name, day=day, reason="extra_column_type_conflict", detail=detail,
                       action=f"Send {_quoted([f.name for f, _ in conflicts])} with the type the other files use, "
                              f"or declare the column with one type in sources.yml; {_RERUN}.")
    for f in extras:
        known.setdefault(f.name, f.type)
    return None


def lineage_columns(source: Source) -> tuple[str, ...]:
    return LINEAGE_COLUMNS if source.partitioned else REFERENCE_LINEAGE_COLUMNS


def _ordered(source: Source, table: pa.Table) -> pa.Table:
    """Declared columns first, then extra columns, lineage last."""
    lineage = lineage_columns(source)
    fixed = {*source.columns, *lineage}
    extras = [c for c in table.column_names if c not in fixed]
    return table.select([*source.columns, *extras, *lineage])


def _quarantine(
    bad: BadFile, path: str, source: Source, day: str, run_id: str, quarantine_root: str | None
) -> QuarantinedFile:
    if quarantine_root is None:
        raise IngestError(
            f"{bad} Source '{source.name}' quarantines bad files (on_bad_file: quarantine), "
            "but no quarantine folder was given to the load: pass quarantine_root (settings.quarantine)."
        ) from bad
    return quarantine_file(
        path, quarantine_root=quarantine_root, source=source.name, day=day, file=bad.file, reason=bad.reason,
        detail=bad.detail, action=bad.action, run_id=run_id,
    )


def read_file(
    conn: duckdb.DuckDBPyConnection, source: Source, path: str, *, landing_root: str, day: str | None, run_id: str,
    ingested_at: dt.datetime, max_file_bytes: int | None = None, real_dirs: dict[str, str] | None = None,
) -> pa.Table:
    """One landing file -> Arrow: declared columns cast, extra columns kept, lineage columns last.

    A declared column is cast only where every value survives the cast unchanged
    (:mod:`ratatouille_assets.ingest.casts`); otherwise the whole file is rejected.

    Raises:
        BadFile: the file is outside the landing zone, empty, too large, unreadable or breaks the contract.
    """
    file = relative_path(path, landing_root)
    try:
        _check_location(path, landing_root, real_dirs)
        with _addressable(path, max_file_bytes) as readable:
            return _read(conn, source, readable, file, day=day, run_id=run_id, ingested_at=ingested_at,
                         max_file_bytes=max_file_bytes)
    except _Reject as reject:
        raise _bad_file(reject, file, source, day) from reject


def _bad_file(reject: _Reject, file: str, source: Source, day: str | None) -> BadFile:
    return BadFile(file, source=source.name, day=day, reason=reject.reason, detail=reject.detail, action=reject.action)


def _read(
    conn: duckdb.DuckDBPyConnection, source: Source, path: str, file: str, *, day: str | None, run_id: str,
    ingested_at: dt.datetime, max_file_bytes: int | None,
) -> pa.Table:
    size, present, extras, casts = _contract(conn, source, path, max_file_bytes)
    checked = _Checked(day, path, file, size, present, extras, casts)
    return _read_checked(conn, source, checked, run_id=run_id, ingested_at=ingested_at)


def _select(source: Source, checked: _Checked, *, run_id: str, ingested_at: dt.datetime) -> str:
    """The select list of a file's read: declared columns cast (or made NULL where a value does
    not survive, with ``on_bad_value: null``), extra columns as they are, lineage last."""
    nulling = source.on_bad_value == "null"
    lineage = [
        *([f"DATE {_lit(checked.day)} AS _landing_date"] if source.partitioned else []),
        f"{_lit(checked.file)} AS _source_file",
        f"TIMESTAMP {_lit(ingested_at.strftime('%Y-%m-%d %H:%M:%S.%f'))} AS _ingested_at",
        f"{_lit(run_id)} AS _run_id",
    ]
    return ", ".join([*((cast.nulling_select(c) if nulling else cast.select(c)) for c, cast in checked.casts.items()),
                      *map(quote_ident, checked.extras), *lineage])


def _read_checked(
    conn: duckdb.DuckDBPyConnection, source: Source, checked: _Checked, *, run_id: str, ingested_at: dt.datetime,
) -> pa.Table:
    """A file that passed :func:`_contract`, read whole."""
    path, casts = checked.path, checked.casts
    relation = _data_relation(conn, source, path, checked.present)
    select = _select(source, checked, run_id=run_id, ingested_at=ingested_at)
    if source.on_bad_value == "null":
        return _read_nulling(conn, source, path, relation, select, casts)
    try:
        return conn.execute(f"SELECT {select} FROM {relation}").to_arrow_table()
    except duckdb.Error as exc:
        raise _read_failure(conn, source, path, relation, casts, checked.present, exc) from exc


def _contract(
    conn: duckdb.DuckDBPyConnection, source: Source, path: str, max_file_bytes: int | None,
) -> tuple[int, dict[str, str], list[str], dict[str, Cast]]:
    """The checks made before a file's data is read: its size (returned), its compression, its
    header and columns against the contract; then its columns, extra columns and casts."""
    size = _check_size(conn, path, max_file_bytes)
    if path.endswith(COMPRESSED_SUFFIX):
        _check_gzip(path, max_file_bytes)
    present = _columns(conn, source, path)
    extras = _check_columns(source, present)
    casts = {c: column_cast(c, present[c], t) for c, t in source.columns.items()}
    _check_refused(source, casts, present)
    return size, present, extras, casts


# Schema metadata of a file's table read with ``on_bad_value: null``: how many values became NULL.
NULLED_KEY = b"ratatouille.nulled-values"


def _read_nulling(
    conn: duckdb.DuckDBPyConnection, source: Source, path: str, relation: str, select: str, casts: dict[str, Cast],
) -> pa.Table:
    """A file of a source with ``on_bad_value: null``: a value that does not convert, or would
    change, is NULL; the count (per file, in the table's schema metadata) is reported per day."""
    try:
        table = conn.execute(f"SELECT {select} FROM {relation}").to_arrow_table()
        nulled = _nulled_count(conn, relation, casts)
    except duckdb.Error as exc:
        raise _parse_failure(conn, source, path, exc) from exc
    return table.replace_schema_metadata({NULLED_KEY: str(nulled).encode()}) if nulled else table


def _nulled_count(conn: duckdb.DuckDBPyConnection, relation: str, casts: dict[str, Cast]) -> int:
    counted = [cast.nulled(c) for c, cast in casts.items() if cast.value != quote_ident(c)]
    return sum(conn.execute(f"SELECT {', '.join(counted)} FROM {relation}").fetchone()) if counted else 0


# DuckDB's error classes by the prefix of their message: an error raised while an Arrow stream is
# read reaches Python as an OSError carrying only DuckDB's text.
_DUCKDB_ERRORS = {
    "Conversion Error": duckdb.ConversionException,
    "Invalid Input Error": duckdb.InvalidInputException,
    "Binder Error": duckdb.BinderException,
    "Out of Memory Error": duckdb.OutOfMemoryException,
    "IO Error": duckdb.IOException,
}


def _as_duckdb_error(exc: Exception) -> duckdb.Error:
    text = str(exc)
    kind = next((k for prefix, k in _DUCKDB_ERRORS.items() if text.startswith(prefix)), duckdb.Error)
    return kind(text)


@contextlib.contextmanager
def _addressable(path: str, max_file_bytes: int | None) -> Iterator[str]:
    """A path DuckDB reads ``path`` by: the path itself, or, for an S3 key with a '?' (which
    DuckDB's S3 reader takes for the start of URL parameters) or an xlsx, a local copy of the object."""
    if not _needs_local_copy(path):
        yield path
        return
    client = s3.client()
    bucket, key = s3.split(path)
    size = client.head_object(Bucket=bucket, Key=key)["ContentLength"]
    if max_file_bytes is not None and size > max_file_bytes:
        raise _too_large(size, max_file_bytes)
    with tempfile.TemporaryDirectory(prefix="ratatouille-read-") as folder:
        local = os.path.join(folder, "file" + "".join(PurePath(path.replace("?", "_")).suffixes))
        s3.copy(client, path, local)
        yield local


def _needs_local_copy(path: str) -> bool:
    # An xlsx on S3 is read from a local copy too: its width check opens the workbook as a zip.
    return path.startswith("s3://") and ("?" in path or path.endswith(".xlsx"))


def _check_location(path: str, landing_root: str, real_dirs: dict[str, str] | None = None) -> None:
    """Refuse, before opening it, a file that is not inside the landing root (by name or through a link).

    ``real_dirs`` caches each folder's resolved path for the files of one read (a years-long window
    has thousands of files in each source folder, and resolving a path stats each of its parts)."""
    root_parts = PurePath(landing_root).parts
    parts = PurePath(path).parts
    if parts[: len(root_parts)] != root_parts or ".." in parts[len(root_parts):]:
        raise _Reject(
            "unsafe_path", f"its path {path!r} has a '..' segment or is not under the landing root {landing_root!r}; "
            "it was not read or copied",
            f"Put the file itself under the source's landing folder, {_RERUN}.",
        )
    if landing_root.startswith("s3://"):
        return
    cache = real_dirs if real_dirs is not None else {}
    folder, name = os.path.split(path)
    if folder not in cache:
        cache[folder] = os.path.realpath(folder)
    if landing_root not in cache:
        cache[landing_root] = os.path.realpath(landing_root)
    real, root = os.path.join(cache[folder], name), cache[landing_root]
    if os.path.islink(real):
        real = os.path.realpath(real)
    if os.path.commonpath([real, root]) != root:
        raise _Reject(
            "unsafe_path", f"it resolves to {real!r}, outside the landing zone {root!r}; it was not read or copied",
            f"Replace the link with the file itself, inside the landing zone, {_RERUN}.",
        )


def _check_size(conn: duckdb.DuckDBPyConnection, path: str, max_file_bytes: int | None) -> int:
    # On S3 read_blob reads only the size, not the content; a local file's size is a stat away
    # (a DuckDB query costs ~0.4 ms, paid by every file of a years-long backfill).
    if path.startswith("s3://"):
        (size,) = conn.execute(f"SELECT size FROM read_blob({_file(path)})").fetchone()
    else:
        size = os.stat(path).st_size
    if size == 0:
        raise _Reject(
            "empty_file", "the file is empty (0 bytes)",
            f"Re-send it with its data (a CSV needs at least its header line), or delete it if it was dropped "
            f"by mistake; {_RERUN}.",
        )
    if max_file_bytes is not None and size > max_file_bytes:
        raise _too_large(size, max_file_bytes)
    return size


_GZIP_CHUNK = 1 << 20


def _check_gzip(path: str, max_file_bytes: int | None) -> None:
    """Decompress ``path`` once without keeping it, up to the size limit: a decompression bomb is
    refused before DuckDB reads it, and a truncated or corrupt stream gets a reason of its own."""
    if path.startswith("s3://"):
        bucket, key = s3.split(path)
        body = s3.client().get_object(Bucket=bucket, Key=key)["Body"]
        chunks = iter(lambda: body.read(_GZIP_CHUNK), b"")
    else:
        handle = open(path, "rb")  # noqa: SIM115 (closed below; the S3 body needs no closing)
        chunks = iter(lambda: handle.read(_GZIP_CHUNK), b"")
    inflate, total, fresh = zlib.decompressobj(wbits=47), 0, True  # 47: a gzip or zlib header
    limit = max_file_bytes if max_file_bytes is not None else float("inf")
    try:
        for chunk in chunks:
            while chunk:
                fresh = False
                total += len(inflate.decompress(chunk, _GZIP_CHUNK))
                if total > limit:
                    raise _Reject(
                        "too_large", f"it decompresses to more than {max_file_bytes:,} bytes "
                        "(RATATOUILLE_MAX_FILE_BYTES); it was not read further",
                        f"Split it into several smaller files in the same folder, {_RERUN}.",
                    )
                chunk = inflate.unconsumed_tail
                if inflate.eof:  # one member ends; another may follow (as `cat a.gz b.gz` makes)
                    chunk, inflate, fresh = inflate.unused_data + chunk, zlib.decompressobj(wbits=47), True
    except zlib.error as exc:
        raise _Reject("corrupt_gzip", f"it is not a valid gzip stream ({exc})",
                      f"Re-compress or re-send the file, {_RERUN}.") from exc
    finally:
        if not path.startswith("s3://"):
            handle.close()
    if not fresh:
        raise _Reject("corrupt_gzip", "the gzip stream ends early (the file is truncated)", f"Re-send the whole file, {_RERUN}.")


def _too_large(size: int, max_file_bytes: int) -> _Reject:
    return _Reject(
        "too_large", f"the file is {size:,} bytes, over the limit of {max_file_bytes:,} bytes "
        "(RATATOUILLE_MAX_FILE_BYTES); single files are read whole, in memory, and not streamed yet",
        f"Split it into several smaller files in the same folder, {_RERUN}.",
    )


def _columns(conn: duckdb.DuckDBPyConnection, source: Source, path: str) -> dict[str, str]:
    """The file's column names and DuckDB types, in file order, after the header checks (a parse
    error here rejects the file). CSV columns are all VARCHAR (cast afterwards); a JSON lines column
    is JSON where it may hold an object or an array (its values are then checked to be scalars, a
    slower path), else VARCHAR (the text of each value)."""
    if source.format == "csv":
        names = _csv_header(conn, source, path)
        _check_header(names)
        return {name: "VARCHAR" for name in names}
    if source.format == "jsonl" and (keys := _json_keys(conn, source, path)) is not None:
        return keys
    if source.format == "jsonl":
        # Every line is parsed (sample_size = -1) so keys that appear late count, and bad lines show here.
        relation = (
            f"read_json({_file(path)}, format = 'newline_delimited', records = true, sample_size = -1, "
            "maximum_depth = 1)"
        )
    elif source.format == "xlsx":
        relation = _xlsx_relation(conn, source, path)
    else:
        relation = f"read_parquet({_file(path)})"
    try:
        rows = conn.execute(f"DESCRIBE SELECT * FROM {relation}").fetchall()
    except duckdb.Error as exc:
        raise _parse_failure(conn, source, path, exc) from exc
    present = {row[0]: row[1] for row in rows}
    if source.format == "jsonl":  # every key is JSON at depth 1; as text where nothing can nest
        present = dict.fromkeys(present, "JSON" if _may_nest(path) else "VARCHAR")
    if source.format == "xlsx" or _renamed_by_duckdb(list(present)):  # renamed by DuckDB: look at the file
        names = _raw_names(conn, source, path)
        _check_header(names)
        if source.format == "xlsx":
            _check_xlsx_width(path, source.sheet, len(names))
    return present


_CELL_REF = re.compile(r"^([A-Z]+)(\d+)$")
_SHEET_NS = "{http://schemas.openxmlformats.org/spreadsheetml/2006/main}"
_REL_NS = "{http://schemas.openxmlformats.org/officeDocument/2006/relationships}"


def _check_xlsx_width(path: str, sheet: str | None, width: int) -> None:
    """Refuse a worksheet with values right of its header row: DuckDB's reader takes the header's
    width for the sheet's and would drop those cells without a word."""
    import xml.etree.ElementTree as ET
    import zipfile

    try:
        with zipfile.ZipFile(path) as book:
            sheets = [(s.get("name"), s.get(f"{_REL_NS}id")) for s in ET.fromstring(book.read("xl/workbook.xml")).iter(f"{_SHEET_NS}sheet")]
            targets = {r.get("Id"): r.get("Target") for r in ET.fromstring(book.read("xl/_rels/workbook.xml.rels"))}
            rel = next((rid for name, rid in sheets if sheet is None or name == sheet), None)
            if rel is None:
                return  # no such sheet: the reader names it
            target = targets[rel].lstrip("/")
            part = target if target.startswith("xl/") else f"xl/{target}"
            with book.open(part) as xml:
                for _, cell in ET.iterparse(xml):
                    if cell.tag != f"{_SHEET_NS}c":
                        continue
                    ref = _CELL_REF.match(cell.get("r", ""))
                    if ref and _column_number(ref.group(1)) > width and (cell.find(f"{_SHEET_NS}v") is not None
                                                                        or cell.find(f"{_SHEET_NS}is") is not None):
                        raise _Reject(
                            "bad_header", f"cell {ref.group(0)} holds a value right of the header row, which names "
                            f"{width} column(s); it would not be read",
                            f"Give that column a name in the header row (or clear the cells right of it), {_RERUN}.",
                        )
                    cell.clear()
    except (zipfile.BadZipFile, KeyError, ET.ParseError) as exc:
        raise _Reject("invalid_xlsx", f"it cannot be read as an xlsx workbook: {exc}",
                      f"Save it again as .xlsx (Excel workbook), {_RERUN}.") from exc


def _column_number(letters: str) -> int:
    number = 0
    for letter in letters:
        number = number * 26 + ord(letter) - 64
    return number


def _xlsx_relation(conn: duckdb.DuckDBPyConnection, source: Source, path: str, *, header: bool = True) -> str:
    """A worksheet as DuckDB reads it: typed by its first data row (a later cell of another type is
    an error naming the cell), every row (a blank row does not end the sheet), formulas as the
    values the spreadsheet saved."""
    conn.execute(f"LOAD '{extension_path('excel')}'")
    sheet = f", sheet = {_lit(source.sheet)}" if source.sheet else ""
    options = "header = true, stop_at_empty = false" if header else "header = false, all_varchar = true"
    return f"read_xlsx({_file(path)}{sheet}, {options})"


def _csv_header(conn: duckdb.DuckDBPyConnection, source: Source, path: str) -> list[str]:
    """The names of a CSV file's header line as written (DuckDB would rename a duplicate ``email``
    to ``email_1`` and an empty name to ``column3``), stripped of surrounding spaces as DuckDB does.

    A local file's first line is read here, which costs far less than a DuckDB scan; a file on S3
    through DuckDB, as its first row without a header."""
    if path.startswith("s3://"):
        try:
            row = conn.execute(
                f"SELECT * FROM read_csv({_file(path)}, {_CSV_DIALECT.replace('header = true', 'header = false')}) LIMIT 1"
            ).fetchone()
        except duckdb.Error as exc:
            raise _parse_failure(conn, source, path, exc) from exc
        return [("" if v is None else str(v)).strip() for v in (row or ())]
    try:
        with (gzip.open(path, "rt", encoding="utf-8-sig", newline="") if path.endswith(COMPRESSED_SUFFIX)
              else open(path, encoding="utf-8-sig", newline="")) as handle:
            header = next(csv.reader(handle, delimiter=",", quotechar='"', doublequote=True, strict=True), [])
    except UnicodeDecodeError:
        raise _Reject("not_utf8", "the file is not UTF-8 encoded text",
                      f"Re-export it as UTF-8 (for example: iconv -f latin1 -t utf-8), {_RERUN}.") from None
    except (csv.Error, OSError, EOFError) as exc:
        raise _Reject("csv_parse_error", f"its header line is not valid CSV: {exc}",
                      f"Fix the header line (comma-separated names, \"-quoted where needed), {_RERUN}.") from exc
    return [name.strip() for name in header]


_RENAMED = re.compile(r"^(?P<base>.+)_\d+$")


def _json_keys(conn: duckdb.DuckDBPyConnection, source: Source, path: str) -> dict[str, str] | None:
    """Every key of a JSON lines file in the order they first appear, each JSON where a value may
    nest (an object or an array inside a record) else VARCHAR; from one pass over the file.

    None where a line is no object, or the file has none: DuckDB's reader (below) then names the
    problem as it always has. The one pass replaces a schema inference over every line (sample_size
    = -1) and a second read of the file's bytes for nesting. Where records differ in their keys, a
    second pass numbers the lines to order the keys by first appearance (numbering every line
    halves the speed of the first pass, and most files have one set of keys)."""
    objects = f"read_ndjson_objects({_file(path)})"
    try:
        rows = conn.execute(
            "SELECT keys, bool_or(NOT is_object) AS odd, bool_or(nests) AS nests FROM ("
            "SELECT json_keys(json) AS keys, json_type(json) = 'OBJECT' AS is_object, "
            # As _may_nest below: an object or array inside a record needs a '[' or a second '{'.
            f"contains(json, '[') OR contains(substr(json, 2), '{{') AS nests FROM {objects}) GROUP BY keys"
        ).fetchall()
        if len(rows) > 1 and not any(odd for _, odd, _ in rows):
            first = {tuple(keys): n for keys, n in conn.execute(
                f"SELECT json_keys(json) AS keys, min(n) FROM {objects} WITH ORDINALITY AS t(json, n) GROUP BY keys"
            ).fetchall()}
            rows.sort(key=lambda row: first[tuple(row[0])])
    except duckdb.Error as exc:
        raise _parse_failure(conn, source, path, exc) from exc
    if not rows or any(odd for _, odd, _ in rows):
        return None
    names = list(dict.fromkeys(key for keys, *_ in rows for key in keys))
    if "" in names:  # DuckDB's reader would call it C0 and read NULLs for it
        raise _Reject("bad_header", "a record has a key that is the empty string",
                      f"Give every key of every record a name (or drop that key), {_RERUN}.")
    if len({n.lower() for n in names}) != len(names):
        _check_header(names)  # two keys that differ only in case: refused
    return dict.fromkeys(names, "JSON" if any(nests for *_, nests in rows) else "VARCHAR")


def _may_nest(path: str) -> bool:
    """Whether a JSON lines file may hold an object or an array inside a record.

    A local, uncompressed file where every '{' opens a line and no '[' appears holds neither (nor
    a string with those characters): its values are read as text, which is fast. Any other file
    is read with the declared columns as JSON, where ``json_type`` tells a nested value from a
    string that looks like one (the slower, exact path)."""
    if path.startswith("s3://") or path.endswith(COMPRESSED_SUFFIX):
        return True
    opens = line_opens = 0
    previous = b"\n"
    with open(path, "rb") as handle:
        while chunk := handle.read(_GZIP_CHUNK):
            if b"[" in chunk:
                return True
            opens += chunk.count(b"{")
            line_opens += chunk.count(b"\n{") + (previous == b"\n" and chunk[:1] == b"{")
            previous = chunk[-1:]
    return opens != line_opens


def _renamed_by_duckdb(names: list[str]) -> bool:
    """Whether a name looks like DuckDB's rename of a duplicate (``EMAIL_1`` beside ``email``)."""
    lower = {n.lower() for n in names}
    return any((m := _RENAMED.match(n)) and m.group("base").lower() in lower for n in names)


def _raw_names(conn: duckdb.DuckDBPyConnection, source: Source, path: str) -> list[str]:
    """Every key of a JSON lines file, the top-level column names of a Parquet file, or the header
    row of a worksheet, as written."""
    if source.format == "xlsx":
        try:
            row = conn.execute(f"SELECT * FROM {_xlsx_relation(conn, source, path, header=False)} LIMIT 1").fetchone()
        except duckdb.Error as exc:
            raise _parse_failure(conn, source, path, exc) from exc
        return [("" if v is None else str(v)).strip() for v in (row or ())]
    if source.format == "jsonl":
        rows = conn.execute(
            f"SELECT DISTINCT unnest(json_keys(json)) FROM read_ndjson_objects({_file(path)}) "
            "WHERE json_type(json) = 'OBJECT'"
        ).fetchall()
        # Two keys of one object with the same name are a parse error already; across objects a
        # key is one column, so only names that differ in case collide here.
        return [r[0] for r in rows]
    schema = conn.execute(f"SELECT name, num_children FROM parquet_schema({_file(path)})").fetchall()
    names, i = [], 1
    for _ in range(schema[0][1] or 0):  # the root's children, each followed by its own subtree
        names.append(schema[i][0])
        i = _skip_subtree(schema, i)
    return names


def _skip_subtree(schema: list[tuple], i: int) -> int:
    children = schema[i][1] or 0
    i += 1
    for _ in range(children):
        i = _skip_subtree(schema, i)
    return i


def _check_header(names: list[str]) -> None:
    """Refuse a header DuckDB would have to rename: an empty name, a name twice, or two names
    that differ only in case (SQL matches column names case-insensitively)."""
    empty = [i + 1 for i, n in enumerate(names) if not n]
    if empty:
        trailing = " (a trailing comma ends the header line)" if empty == [len(names)] else ""
        raise _Reject(
            "bad_header", f"column {', '.join(map(str, empty))} of the header has no name{trailing}",
            f"Name every column in the header line (or remove the extra delimiter), {_RERUN}.",
        )
    seen: dict[str, str] = {}
    for name in names:
        first = seen.setdefault(name.lower(), name)
        if first != name or names.count(name) > 1:
            what = (f"column '{name}' appears more than once" if first == name
                    else f"columns '{first}' and '{name}' differ only in case, and SQL does not tell them apart")
            raise _Reject(
                "bad_header", f"{what} in the header",
                f"Give each column one unique name (or drop the repeated column), {_RERUN}.",
            )


def _check_refused(source: Source, casts: dict[str, Cast], present: dict[str, str]) -> None:
    refused = [(c, cast.refused) for c, cast in casts.items() if cast.refused]
    if refused:
        bad = [c for c, _ in refused]
        raise _Reject(
            "type_mismatch", "; ".join(f"column '{c}' is declared {source.columns[c]} but {why}" for c, why in refused),
            f"Send {_quoted(bad)} as {_types(source, bad)}, or change the type in sources.yml; {_RERUN}.",
        )


def _data_relation(
    conn: duckdb.DuckDBPyConnection, source: Source, path: str, present: dict[str, str], *,
    filename: str | None = None, literal: bool = False,
) -> str:
    """The scan the data is selected from: text formats as VARCHAR (cast afterwards), Parquet as stored.

    ``literal``: ``path`` is already the reader's SQL argument (a list of files, for a batch);
    ``filename``: the column that names each row's file."""
    target = path if literal else _file(path)
    named = f", filename = {_lit(filename)}" if filename else ""
    if source.format == "csv":
        return f"read_csv({target}, {_CSV_DIALECT}{named})"
    if source.format == "jsonl":
        # A declared column that may nest as JSON (its values checked to be scalars, then taken as
        # text), else as text; an extra column always as text (a nested value as its JSON text).
        cols = ", ".join(f"{_lit(c)}: '{t if c in source.columns else 'VARCHAR'}'" for c, t in present.items())
        return f"read_json({target}, format = 'newline_delimited', records = true, columns = {{{cols}}}{named})"
    if source.format == "xlsx":
        # A blank row of the sheet (every cell empty) is no record.
        blank = " AND ".join(f"{quote_ident(c)} IS NULL" for c in present)
        return f"(SELECT * FROM {_xlsx_relation(conn, source, path)} WHERE NOT ({blank}))"
    return f"read_parquet({target}{named})"


def _check_columns(source: Source, present: dict[str, str]) -> list[str]:
    """The file's extra columns (additive drift, kept); a missing or renamed declared column rejects the file."""
    extras = [c for c in present if c not in source.columns]
    reserved = [c for c in extras if c in LINEAGE_COLUMNS]  # all four, for every kind of source
    if reserved:
        raise _Reject(
            "reserved_column", f"{_columns_phrase(reserved)} {_is(reserved)} reserved for lineage",
            f"Rename or drop {_it(reserved)} in the file, {_RERUN}.",
        )
    missing = [c for c in source.columns if c not in present]
    if not missing:
        return extras
    found = f"(found: {', '.join(present)})"
    if extras:
        raise _Reject(
            "missing_columns",
            f"{_columns_phrase(missing)} {_is(missing)} missing and {_columns_phrase(extras)} "
            f"{_is(extras)} not in the contract {found}",
            f"If {_quoted(missing)} {_is(missing)} now called {_quoted(extras)}, send {_it(missing)} as "
            f"{_quoted(missing)} again or rename {_it(missing)} to {_quoted(extras)} in sources.yml; otherwise send "
            f"{_quoted(missing)}, or change the contract in sources.yml; {_RERUN}.",
        )
    raise _Reject(
        "missing_columns", f"{_columns_phrase(missing)} {_is(missing)} missing {found}",
        f"Send {_it(missing)}, or change the contract in sources.yml; {_RERUN}.",
    )


def _quoted(names: list[str]) -> str:
    return ", ".join(f"'{n}'" for n in names)


def _columns_phrase(names: list[str]) -> str:
    return ("column " if len(names) == 1 else "columns ") + _quoted(names)


def _is(names: list[str]) -> str:
    return "is" if len(names) == 1 else "are"


def _it(names: list[str]) -> str:
    return "it" if len(names) == 1 else "them"


def _read_failure(
    conn: duckdb.DuckDBPyConnection, source: Source, path: str, relation: str, casts: dict[str, Cast],
    present: dict[str, str], exc: duckdb.Error,
) -> _Reject:
    """Why the cast select failed: values that do not convert or would change, else a parse error."""
    if isinstance(exc, (duckdb.ConversionException, duckdb.BinderException)) or LOSSY_MARKER in str(exc):
        try:
            problems = _cast_problems(conn, source, relation, casts, present)
        except duckdb.Error as scan_exc:  # the diagnostic scan met what the cast hid: a broken file
            return _parse_failure(conn, source, path, scan_exc)
        if problems:
            bad = [c for c, _, _ in problems]
            lossy_only = all(kind == "lossy_value" for _, kind, _ in problems)
            detail = "; ".join(text for _, _, text in problems)
            if lossy_only:
                return _Reject(
                    "lossy_value", detail,
                    f"Send {_quoted(bad)} as {_types(source, bad)} values that fit exactly{_LOSSY_HINT}, or declare "
                    f"a type that holds them exactly in sources.yml; {_RERUN}.",
                )
            return _Reject(
                "type_mismatch", detail,
                f"Send {_quoted(bad)} as {_types(source, bad)}, or change the type in sources.yml; {_RERUN}.",
            )
    return _parse_failure(conn, source, path, exc)


_LOSSY_HINT = (" (integers without fraction, exponent or hex; decimals within their scale; time stamps to the "
               "microsecond; dates without a time of day; no nested values)")


def _types(source: Source, columns: list[str]) -> str:
    return ", ".join(source.columns[c] for c in columns)


def _cast_problems(
    conn: duckdb.DuckDBPyConnection, source: Source, relation: str, casts: dict[str, Cast], present: dict[str, str],
) -> list[tuple[str, str, str]]:
    """(column, reason, description) for each declared column with values that do not convert to
    the declared type, or that would change if they did.

    One scan per column, on the failure path only: a column whose stored type cannot be cast at all
    (a binder error) must not hide the others.
    """
    problems = []
    for column, cast in casts.items():
        typ = source.columns[column]
        q = quote_ident(column)
        stored = f" (the file stores it as {present[column]})" if source.format == "parquet" else ""
        ok = cast.exact or "true"
        try:
            bad, bad_example, lossy, lossy_example = conn.execute(
                f"SELECT count(*) FILTER (WHERE {cast.try_value} IS NULL), "
                f"any_value({q}::VARCHAR) FILTER (WHERE {cast.try_value} IS NULL), "
                f"count(*) FILTER (WHERE {cast.try_value} IS NOT NULL AND NOT ({ok})), "
                f"any_value({q}::VARCHAR) FILTER (WHERE {cast.try_value} IS NOT NULL AND NOT ({ok})) "
                f"FROM {relation} WHERE {q} IS NOT NULL"
            ).fetchone()
        except duckdb.BinderException:
            problems.append((column, "type_mismatch",
                             f"column '{column}' is {present[column]} in the file, which cannot become {typ}"))
            continue
        if bad:
            problems.append((column, "type_mismatch",
                             f"column '{column}' has {bad} value(s) that are not {typ}, e.g. {bad_example[:60]!r}{stored}"))
        if lossy:
            problems.append((column, "lossy_value", f"column '{column}' has {lossy} value(s) that would change if "
                             f"stored as {typ}, e.g. {lossy_example[:60]!r}{stored}"))
    return problems


def _parse_failure(conn: duckdb.DuckDBPyConnection, source: Source, path: str, exc: duckdb.Error) -> _Reject:
    """Name the format problem; for text formats the encoding is checked first, as it is the fix to name."""
    if source.format in ("csv", "jsonl") and not _is_utf8(conn, path):
        return _Reject(
            "not_utf8", "the file is not UTF-8 encoded text",
            f"Re-export it as UTF-8 (for example: iconv -f latin1 -t utf-8), {_RERUN}.",
        )
    if source.format == "csv":
        return _Reject(
            "csv_parse_error", f"it is not valid CSV: {_first_csv_error(conn, path) or _duck_message(exc)}",
            "Every row needs as many comma-separated fields as the header line, with \"-quoted text for values "
            f"containing commas; fix the rows or re-export the file, {_RERUN}.",
        )
    if source.format == "jsonl":
        return _Reject(
            "invalid_json", f"it is not valid JSON lines: {_duck_message(exc)}",
            f"Each line must be one complete JSON object; fix or re-export the file, {_RERUN}.",
        )
    if source.format == "xlsx":
        return _Reject(
            "invalid_xlsx", f"it cannot be read as an xlsx worksheet: {_duck_message(exc)}",
            "Each column needs one kind of value below its header (numbers, text, dates or booleans); fix the "
            f"cell named, or save the sheet again as .xlsx, {_RERUN}.",
        )
    return _Reject(
        "corrupt_parquet", f"it cannot be read as Parquet (truncated or corrupt): {_duck_message(exc)}",
        f"Re-export or re-send the file, {_RERUN}.",
    )


def _is_utf8(conn: duckdb.DuckDBPyConnection, path: str) -> bool:
    try:
        conn.execute(f"SELECT length(content) FROM read_text({_file(path)})").fetchall()
    except duckdb.InvalidInputException:
        return False
    return True


def _first_csv_error(conn: duckdb.DuckDBPyConnection, path: str) -> str | None:
    """'line N: what is wrong (the line)' for the earliest bad CSV row DuckDB's rejects table recorded."""
    errors, scans = _CSV_REJECTS
    try:
        conn.execute(
            f"SELECT count(*) FROM read_csv({_file(path)}, {_CSV_DIALECT}, store_rejects = true, "
            f"rejects_limit = {_CSV_REJECTS_KEPT}, rejects_table = '{errors}', rejects_scan = '{scans}')"
        ).fetchall()
        row = conn.execute(
            f"SELECT line, error_message, csv_line FROM {errors} "
            f"WHERE scan_id = (SELECT max(scan_id) FROM {scans}) ORDER BY line LIMIT 1"
        ).fetchone()
    except duckdb.Error:
        return None
    if row is None:
        return None
    line, message, text = row
    return f"line {line}: {message} ({(text or '')[:200]!r})"


def _duck_message(exc: duckdb.Error) -> str:
    """DuckDB's first error line, without its 'Invalid Input Error:' prefix or the SQL it quotes."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return re.sub(r"^[A-Za-z ]*Error: ", "", first).strip().rstrip(".")


def empty_table(conn: duckdb.DuckDBPyConnection, source: Source) -> pa.Table:
    types = {"_landing_date": "DATE", "_source_file": "VARCHAR", "_ingested_at": "TIMESTAMP", "_run_id": "VARCHAR"}
    select = ", ".join(
        [f"CAST(NULL AS {t}) AS {quote_ident(c)}" for c, t in source.columns.items()]
        + [f"CAST(NULL AS {types[c]}) AS {c}" for c in lineage_columns(source)]
    )
    return conn.execute(f"SELECT {select} LIMIT 0").to_arrow_table()
