"""Load landing days of a source (or all of a reference source) into its bronze Iceberg table.

A load over any number of days is one write, so one Iceberg commit: years of history cost one
commit per table, not one per day, and readers see all of the days or none of them.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

import duckdb
from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import NoSuchTableError

from ratatouille_assets.ingest.quarantine import QuarantinedFile
from ratatouille_assets.ingest.readers import (
    PARTITION_COLUMN, PartitionRead, join_landing, list_window_files, stream_window,
)
from ratatouille_assets.ingest.sources import Source
from ratatouille_assets.layers import BRONZE
from ratatouille_assets.lakehouse import trace
from ratatouille_assets.lakehouse.branches import branch_head
from ratatouille_assets.lakehouse.duck import scan_sql
from ratatouille_assets.lakehouse.write import RetryPolicy, Window, WriteResult, table_types, write_window

# Snapshot-summary keys of a bronze load (beside the write path's run id, window and rows).
FILES_PROPERTY = "ratatouille.files"
QUARANTINED_PROPERTY = "ratatouille.quarantined-files"
DAYS_PROPERTY = "ratatouille.days"
QUARANTINED_DAYS_PROPERTY = "ratatouille.quarantined-days"
NULLED_PROPERTY = "ratatouille.nulled-values"
# The summary names at most this many days with set-aside files (the quarantine folder has them all).
QUARANTINED_DAYS_LISTED = 50


@dataclasses.dataclass(frozen=True)
class DayLoad:
    """What one landing day (None: a reference source's files) contributed to a load."""

    day: str | None
    rows: int
    files: tuple[str, ...]
    quarantined: tuple[QuarantinedFile, ...] = ()
    nulled: int = 0  # values set to NULL (on_bad_value: null)


@dataclasses.dataclass(frozen=True)
class BronzeLoad:
    days: tuple[DayLoad, ...]
    result: WriteResult

    @property
    def files(self) -> tuple[str, ...]:
        return tuple(f for d in self.days for f in d.files)

    @property
    def quarantined(self) -> tuple[QuarantinedFile, ...]:
        return tuple(q for d in self.days for q in d.quarantined)

    @property
    def rows(self) -> int:
        return self.result.rows_written

    @property
    def nulled(self) -> int:
        return sum(d.nulled for d in self.days)


def bronze_identifier(source: Source) -> str:
    return f"{BRONZE}.{source.name}"


def load(
    conn: duckdb.DuckDBPyConnection,
    catalog: Catalog,
    source: Source,
    landing: str,
    days: list[str] | None,
    run_id: str,
    *,
    quarantine_root: str | None = None,
    max_file_bytes: int | None = None,
    retry: RetryPolicy | None = None,
    branch: str = "main",
    fork_from: str | None = None,
) -> BronzeLoad:
    """Replace bronze days ``days`` (sorted, contiguous or not: the window is first..last) of
    ``source`` with those days' good landing files, in one commit (idempotent); for a reference
    source (``days`` None), replace the whole table with every file of the source.

    A day without a single landing file (a reference source without files) for which bronze holds
    rows raises :class:`MissingFilesError` before anything is written, so a folder that vanished
    never empties a day; unless the source says ``on_missing_files: empty``: then that day ends up
    empty. A day without files that holds nothing is loaded empty (there is nothing to lose).

    Bad files are quarantined under ``quarantine_root`` (or raise, per the source's ``on_bad_file``);
    the counts are recorded on the snapshot so a window with set-aside files can be found later.
    ``branch`` is the Iceberg branch written (dev mode, or a run's audit branch made from
    ``fork_from``), and ``fork_from`` (default: ``branch``) is read for the rows bronze holds.
    Files are read and written one at a time (coalesced into large data files), so a window larger
    than memory still loads.
    """
    if (days is None) == source.partitioned:
        raise ValueError(f"source '{source.name}': days are given for a reference source, or missing for a daily one")
    if days is not None and not days:
        raise ValueError(f"source '{source.name}': no days to load")
    reads: dict[str | None, PartitionRead] = {}
    window = None
    if days is not None:
        days = sorted(days)
        window = Window(PARTITION_COLUMN, dt.date.fromisoformat(days[0]), dt.date.fromisoformat(days[-1]))
        # Days inside first..last that were not asked for are still owned by the write: load them too.
        days = [d.isoformat() for d in window.days()]
    listing = list_window_files(conn, landing, source, days)
    listing = {day: listing.get(day, []) for day in (days if days is not None else [None])}
    missing = [day for day, files in listing.items() if not files]
    if missing and source.on_missing_files == "fail":
        held = _rows_held(conn, catalog, source, missing, fork_from or branch)
        if losing := [day for day in missing if held.get(day, 0) > 0]:
            raise MissingFilesError(_missing_message(source, landing, losing, held))
    result = write_window(
        catalog,
        bronze_identifier(source),
        stream_window(conn, source, landing, listing, run_id, reads, quarantine_root=quarantine_root,
                      max_file_bytes=max_file_bytes, column_types=table_types(catalog, bronze_identifier(source))),
        window=window,
        run_id=run_id,
        retry=retry,
        partition_key=None if days is None else (days[0] if len(days) == 1 else f"{days[0]}..{days[-1]}"),
        extra_properties=lambda: _properties(reads),
        granularity=source.partition_granularity,
        branch=branch,
        fork_from=fork_from or branch,
    )
    loads = tuple(
        DayLoad(day=day, rows=found.rows, files=tuple(found.files), quarantined=tuple(found.quarantined),
                nulled=found.nulled)
        for day, found in reads.items()
    )
    trace.record("bronze.read", sum(f.read_seconds for f in reads.values()), table=bronze_identifier(source),
                 days=len(loads), rows=sum(d.rows for d in loads))
    return BronzeLoad(days=loads, result=result)


def load_day(
    conn: duckdb.DuckDBPyConnection, catalog: Catalog, source: Source, landing: str, day: str | None, run_id: str,
    **options,
) -> BronzeLoad:
    """One landing day (None: a reference source, whole): :func:`load` of that day."""
    return load(conn, catalog, source, landing, None if day is None else [day], run_id, **options)


class MissingFilesError(Exception):
    """Days of a load have no landing file at all; nothing was written. The message names the
    source, the days, where their files were looked for, the rows bronze keeps, and the fix."""


# The message names at most this many days without files.
MISSING_DAYS_LISTED = 10


def _missing_message(source: Source, landing: str, missing: list[str | None], held: dict[str | None, int]) -> str:
    if missing == [None]:
        where = join_landing(landing, source.landing_glob())
        what = f"no landing files for reference source '{source.name}' match {where}"
        kept = f"bronze.{source.name} keeps its {held[None]:,} rows"
    else:
        shown = missing[:MISSING_DAYS_LISTED]
        more = f" and {len(missing) - len(shown)} more day(s)" if len(missing) > len(shown) else ""
        where = join_landing(landing, source.landing_glob(shown[0]))
        days = ", ".join(f"{day} ({held[day]:,} rows kept)" for day in shown)
        what = f"no landing files for '{source.name}' on {len(missing)} day(s) that hold rows: {days}{more} (looked for {where}"
        what += ", and the same for each day)" if len(missing) > 1 else ")"
        kept = "those partitions keep their rows"
    return (
        f"{what}; nothing was written and {kept}. Land the files and run again, check the landing root "
        f"(RATATOUILLE_LANDING, now {landing!r}), or, to empty such days on purpose, set "
        f"on_missing_files: empty on '{source.name}' in sources.yml."
    )


def _rows_held(
    conn: duckdb.DuckDBPyConnection, catalog: Catalog, source: Source, days: list[str | None], branch: str = "main"
) -> dict:
    """Bronze's current rows (on ``branch`` where it has it) per day of ``days`` that holds any (None: the whole table)."""
    try:
        table = catalog.load_table(bronze_identifier(source))
    except NoSuchTableError:
        return {}
    scan = scan_sql(*branch_head(table, branch))
    if days == [None]:
        (rows,) = conn.execute(f"SELECT count(*) FROM {scan}").fetchone()
        return {None: rows}
    wanted = set(days)
    counted = conn.execute(
        f"SELECT {PARTITION_COLUMN}, count(*) FROM {scan} "
        f"WHERE {PARTITION_COLUMN} BETWEEN DATE '{min(days)}' AND DATE '{max(days)}' GROUP BY 1").fetchall()
    return {d.isoformat(): n for d, n in counted if d.isoformat() in wanted}


def _properties(reads: dict[str | None, PartitionRead]) -> dict[str, str]:
    quarantined_days = [day for day, found in reads.items() if found.quarantined and day]
    listed = ",".join(quarantined_days[:QUARANTINED_DAYS_LISTED])
    if len(quarantined_days) > QUARANTINED_DAYS_LISTED:
        listed += f",... (+{len(quarantined_days) - QUARANTINED_DAYS_LISTED} more)"
    return {
        FILES_PROPERTY: str(sum(len(f.files) for f in reads.values())),
        QUARANTINED_PROPERTY: str(sum(len(f.quarantined) for f in reads.values())),
        DAYS_PROPERTY: str(sum(1 for day in reads if day)),
        **({NULLED_PROPERTY: str(nulled)} if (nulled := sum(f.nulled for f in reads.values())) else {}),
        **({QUARANTINED_DAYS_PROPERTY: listed} if quarantined_days else {}),
    }
