"""Bronze assets, one per source in sources.yml, plus the landing zone as external assets.

(No `from __future__ import annotations` here: Dagster inspects the context annotation.)
"""


import datetime as dt

import dagster as dg

from ratatouille_assets.defs.checks import check_result, quarantine_check_spec, quarantine_result, soda_check_specs
from ratatouille_assets.defs.metadata import snapshot_metadata
from ratatouille_assets.defs.resources import LakehouseResource
from ratatouille_assets.ingest.bronze import BRONZE, bronze_identifier, load_day
from ratatouille_assets.ingest.sources import Source
from ratatouille_assets.ingest.readers import PARTITION_COLUMN
from ratatouille_assets.lakehouse.tables import describe
from ratatouille_assets.lakehouse.write import RetryPolicy, Window
from ratatouille_assets.quality.audit import audit_table
from ratatouille_assets.quality.sodacl import DatasetChecks

LANDING = "landing"
_FORMAT_KIND = {"csv": "csv", "jsonl": "json", "parquet": "parquet"}


def landing_spec(source: Source) -> dg.AssetSpec:
    return dg.AssetSpec(
        key=[LANDING, source.name],
        group_name=LANDING,
        description=f"Files dropped under <landing>/{source.path}",
        kinds={_FORMAT_KIND[source.format]},
        metadata={"path_pattern": source.path, "format": source.format},
    )


def bronze_asset(
    source: Source,
    partitions_def: dg.PartitionsDefinition,
    datasets: dict[str, DatasetChecks],
    backfill_policy: dg.BackfillPolicy | None = None,
) -> dg.AssetsDefinition:
    schema = dg.TableSchema(columns=[dg.TableColumn(name, type) for name, type in source.columns.items()])
    key = dg.AssetKey([BRONZE, source.name])

    @dg.asset(
        key=key,
        check_specs=[*soda_check_specs(datasets, key), quarantine_check_spec(key)],
        deps=[dg.AssetKey([LANDING, source.name])],
        partitions_def=partitions_def,
        backfill_policy=backfill_policy,
        group_name=BRONZE,
        kinds={"iceberg", "duckdb"},
        description=source.description or f"Landing files of {source.name}, as they came.",
        metadata={
            "primary_key": ", ".join(source.primary_key),
            "event_time": source.event_time,
            "contract": schema,
        },
    )
    def _bronze(context: dg.AssetExecutionContext, lakehouse: LakehouseResource) -> dg.MaterializeResult:
        settings = lakehouse.settings()
        catalog = lakehouse.catalog()
        conn = lakehouse.connect()
        loads = []
        try:
            for day in context.partition_keys:
                load = load_day(
                    conn, catalog, source, settings.landing, day, context.run.run_id,
                    quarantine_root=settings.quarantine, max_file_bytes=settings.max_file_bytes,
                    retry=RetryPolicy(attempts=settings.commit_retries),
                )
                for q in load.quarantined:
                    context.log.warning(f"quarantined {q.file}: {q.message}")
                context.log.info(
                    f"{bronze_identifier(source)}[{day}]: {load.result.rows_written} rows from {len(load.files)} file(s), "
                    f"snapshot {load.result.snapshot_id} (attempts: {load.result.attempts})"
                )
                loads.append(load)
        finally:
            conn.close()
        info = describe(catalog, bronze_identifier(source), context.run.run_id)
        metadata = snapshot_metadata(info)
        metadata["dagster/row_count"] = dg.MetadataValue.int(sum(load.result.rows_written for load in loads))
        metadata["files"] = dg.MetadataValue.int(sum(len(load.files) for load in loads))
        quarantined = [q for load in loads for q in load.quarantined]
        metadata["quarantined_files"] = dg.MetadataValue.int(len(quarantined))
        # Audit exactly the landing days this run wrote.
        window = Window(PARTITION_COLUMN, dt.date.fromisoformat(context.partition_keys[0]),
                        dt.date.fromisoformat(context.partition_keys[-1]))
        outcomes = audit_table(bronze_identifier(source), info.metadata_location, window=window, settings=settings)
        results = [check_result(key, o) for o in outcomes] + [quarantine_result(key, quarantined)]
        return dg.MaterializeResult(metadata=metadata, check_results=results)

    return _bronze


def build_bronze(
    sources: dict[str, Source],
    partitions_def: dg.PartitionsDefinition,
    datasets: dict[str, DatasetChecks],
    partitions_per_run: int = 1,
) -> list:
    """Landing specs and bronze assets. A backfill loads ``partitions_per_run`` days per run, several
    runs in parallel: per-run start-up is amortized, the write path keeps parallel commits safe."""
    policy = dg.BackfillPolicy.multi_run(max_partitions_per_run=partitions_per_run)
    return [landing_spec(s) for s in sources.values()] + [
        bronze_asset(s, partitions_def, datasets, policy) for s in sources.values()
    ]
