"""Bronze assets, one per source in sources.yml, plus the landing zone as external assets.

A partitioned source is a daily-partitioned asset (one bronze partition per landing day); a
reference source (``partitioned: false``) an unpartitioned one, loaded whole.

(No `from __future__ import annotations` here: Dagster inspects the context annotation.)
"""


import datetime as dt

import dagster as dg

from ratatouille_assets.defs.checks import (
    audit_metadata,
    check_result,
    quarantine_check_spec,
    quarantine_result,
    soda_check_specs,
)
from ratatouille_assets.defs.metadata import partition_metadata, snapshot_metadata
from ratatouille_assets.defs.partition_metadata import add_partition_metadata, scope_to_newest
from ratatouille_assets.defs.resources import LakehouseResource
from ratatouille_assets.ingest.bronze import bronze_identifier
from ratatouille_assets.ingest.bronze import load as load_bronze
from ratatouille_assets.ingest.readers import PARTITION_COLUMN
from ratatouille_assets.ingest.sources import Source
from ratatouille_assets.layers import BRONZE
from ratatouille_assets.lakehouse.tables import describe
from ratatouille_assets.lakehouse.wap import audit_branch, publish
from ratatouille_assets.lakehouse.write import RetryPolicy, Window
from ratatouille_assets.quality.audit import audit_table, blocked_message, nothing_to_check
from ratatouille_assets.quality.sodacl import DatasetChecks

LANDING = "landing"
_FORMAT_KIND = {"csv": "csv", "jsonl": "json", "parquet": "parquet", "xlsx": "excel"}


def landing_spec(source: Source) -> dg.AssetSpec:
    kind = "daily folders" if source.partitioned else "reference files, loaded whole"
    return dg.AssetSpec(
        key=[LANDING, source.name],
        group_name=LANDING,
        description=f"Files dropped under <landing>/{source.path} ({kind})",
        kinds={_FORMAT_KIND[source.format]},
        metadata={"path_pattern": source.path, "format": source.format, "partitioned": source.partitioned},
    )


def bronze_pool(source: Source) -> str:
    return f"bronze_{source.name}"


def bronze_asset(
    source: Source,
    partitions_def: dg.PartitionsDefinition,
    datasets: dict[str, DatasetChecks],
    backfill_policy: dg.BackfillPolicy | None = None,
) -> dg.AssetsDefinition:
    """The bronze asset of ``source``.

    A multi-asset of one asset with ``can_subset``: a check that is not run (the day had no files,
    so there is nothing to check) is reported as skipped instead of failing the step.
    """
    schema = dg.TableSchema(columns=[dg.TableColumn(name, type) for name, type in source.columns.items()])
    key = dg.AssetKey([BRONZE, source.name])
    spec = dg.AssetSpec(
        key=key,
        deps=[dg.AssetKey([LANDING, source.name])],
        group_name=BRONZE,
        kinds={"iceberg", "duckdb"},
        description=source.description or f"Landing files of {source.name}, as they came.",
        metadata={
            "primary_key": ", ".join(source.primary_key),
            "event_time": source.event_time or "",
            "partitioned": source.partitioned,
            "contract": schema,
        },
        skippable=False,
    )

    @dg.multi_asset(
        name=f"bronze_{source.name}",
        specs=[spec],
        check_specs=[*soda_check_specs(datasets, key), quarantine_check_spec(key)],
        partitions_def=partitions_def if source.partitioned else None,
        backfill_policy=backfill_policy if source.partitioned else None,
        can_subset=True,
        # One writer per table at a time, queued by the run coordinator (dagster.yaml: pools
        # default_limit 1, run granularity); the write path's retries are the net for writers
        # outside the queue (rat materialize, scripts).
        pool=bronze_pool(source),
    )
    def _bronze(context: dg.AssetExecutionContext, lakehouse: LakehouseResource):
        settings = lakehouse.settings()
        catalog = lakehouse.catalog()
        conn = lakehouse.connect()
        days = sorted(context.partition_keys) if source.partitioned else None
        # Write-audit-publish: the write goes to the run's audit branch; readers' branch moves to
        # it below, once the blocking checks passed.
        audit = audit_branch(context.run.run_id) if settings.wap and source.write_audit_publish else None
        retry = RetryPolicy(attempts=settings.commit_retries)
        try:
            # All the run's days in one write: one Iceberg commit, however many days.
            load = load_bronze(
                conn, catalog, source, settings.landing, days, context.run.run_id,
                quarantine_root=settings.quarantine, max_file_bytes=settings.max_file_bytes,
                retry=retry, branch=audit or settings.branch, fork_from=settings.branch,
            )
        finally:
            conn.close()
        for q in load.quarantined:
            context.log.warning(f"quarantined {q.file}: {q.message}")
        if load.nulled:
            context.log.warning(f"{bronze_identifier(source)}: {load.nulled} value(s) that did not convert to their declared "
                                "type, or would have changed, were set to NULL (on_bad_value: null in sources.yml)")
        label = f"{days[0]}..{days[-1]} ({len(days)} days)" if days else "whole"
        context.log.info(
            f"{bronze_identifier(source)}[{label}]: {load.rows} rows from {len(load.files)} file(s), "
            f"snapshot {load.result.snapshot_id} (attempts: {load.result.attempts})"
        )
        if days is not None:
            requested = set(days)
            # The run's own partitions (a window also reloads days between them).
            add_partition_metadata(context, key, {
                day.day: partition_metadata(day.rows, files=len(day.files), quarantined_files=len(day.quarantined),
                                            **({"nulled_values": day.nulled} if source.on_bad_value == "null" else {}))
                for day in load.days if day.day in requested
            })
        identifier = bronze_identifier(source)
        rows = load.rows
        quarantined = list(load.quarantined)
        window = None
        if source.partitioned:  # audit exactly the landing days this run wrote
            window = Window(PARTITION_COLUMN, dt.date.fromisoformat(days[0]), dt.date.fromisoformat(days[-1]))
        skipped = nothing_to_check(rows, len(quarantined), window)
        outcomes = [] if skipped else audit_table(
            identifier, load.result.metadata_location, window=window, settings=settings,
            snapshot_id=load.result.snapshot_id, audit_branch=audit,
        )
        blocked = blocked_message(identifier, outcomes, held_on=audit)
        if blocked and audit:
            # Nothing is published: the checks say why, with the branch that holds the rows.
            held = audit_metadata(audit, load.result.snapshot_id)
            context.log.error(blocked)
            for outcome in outcomes:
                yield check_result(key, outcome, held)
            yield quarantine_result(key, quarantined)
            raise dg.Failure(description=blocked, metadata=held)
        published = None
        if audit:
            published = publish(catalog, identifier, audit, window=window, run_id=context.run.run_id,
                                target=settings.branch, retry=retry)
            context.log.info(f"{identifier}: published to {settings.branch} ({published.how}), "
                             f"snapshot {published.snapshot_id}")
        info = describe(catalog, identifier, context.run.run_id)
        metadata = snapshot_metadata(info)
        if published is not None:
            metadata["iceberg/published"] = dg.MetadataValue.text(published.how)
        metadata["dagster/row_count"] = dg.MetadataValue.int(rows)
        metadata["files"] = dg.MetadataValue.int(len(load.files))
        metadata["quarantined_files"] = dg.MetadataValue.int(len(quarantined))
        if source.on_bad_value == "null":
            metadata["nulled_values"] = dg.MetadataValue.int(load.nulled)
        if skipped:
            metadata["soda/skipped"] = dg.MetadataValue.text(skipped)
            context.log.info(f"{key.to_user_string()}: Soda checks skipped, {skipped}")
        yield dg.MaterializeResult(asset_key=key, metadata=scope_to_newest(context, key, metadata))
        for outcome in outcomes:
            yield check_result(key, outcome)
        yield quarantine_result(key, quarantined)

    return _bronze


def build_bronze(
    sources: dict[str, Source],
    partitions_def: dg.PartitionsDefinition,
    datasets: dict[str, DatasetChecks],
    partitions_per_run: int = 0,
) -> list:
    """Landing specs and bronze assets. A backfill loads each source's whole range in a run of its
    own (one commit per table), or ``partitions_per_run`` days per run if that is set (> 0).

    Dagster's backfill daemon puts assets with equal backfill policies and the same days into one
    run, whose steps the in-process executor runs one after another. Each source therefore gets a
    policy of its own value: a multi-run policy of ``WHOLE_RANGE`` (or ``partitions_per_run``) days
    plus the source's index, so the daemon makes one run per source and contiguous range (as a
    single-run policy does), and the run queue runs sources side by side while each source's pool
    keeps one writer per table."""
    size = partitions_per_run if partitions_per_run > 0 else WHOLE_RANGE
    return [landing_spec(s) for s in sources.values()] + [
        bronze_asset(s, partitions_def, datasets, dg.BackfillPolicy.multi_run(max_partitions_per_run=size + i))
        for i, s in enumerate(sources.values())
    ]


# Days in a "whole range" run: more than any history, so a contiguous range is never cut.
WHOLE_RANGE = 1_000_000


def freshness_checks(sources: dict[str, Source]) -> list[dg.AssetChecksDefinition]:
    """A last-update freshness check on each bronze asset whose source declares ``freshness``:
    ``error_after`` (ERROR) if given, else ``warn_after`` (WARN)."""
    checks = []
    for source in sources.values():
        if not source.freshness:
            continue
        level = "error_after" if "error_after" in source.freshness else "warn_after"
        rule = source.freshness[level]
        checks += dg.build_last_update_freshness_checks(
            assets=[dg.AssetKey([BRONZE, source.name])],
            lower_bound_delta=dt.timedelta(**{rule["period"] + "s": rule["count"]}),
            severity=dg.AssetCheckSeverity.ERROR if level == "error_after" else dg.AssetCheckSeverity.WARN,
        )
    return checks
