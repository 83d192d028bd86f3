"""Load one landing day of a source into its bronze Iceberg table."""

from __future__ import annotations

import dataclasses
import datetime as dt

import duckdb
from pyiceberg.catalog import Catalog

from ratatouille_assets.ingest.quarantine import QuarantinedFile
from ratatouille_assets.ingest.readers import PARTITION_COLUMN, read_partition
from ratatouille_assets.ingest.sources import Source
from ratatouille_assets.lakehouse import trace
from ratatouille_assets.lakehouse.write import RetryPolicy, Window, WriteResult, write_window

BRONZE = "bronze"


@dataclasses.dataclass(frozen=True)
class BronzeLoad:
    day: str
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
    day: str,
    run_id: str,
    *,
    quarantine_root: str | None = None,
    max_file_bytes: int | None = None,
    retry: RetryPolicy | None = None,
) -> BronzeLoad:
    """Replace bronze partition ``day`` of ``source`` with that day's good landing files (idempotent).

    Bad files are quarantined under ``quarantine_root`` (or raise, per the source's ``on_bad_file``);
    their count is recorded on the snapshot so a partition with set-aside files can be found later.
    """
    with trace.span("bronze.read", table=bronze_identifier(source), day=day) as span:
        batch = read_partition(
            conn, source, landing, day, run_id, quarantine_root=quarantine_root, max_file_bytes=max_file_bytes
        )
        span["rows"] = batch.data.num_rows
    date = dt.date.fromisoformat(day)
    result = write_window(
        catalog,
        bronze_identifier(source),
        batch.data,
        window=Window(PARTITION_COLUMN, date, date),
        run_id=run_id,
        retry=retry,
        partition_key=day,
        extra_properties={
            "ratatouille.files": str(len(batch.files)),
            "ratatouille.quarantined-files": str(len(batch.quarantined)),
        },
    )
    return BronzeLoad(day=day, files=batch.files, result=result, quarantined=batch.quarantined)
