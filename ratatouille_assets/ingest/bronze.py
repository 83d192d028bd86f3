"""Load one landing day of a source (or all of a reference source) into its bronze Iceberg table."""

from __future__ import annotations

import dataclasses
import datetime as dt

import duckdb
from pyiceberg.catalog import Catalog

from ratatouille_assets.ingest.quarantine import QuarantinedFile
from ratatouille_assets.ingest.readers import PARTITION_COLUMN, PartitionRead, stream_partition
from ratatouille_assets.ingest.sources import Source
from ratatouille_assets.layers import BRONZE
from ratatouille_assets.lakehouse import trace
from ratatouille_assets.lakehouse.write import RetryPolicy, Window, WriteResult, write_window



@dataclasses.dataclass(frozen=True)
class BronzeLoad:
    day: str | None  # None: a reference source, loaded whole
    files: tuple[str, ...]
    result: WriteResult
    quarantined: tuple[QuarantinedFile, ...] = ()


def bronze_identifier(source: Source) -> str:
    return f"{BRONZE}.{source.name}"


def load_day(
    conn: duckdb.DuckDBPyConnection,
    catalog: Catalog,
    source: Source,
    landing: str,
    day: str | None,
    run_id: str,
    *,
    quarantine_root: str | None = None,
    max_file_bytes: int | None = None,
    retry: RetryPolicy | None = None,
) -> BronzeLoad:
    """Replace bronze partition ``day`` of ``source`` with that day's good landing files (idempotent);
    for a reference source (``day`` None), replace the whole table with every file of the source.

    Bad files are quarantined under ``quarantine_root`` (or raise, per the source's ``on_bad_file``);
    their count is recorded on the snapshot so a partition with set-aside files can be found later.
    Files are read and written one at a time, so a day larger than memory still loads.
    """
    if (day is None) == source.partitioned:
        raise ValueError(f"source '{source.name}': a day is given for a reference source, or missing for a daily one")
    found = PartitionRead()
    window = None if day is None else Window(PARTITION_COLUMN, dt.date.fromisoformat(day), dt.date.fromisoformat(day))
    result = write_window(
        catalog,
        bronze_identifier(source),
        stream_partition(
            conn, source, landing, day, run_id, found, quarantine_root=quarantine_root, max_file_bytes=max_file_bytes
        ),
        window=window,
        run_id=run_id,
        retry=retry,
        partition_key=day,
        extra_properties=lambda: {
            "ratatouille.files": str(len(found.files)),
            "ratatouille.quarantined-files": str(len(found.quarantined)),
        },
    )
    trace.record("bronze.read", found.read_seconds, table=bronze_identifier(source), day=day, rows=found.rows)
    return BronzeLoad(day=day, files=tuple(found.files), result=result, quarantined=tuple(found.quarantined))
