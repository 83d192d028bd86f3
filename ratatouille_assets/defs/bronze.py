"""Bronze assets, one per source in sources.yml, plus the landing zone as external assets.

(No `from __future__ import annotations` here: Dagster inspects the context annotation.)
"""


import dagster as dg

from ratatouille_assets.defs.metadata import snapshot_metadata
from ratatouille_assets.defs.resources import LakehouseResource
from ratatouille_assets.ingest.bronze import BRONZE, bronze_identifier, load_day
from ratatouille_assets.ingest.sources import Source
from ratatouille_assets.lakehouse.tables import describe

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


def bronze_asset(source: Source, partitions_def: dg.PartitionsDefinition) -> dg.AssetsDefinition:
    schema = dg.TableSchema(columns=[dg.TableColumn(name, type) for name, type in source.columns.items()])

    @dg.asset(
        key=[BRONZE, source.name],
        deps=[dg.AssetKey([LANDING, source.name])],
        partitions_def=partitions_def,
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
                load = load_day(conn, catalog, source, settings.landing, day, context.run.run_id)
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
        return dg.MaterializeResult(metadata=metadata)

    return _bronze


def build_bronze(sources: dict[str, Source], partitions_def: dg.PartitionsDefinition) -> list:
    return [landing_spec(s) for s in sources.values()] + [bronze_asset(s, partitions_def) for s in sources.values()]
