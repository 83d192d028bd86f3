"""The one ``Definitions`` of the code location (workspace.yaml points here).

Built lazily by ``@dg.definitions``: nothing is read or parsed at import time.
"""

from __future__ import annotations

import functools
import warnings

import dagster as dg

from ratatouille_assets.defs.automation import (
    automation_sensor,
    daily_schedule,
    failure_sensor,
    gold_freshness,
    landing_checks,
    landing_sensor,
    propagate,
)
from ratatouille_assets.defs.bronze import build_bronze, freshness_checks
from ratatouille_assets.defs.checks import unknown_datasets
from ratatouille_assets.defs.dbt import build_dbt_assets, dbt_project
from ratatouille_assets.defs.executor import threaded_executor
from ratatouille_assets.defs.maintenance import build_maintenance_job, health_checks, maintenance_schedule
from ratatouille_assets.defs.partitions import daily_partitions
from ratatouille_assets.defs.resources import LakehouseResource
from ratatouille_assets.defs.rollback import build_rollback_job
from ratatouille_assets.ingest.landing import check_landing_root
from ratatouille_assets.ingest.sources import load_sources_file
from ratatouille_assets.layers import LAYERS
from ratatouille_assets.lakehouse.write import use_system_memory_pool
from ratatouille_assets.quality.sodacl import SodaConfigError, load_checks
from ratatouille_assets.settings import Settings, get_settings

def run_executor(settings: Settings) -> dg.ExecutorDefinition:
    """How the steps of a run execute: ``in_process`` (the default, one process per run) or
    ``k8s_job`` (each step its own Kubernetes Job, on a cluster whose instance uses the
    K8sRunLauncher; the Helm chart's ``executor.type``), at most ``executor_max_concurrent`` step
    pods of one run at once. In process, ``step_threads`` steps run at once on threads of the run
    process (``defs/executor.py``); 1 is Dagster's own in-process executor, one step after another."""
    if settings.executor == "k8s_job":
        from dagster_k8s import k8s_job_executor

        return k8s_job_executor.configured({"max_concurrent": settings.executor_max_concurrent}, name="k8s_job_executor")
    if settings.step_threads > 1:
        return threaded_executor(settings.step_threads)
    return dg.in_process_executor


def build_definitions() -> dg.Definitions:
    use_system_memory_pool()  # every process that runs assets builds the definitions first
    settings = get_settings()
    check_landing_root(settings)  # a mistyped RATATOUILLE_LANDING fails here, not as an empty zone
    sources_file = load_sources_file(settings.sources_file)
    sources = sources_file.sources
    partitions = daily_partitions(sources_file.start, settings.timezone)
    project = dbt_project(settings, sources_file)
    datasets = load_checks(settings.soda_dir)
    # With RATATOUILLE_BRONZE_PARTITIONS_PER_RUN set, the job mixes bronze's batches of days with
    # dbt's single run on purpose; Dagster runs a range of it with the smaller batches, and says so.
    warnings.filterwarnings("ignore", message="Asset job all_layers materializes assets with varying BackfillPolicies")
    everything = dg.define_asset_job(
        "all_layers",
        selection=dg.AssetSelection.groups(*LAYERS),
        description="bronze -> silver -> gold for the selected partition(s)",
    )
    assets = [
        *build_bronze(sources, partitions, datasets, settings.bronze_partitions_per_run),
        *build_dbt_assets(
            project, sources_file, partitions, datasets, functools.partial(propagate, settings.automation_lookback_days)
        ),
    ]
    keys = {key for a in assets for key in (a.keys if isinstance(a, dg.AssetsDefinition) else [a.key])}
    orphans = unknown_datasets(datasets, keys)
    if orphans:
        raise SodaConfigError("SodaCL files for datasets that are not assets: " + ", ".join(orphans))
    # Freshness is declared per source (sources.yml): bronze must have been loaded within it, and
    # each daily gold model downstream of such a source must have its day by the deadline.
    fresh = [dg.AssetKey(["bronze", name]) for name, s in sources.items() if s.freshness]
    materializable = [a for a in assets if isinstance(a, dg.AssetsDefinition)]
    downstream = dg.AssetSelection.assets(*fresh).downstream().resolve(materializable) if fresh else set()
    gold_daily = [k for a in materializable if a.partitions_def for k in a.keys if k.path[0] == "gold" and k in downstream]
    gold_checks, freshness_sensor = gold_freshness(settings, gold_daily)
    table_keys = [k for a in materializable for k in a.keys]
    upkeep_job = build_maintenance_job(table_keys)
    sensors = [landing_sensor(sources, partitions, settings), automation_sensor(settings), failure_sensor(settings)]
    if freshness_sensor is not None:
        sensors.append(freshness_sensor)
    return dg.Definitions(
        assets=assets,
        asset_checks=[*gold_checks, *freshness_checks(sources), *landing_checks(sources, sources_file.start, settings),
                      *health_checks(table_keys)],
        jobs=[everything, build_rollback_job({k: a.partitions_def for a in materializable for k in a.keys}), upkeep_job],
        # A project with no daily asset yet (only reference sources, or none) has no day to schedule.
        schedules=[*([daily_schedule(everything, settings)] if any(a.partitions_def for a in materializable) else []),
                   maintenance_schedule(upkeep_job, settings)],
        sensors=sensors,
        resources={"lakehouse": LakehouseResource()},
        # One process per run: a step subprocess re-imports Dagster, dbt and the code location
        # (~7 s each on 2 cores), which dominated small runs. Parallelism comes from running
        # several runs at once (backfills, dagster.yaml's run queue), and DuckDB's own threads.
        # On Kubernetes, RATATOUILLE_EXECUTOR=k8s_job fans the steps out as pods instead.
        executor=run_executor(settings),
    )


_PREBUILT: list[dg.Definitions] = []


def prebuild() -> dg.Definitions:
    """Build the definitions once for this process: the warm run worker (``defs/warm.py``) does,
    before it forks a process per run, so a run finds them built."""
    if not _PREBUILT:
        _PREBUILT.append(build_definitions())
    return _PREBUILT[0]


@dg.definitions
def defs() -> dg.Definitions:
    return _PREBUILT[0] if _PREBUILT else build_definitions()
