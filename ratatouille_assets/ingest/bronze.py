"""Load one landing day of a source into its bronze Iceberg table."""

from __future__ import annotations

import dataclasses
import datetime as dt

import duckdb
from pyiceberg.catalog import Catalog

from ratatouille_assets.ingest.readers import PARTITION_COLUMN, read_partition
from ratatouille_assets.ingest.sources import Source
from ratatouille_assets.lakehouse.write import Window, WriteResult, write_window

BRONZE = "bronze"


@dataclasses.dataclass(frozen=True)
class BronzeLoad:
    day: str
    files: tuple[str, ...]
    result: WriteResult


def bronze_identifier(source: Source) -> str:
    return f"{BRONZE}.{source.name}"


def load_day(
    conn: duckdb.DuckDBPyConnection, catalog: Catalog, source: Source, landing: str, day: str, run_id: str
) -> BronzeLoad:
    """Replace bronze partition ``day`` of ``source`` with that day's landing files (idempotent)."""
    batch = read_partition(conn, source, landing, day, run_id)
    date = dt.date.fromisoformat(day)
    result = write_window(
        catalog,
        bronze_identifier(source),
        batch.data,
        window=Window(PARTITION_COLUMN, date, date),
        run_id=run_id,
        partition_key=day,
        extra_properties={"ratatouille.files": str(len(batch.files))},
    )
    return BronzeLoad(day=day, files=batch.files, result=result)
