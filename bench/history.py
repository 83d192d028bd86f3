"""Build days of Iceberg history fast, through the platform's own storage path.

Bronze days are loaded by the real bronze loader (``ingest.bronze.load_day``); silver and gold
days run the dbt models' compiled SQL (``bench.sql``) in DuckDB over the Iceberg tables and are
committed by the one write path (``lakehouse.write.write_window``), one commit per table and day,
as daily runs make them. Only dbt's and Dagster's start-up and the Soda scans are skipped, so a
year of history takes minutes instead of a year of scheduled runs.
"""

from __future__ import annotations

import datetime as dt

from bench.sql import REJECT_COLUMN, Model
from ratatouille_assets.ingest.bronze import load_day
from ratatouille_assets.ingest.sources import load_sources
from ratatouille_assets.lakehouse import duck
from ratatouille_assets.lakehouse.catalog import load_catalog
from ratatouille_assets.lakehouse.dbt_plugin import REJECTED_SUFFIX, rejected_properties, split_rejected
from ratatouille_assets.lakehouse.scd2 import Scd2Spec, plan_scd2
from ratatouille_assets.lakehouse.write import Window, write_window
from ratatouille_assets.settings import Settings

RUN_ID = "bench-history"


def build(settings: Settings, days: list[str], models: list[Model], maintain_every: int = 0,
          done: int = 0) -> None:
    """Load and transform ``days`` (in order) into the warehouse of ``settings``; with
    ``maintain_every``, maintain every table after each such number of days (``done``: days built
    before these, so the rhythm carries across calls)."""
    catalog = load_catalog(settings)
    sources = load_sources(settings.sources_file)
    conn = duck.connect(settings)
    try:
        for day in days:
            for source in sources.values():
                load_day(conn, catalog, source, settings.landing, day, RUN_ID, quarantine_root=settings.quarantine)
            duck.register_iceberg_views(conn, catalog)
            date = dt.date.fromisoformat(day)
            for model in models:
                sql = model.for_window(day, day) if model.partition_by else model.sql
                data = conn.execute(sql).to_arrow_table()
                window = Window(model.partition_by, date, date) if model.partition_by else None
                common = dict(window=window, run_id=RUN_ID, partition_key=day if window else None,
                              granularity=model.granularity)
                extra = {}
                if REJECT_COLUMN in data.column_names:
                    data, rejected = split_rejected(data)
                    written = write_window(catalog, model.identifier + REJECTED_SUFFIX, rejected, **common)
                    duck.point_view(conn, model.schema, model.name + REJECTED_SUFFIX, written.metadata_location)
                    extra = rejected_properties(rejected)
                if model.scd2_updated_at:  # a history: the day's versions added, as the plugin does
                    data = _scd2(conn, catalog, model, data)
                written = write_window(catalog, model.identifier, data, extra_properties=extra, **common)
                duck.point_view(conn, model.schema, model.name, written.metadata_location)
            done += 1
            if maintain_every and done % maintain_every == 0:
                maintain_all(settings)
    finally:
        conn.close()


# A year built in minutes is all younger than any age limit: the history keeps the newest 100
# snapshots per table, as a daily job keeping 7 days does for a few commits per table and day.
BENCH_POLICY = dict(keep_days=0, keep_snapshots=100, orphan_age=dt.timedelta(0))


def maintain_all(settings: Settings) -> dict:
    """The maintenance job's work on every table (nothing else writes meanwhile: no safety window)."""
    from ratatouille_assets.lakehouse.maintenance import Policy, maintain
    from ratatouille_assets.lakehouse.tables import list_tables

    catalog = load_catalog(settings)
    policy = Policy(**BENCH_POLICY)
    totals = {"expired": 0, "deleted_files": 0, "compacted_files": 0, "orphans": 0}
    for name in list_tables(catalog):
        result = maintain(catalog, name, policy, run_id="bench-maintenance", settings=settings)
        totals["expired"] += len(result.expired.expired)
        totals["deleted_files"] += result.expired.deleted_files
        totals["compacted_files"] += sum(len(g.inputs) for g in result.compacted.rewritten)
        totals["orphans"] += len(result.swept.orphans)
    return totals


def _scd2(conn, catalog, model: Model, changes):
    conn.register("__bench_changes", changes)
    target = f'"{model.schema}"."{model.name}"' if catalog.table_exists(model.identifier) else None
    plan = plan_scd2(conn, "__bench_changes", target, Scd2Spec(model.scd2_key, model.scd2_updated_at))
    try:
        return conn.execute(plan.sql).to_arrow_table()
    finally:
        plan.drop(conn)
        conn.unregister("__bench_changes")


def table_stats(settings: Settings) -> dict[str, dict]:
    """Per table: commits since creation, data files, metadata.json files and all metadata files, rows."""
    import os

    catalog = load_catalog(settings)
    out = {}
    for (namespace,) in catalog.list_namespaces():
        for identifier in catalog.list_tables(namespace):
            table = catalog.load_table(identifier)
            folder = os.path.dirname(table.metadata_location.removeprefix("file://"))
            names = os.listdir(folder)
            snapshot = table.current_snapshot()
            out[".".join(identifier)] = {
                "commits": len(table.metadata.metadata_log),
                "snapshots": len(table.metadata.snapshots),
                "data_files": sum((m.added_files_count or 0) + (m.existing_files_count or 0)
                                  for m in snapshot.manifests(table.io)) if snapshot is not None else 0,
                "metadata_json": sum(1 for n in names if n.endswith(".metadata.json")),
                "metadata_files": len(names),
                "rows": int(snapshot.summary["total-records"]) if snapshot and snapshot.summary else 0,
            }
    return out


def metadata_stats(settings: Settings) -> dict:
    """Snapshots, live data files and metadata bytes over every table: what grows with each commit."""
    import os

    catalog = load_catalog(settings)
    snapshots = current_bytes = all_bytes = tables = data_files = 0
    for (namespace,) in catalog.list_namespaces():
        for identifier in catalog.list_tables(namespace):
            table = catalog.load_table(identifier)
            tables += 1
            snapshots += len(table.metadata.snapshots)
            snapshot = table.current_snapshot()
            if snapshot is not None:
                data_files += sum((m.added_files_count or 0) + (m.existing_files_count or 0) for m in snapshot.manifests(table.io))
            current_bytes += os.path.getsize(table.metadata_location.removeprefix("file://"))
            folder = os.path.dirname(table.metadata_location.removeprefix("file://"))
            all_bytes += sum(os.path.getsize(os.path.join(folder, f)) for f in os.listdir(folder))
    return {"tables": tables, "snapshots": snapshots, "data_files": data_files, "current_metadata_bytes": current_bytes,
            "metadata_dir_bytes": all_bytes}
