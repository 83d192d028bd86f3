"""The one daily partitioning of event-time data, and the partition window -> dbt vars rule."""

from __future__ import annotations

import datetime as dt

import dagster as dg



def daily_partitions(start: str, timezone: str) -> dg.DailyPartitionsDefinition:
    """Daily partitions from ``start`` (sources.yml's ``partitions.start``) to yesterday."""
    return dg.DailyPartitionsDefinition(start_date=start, timezone=timezone)


def window_days(start: dt.datetime, end: dt.datetime) -> tuple[dt.date, dt.date]:
    """A Dagster time window (end exclusive) as inclusive days."""
    first = start.date()
    last = (end - dt.timedelta(microseconds=1)).date()
    if last < first:
        raise ValueError(f"empty partition window {start}..{end}")
    return first, last


def dbt_vars(start: dt.datetime, end: dt.datetime, *, run_id: str, partition_key: str) -> dict[str, str]:
    """The ``--vars`` a partitioned dbt run gets: the window as inclusive ISO dates (quoted by the macros)."""
    first, last = window_days(start, end)
    return {
        "min_date": first.isoformat(),
        "max_date": last.isoformat(),
        "dagster_run_id": run_id,
        "partition_key": partition_key,
    }
