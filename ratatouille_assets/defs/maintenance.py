"""Table maintenance in Dagster: a ``health`` check on every table asset, the ``maintenance`` job
that maintains tables, and its daily schedule.

The ``maintenance`` job (``lakehouse.maintenance.maintain`` per table: audit branches past
retention, compaction, snapshot expiry and the files it frees, the orphan sweep) is an op job, not
an asset job, so materializing an asset never runs it. After each table it records that table's
``health`` check: passed when every figure is within bounds, a WARN (never blocking) naming what
is not, with the figures and what was done as metadata, run by run on the asset's checks tab. The
same check also runs read-only on its own (Checks -> Execute) and with every materialization
(a few tens of milliseconds: it reads the table's metadata and lists its folder). A table's
companion of rejected rows (``<table>__rejected``) is maintained with it.

Run it from the launchpad (``tables``: some tables, or empty for all), on the schedule, or with
``rat maintain [table ...]``, which runs the same job.
"""

# No "from __future__ import annotations": Dagster reads the check's resource types from its signature.

from collections.abc import Iterable

import dagster as dg
from pydantic import Field
from pyiceberg.exceptions import NoSuchTableError

from ratatouille_assets.defs.resources import LakehouseResource
from ratatouille_assets.defs.rollback import OPERATION_TAG
from ratatouille_assets.lakehouse.errors import LakehouseError
from ratatouille_assets.lakehouse.maintenance import Health, MaintenanceResult, Policy, health, maintain
from ratatouille_assets.lakehouse.write import REJECTED_SUFFIX
from ratatouille_assets.settings import Settings

CHECK_NAME = "health"
JOB_NAME = "maintenance"
OP_NAME = "maintain_tables"
SCHEDULE_NAME = "daily_maintenance"


def identifier_of(key: dg.AssetKey) -> str:
    return ".".join(key.path)


def health_checks(keys: Iterable[dg.AssetKey]) -> list[dg.AssetChecksDefinition]:
    """One multi-check over every table (subsettable: the UI runs one table's alone)."""
    keys = sorted(keys, key=lambda k: k.path)
    if not keys:
        return []
    specs = [
        dg.AssetCheckSpec(
            CHECK_NAME, asset=key, blocking=False,
            description="The table's health: snapshots, data files and small-file ratio per partition, orphan "
                        "bytes, metadata size. Warns when one is out of bounds; the maintenance job fixes them.",
        )
        for key in keys
    ]

    @dg.multi_asset_check(specs=specs, can_subset=True, name="table_health")
    def table_health(context: dg.AssetCheckExecutionContext, lakehouse: LakehouseResource) -> Iterable[dg.AssetCheckResult]:
        catalog = lakehouse.catalog()
        settings = lakehouse.settings()
        policy = Policy.from_settings(settings)
        for check_key in sorted(context.selected_asset_check_keys, key=lambda k: k.asset_key.path):
            identifier = identifier_of(check_key.asset_key)
            try:
                figures = health(catalog, identifier, policy, settings=settings)
            except NoSuchTableError:
                yield not_yet(check_key.asset_key, identifier)
                continue
            problems = figures.problems(policy)
            yield dg.AssetCheckResult(
                asset_key=check_key.asset_key, check_name=CHECK_NAME, passed=not problems,
                severity=dg.AssetCheckSeverity.WARN, metadata=health_metadata(figures),
                description="; ".join(problems) if problems else "within bounds")

    return [table_health]


def not_yet(key: dg.AssetKey, identifier: str) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(asset_key=key, check_name=CHECK_NAME, passed=True,
                               description=f"{identifier} has not been materialized yet: nothing to maintain")


class MaintenanceConfig(dg.Config):
    tables: list[str] = Field(default_factory=list,
                              description="tables to maintain (layer.table or layer/table); empty: every table")


def build_maintenance_job(keys: Iterable[dg.AssetKey]) -> dg.JobDefinition:
    """The job over the tables of ``keys`` (the project's table assets)."""
    known = {identifier_of(k): k for k in keys}

    @dg.op(name=OP_NAME, tags={"kind": "iceberg"})
    def maintain_tables(context: dg.OpExecutionContext, config: MaintenanceConfig, lakehouse: LakehouseResource) -> str:
        catalog = lakehouse.catalog()
        settings = lakehouse.settings()
        policy = Policy.from_settings(settings)
        if settings.branch != "main":
            raise dg.Failure(f"dev mode (RATATOUILLE_BRANCH={settings.branch}) never writes main, and maintenance "
                             "commits to main: run it without RATATOUILLE_BRANCH")
        chosen = [t.strip().replace("/", ".") for t in config.tables] or sorted(known)
        unknown = [t for t in chosen if t not in known]
        if unknown:
            raise dg.Failure(f"not a table of this project: {', '.join(unknown)} (tables: {', '.join(sorted(known))})")
        context.log.info(f"policy: {policy.describe()}")
        failed = []
        for identifier in chosen:
            key = known[identifier]
            try:
                result = maintain(catalog, identifier, policy, run_id=context.run.run_id, settings=settings)
                companion = identifier + REJECTED_SUFFIX
                if catalog.table_exists(companion):
                    done = maintain(catalog, companion, policy, run_id=context.run.run_id, settings=settings)
                    context.log.info(f"{companion}: {done.describe()}")
            except NoSuchTableError:
                context.log_event(evaluation(not_yet(key, identifier)))
                continue
            except LakehouseError as exc:
                # Said on this table's check; the other tables are still maintained, and the run fails.
                context.log.error(f"{identifier}: {exc}")
                failed.append(identifier)
                context.log_event(dg.AssetCheckEvaluation(
                    asset_key=key, check_name=CHECK_NAME, passed=False, severity=dg.AssetCheckSeverity.ERROR,
                    description=f"maintenance could not run: {exc}"))
                continue
            context.log.info(f"{identifier}: {result.describe()}")
            context.log_event(evaluation(check_result(key, result, policy)))
        if failed:
            raise dg.Failure(f"{len(failed)} table(s) could not be maintained: {', '.join(failed)} (see their health checks)")
        return f"{len(chosen)} table(s) maintained"

    @dg.job(name=JOB_NAME, tags={OPERATION_TAG: "maintenance"},
            description="Maintain tables: compact small files, expire snapshots by policy, delete unreferenced and "
                        "orphan files; record each table's health check")
    def maintenance_job() -> None:
        maintain_tables()

    return maintenance_job


def evaluation(result: dg.AssetCheckResult) -> dg.AssetCheckEvaluation:
    return dg.AssetCheckEvaluation(
        asset_key=result.asset_key, check_name=result.check_name, passed=result.passed,
        severity=result.severity, description=result.description, metadata=result.metadata)


def check_result(key: dg.AssetKey, result: MaintenanceResult, policy: Policy) -> dg.AssetCheckResult:
    problems = result.health.problems(policy)
    return dg.AssetCheckResult(
        asset_key=key,
        check_name=CHECK_NAME,
        passed=not problems,
        severity=dg.AssetCheckSeverity.WARN,
        description="; ".join(problems) if problems else result.describe(),
        metadata={**health_metadata(result.health), **done_metadata(result)},
    )
def health_metadata(health: Health) -> dict[str, dg.MetadataValue]:
    return {
        "health/snapshots": dg.MetadataValue.int(health.snapshots),
        "health/data_files": dg.MetadataValue.int(health.data_files),
        "health/partitions": dg.MetadataValue.int(health.partitions),
        "health/small_file_ratio": dg.MetadataValue.float(round(health.small_file_ratio, 4)),
        "health/max_files_per_partition": dg.MetadataValue.int(health.max_files_per_partition),
        "health/busiest_partition": dg.MetadataValue.text(health.busiest_partition or "(unpartitioned)"),
        "health/orphan_bytes": dg.MetadataValue.int(health.orphan_bytes),
        "health/unreferenced_in_window": dg.MetadataValue.int(health.young_unreferenced),
        "health/metadata_bytes": dg.MetadataValue.int(health.metadata_bytes),
        "health/data_bytes": dg.MetadataValue.int(health.data_bytes),
    }


def done_metadata(result: MaintenanceResult) -> dict[str, dg.MetadataValue]:
    return {
        "maintenance/expired_snapshots": dg.MetadataValue.int(len(result.expired.expired)),
        "maintenance/deleted_files": dg.MetadataValue.int(result.expired.deleted_files),
        "maintenance/deleted_bytes": dg.MetadataValue.int(result.expired.deleted_bytes),
        "maintenance/compacted_files": dg.MetadataValue.int(sum(len(g.inputs) for g in result.compacted.rewritten)),
        "maintenance/compacted_into": dg.MetadataValue.int(result.compacted.files_added),
        "maintenance/compaction_skipped": dg.MetadataValue.int(len(result.compacted.skipped)),
        "maintenance/orphans_swept": dg.MetadataValue.int(len(result.swept.orphans)),
        "maintenance/orphan_bytes_swept": dg.MetadataValue.int(result.swept.orphan_bytes),
        "maintenance/audit_branches_removed": dg.MetadataValue.int(len(result.audit_branches)),
    }


def maintenance_schedule(job, settings: Settings) -> dg.ScheduleDefinition:
    return dg.ScheduleDefinition(
        name=SCHEDULE_NAME,
        job=job,
        cron_schedule=f"0 {settings.maintenance_hour} * * *",
        execution_timezone=settings.timezone,
        default_status=(dg.DefaultScheduleStatus.RUNNING if settings.maintenance_enabled and settings.branch == "main"
                        else dg.DefaultScheduleStatus.STOPPED),
        description="Every table maintained once a day (RATATOUILLE_MAINTENANCE_HOUR; off with RATATOUILLE_MAINTENANCE_ENABLED=false)",
    )
