"""dbt models (silver, gold) as Dagster assets.

Naming rule, stated once: a dbt model's asset key is ``[schema, alias]`` (the schema is the
layer: see dbt_project/macros/generate_schema_name.sql) and a source's is ``[source_name, name]``,
so ``source('bronze', 'orders')`` is the Python asset ``bronze/orders`` with no special case.

Models with ``config.partition_by`` are daily-partitioned and run as one dbt invocation per
Dagster run over the run's window (``BackfillPolicy.single_run()``); the rest are rebuilt whole.
"""


import datetime as dt
import json
import warnings
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import dagster as dg
from dagster_dbt import DagsterDbtTranslator, DagsterDbtTranslatorSettings, DbtProject
from dagster_dbt.asset_utils import (
    DAGSTER_DBT_EXCLUDE_METADATA_KEY,
    DAGSTER_DBT_SELECT_METADATA_KEY,
    DBT_DEFAULT_EXCLUDE,
    DBT_DEFAULT_SELECTOR,
    build_dbt_specs,
)
from pyiceberg.catalog import Catalog

from ratatouille_assets.defs.checks import audit_metadata, check_result, soda_check_specs
from ratatouille_assets.defs.dbt_inprocess import dbt_build
from ratatouille_assets.defs.metadata import partition_metadata, snapshot_metadata
from ratatouille_assets.defs.partition_metadata import add_partition_metadata, scope_to_newest
from ratatouille_assets.defs.partitions import dbt_vars, window_days
from ratatouille_assets.defs.resources import LakehouseResource
from ratatouille_assets.ingest.sources import SourcesFile
from ratatouille_assets.lakehouse.dbt_plugin import (
    AUDIT_BRANCH_VAR,
    AUDIT_DIR_NAME,
    LANDING_DAY_COLUMN,
    REJECTED_SUFFIX,
    ROOT_RUN_VAR,
    read_writes,
)
from ratatouille_assets.lakehouse.tables import day_counts, describe
from ratatouille_assets.lakehouse.timetravel import partition_column
from ratatouille_assets.lakehouse.wap import audit_branch, is_audit_branch, publish
from ratatouille_assets.lakehouse.write import RetryPolicy, Window
from ratatouille_assets.project import manifest as dbt_manifest
from ratatouille_assets.project.models import Model, validate
from ratatouille_assets.quality.audit import blocked_message, read_audit, read_audits
from ratatouille_assets.quality.sodacl import DatasetChecks
from ratatouille_assets.quality.twins import ChecksDeclaredTwice, declared_twice
from ratatouille_assets.settings import Settings


def dbt_project(settings: Settings, sources: SourcesFile) -> DbtProject:
    """The dbt project, its generated sources synced with sources.yml and ``dbt parse`` run first if
    the manifest is missing or older than any project file (so edited models and sources show up on
    reload in ``dagster dev``; a built image never parses)."""
    dbt_manifest.prepare(sources, settings.dbt_project_dir)
    return DbtProject(project_dir=settings.dbt_project_dir, profiles_dir=settings.dbt_project_dir)


def is_partitioned(props: Mapping[str, Any]) -> bool:
    return bool((props.get("config") or {}).get("partition_by"))


class LayerTranslator(DagsterDbtTranslator):
    """Keys ``[layer, table]``, groups per layer, Iceberg as a kind, late-arrival partition mappings,
    and one automation condition for every model (see defs/automation.py)."""

    def __init__(
        self,
        *,
        automation_condition: dg.AutomationCondition | None = None,
        daily_automation_condition: dg.AutomationCondition | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self._automation_condition = automation_condition
        self._daily_automation_condition = daily_automation_condition or automation_condition

    def get_automation_condition(self, dbt_resource_props: Mapping[str, Any]) -> dg.AutomationCondition | None:
        if is_partitioned(dbt_resource_props):
            return self._daily_automation_condition
        return self._automation_condition

    def get_asset_key(self, dbt_resource_props: Mapping[str, Any]) -> dg.AssetKey:
        if dbt_resource_props["resource_type"] == "source":
            return dg.AssetKey([dbt_resource_props["source_name"], dbt_resource_props["name"]])
        name = dbt_resource_props.get("alias") or dbt_resource_props["name"]
        return dg.AssetKey([dbt_resource_props["schema"], name])

    def get_group_name(self, dbt_resource_props: Mapping[str, Any]) -> str | None:
        if dbt_resource_props["resource_type"] == "source":
            return dbt_resource_props["source_name"]
        return dbt_resource_props["schema"]

    def get_asset_spec(self, manifest: Mapping[str, Any], unique_id: str, project: DbtProject | None) -> dg.AssetSpec:
        spec = super().get_asset_spec(manifest, unique_id, project)
        return spec.merge_attributes(kinds={"iceberg"})

    def get_partition_mapping(
        self, dbt_resource_props: Mapping[str, Any], dbt_parent_resource_props: Mapping[str, Any]
    ) -> dg.PartitionMapping | None:
        """A partitioned model reading a source with ``meta.late_arrival_days: N`` needs landing days D..D+N."""
        late = int((dbt_parent_resource_props.get("meta") or {}).get("late_arrival_days") or 0)
        if is_partitioned(dbt_resource_props) and dbt_parent_resource_props.get("resource_type") == "source" and late:
            with warnings.catch_warnings():  # allow_nonexistent_upstream_partitions is "beta" in Dagster 1.13
                warnings.simplefilter("ignore", dg.BetaWarning)
                return dg.TimeWindowPartitionMapping(start_offset=0, end_offset=late, allow_nonexistent_upstream_partitions=True)
        return None


def _model_selection(manifest: Mapping[str, Any], partitioned: bool) -> str:
    fqns = [
        ".".join(node["fqn"])
        for node in manifest["nodes"].values()
        if node["resource_type"] == "model" and is_partitioned(node) == partitioned
        and (node.get("config") or {}).get("materialized") != "ephemeral"
    ]
    return " ".join(sorted(fqns))


# One dbt run at a time (dagster.yaml: pools default_limit 1, run granularity). Two automation runs
# over the same days would otherwise each read the other's inputs half-updated, and the last writer
# of a gold day could miss a change that landed in between (seen: a late order and its line,
# propagated by two overlapping runs, both missing from gold). Serialized, every run reads what the
# previous one committed.
DBT_POOL = "dbt"


def _output_name(context: dg.AssetExecutionContext, key: dg.AssetKey) -> str:
    return context.assets_def.get_output_name_for_asset_key(key)


class DbtRunConfig(dg.Config):
    """Launchpad options of the dbt assets."""

    full_refresh: bool = False
    """Rebuild the selected tables from this run alone (dbt --full-refresh): schema, partitioning
    and rows all come from the new result. For daily models the run must cover every partition."""


def _materialized(
    context: dg.AssetExecutionContext,
    catalog: Catalog,
    key: dg.AssetKey,
    models: Mapping[dg.AssetKey, Model],
    window: tuple[dt.date, dt.date] | None,
    skipped: str | None,
    writes: list[dict] = (),
    elsewhere: dict[str, dict] | None = None,
) -> dict[str, Any]:
    """The materialization's metadata: the Iceberg snapshot this run wrote, its rejected rows (and
    where they are), and for a daily model each partition's own row and rejected counts.

    ``elsewhere`` receives, per day, the figures of days the write replaced outside the run's window
    (a partitioned merge's changes can reach any day; ``writes``: what the invocation recorded):
    they get materializations of their own."""
    identifier = ".".join(key.path)
    run_id = context.run.run_id
    info = describe(catalog, identifier, run_id)
    metadata = snapshot_metadata(info)
    rejected_id = identifier + REJECTED_SUFFIX
    rejected = describe(catalog, rejected_id, run_id) if catalog.table_exists(rejected_id) else None
    if rejected is not None:
        metadata["rejected/table"] = dg.MetadataValue.text(rejected_id)
        metadata["rejected/metadata_location"] = dg.MetadataValue.path(rejected.metadata_location)
    if skipped:
        metadata["soda/skipped"] = dg.MetadataValue.text(skipped)
    model = models.get(key)
    if model is not None and model.partition_by and window is not None:
        days = Window(model.partition_by, *window)
        table = catalog.load_table(identifier)
        rows = day_counts(table, days, info.snapshot_id)
        rejects = None
        rejected_table = catalog.load_table(rejected_id) if rejected is not None else None
        # A merge's rejected rows are one table of every run's (not by day): counted in total only.
        if rejected_table is not None and partition_column(rejected_table) == model.partition_by:
            rejects = day_counts(rejected_table, Window(model.partition_by, *window, nulls_by=LANDING_DAY_COLUMN),
                                 rejected.snapshot_id)
        add_partition_metadata(context, key, {
            day.isoformat(): partition_metadata(count, rejects[day] if rejects is not None else None)
            for day, count in rows.items()
        })
        written = next((e["window"] for e in writes if e["table"] == identifier), None)
        outside = [d for d in (written.days() if written is not None else []) if not window[0] <= d <= window[1]]
        if outside and elsewhere is not None:
            counts = day_counts(table, Window.of_days(model.partition_by, outside), info.snapshot_id)
            elsewhere.update({day.isoformat(): {**partition_metadata(count), "iceberg/snapshot_id": metadata["iceberg/snapshot_id"]}
                              for day, count in counts.items()})
            metadata["merge/days_outside_window"] = dg.MetadataValue.int(len(outside))
    for name in ("inserted", "updated", "deleted", "kept", "days"):
        if (value := info.properties.get(f"ratatouille.merge.{name}")) is not None:
            metadata[f"merge/{name}"] = dg.MetadataValue.int(int(value))
    return metadata


def root_run_id(run: dg.DagsterRun) -> str:
    """The first run of a run's re-executions (the run itself when it is no re-execution): what
    makes an append once-only across them. Dagster sets it on the run and as its tag."""
    return run.root_run_id or run.get_root_run_id() or run.run_id


def _run_dbt(
    context: dg.AssetExecutionContext,
    lakehouse: LakehouseResource,
    dbt_vars_: dict[str, str],
    models: Mapping[dg.AssetKey, Model],
    extra_args: tuple[str, ...] = (),
    window: tuple[dt.date, dt.date] | None = None,
) -> Iterator[Any]:
    """One ``dbt build``; every model's materialization gets Iceberg metadata and its Soda results.

    Soda checks run inside dbt (the plugin's audit hook) right after each model is written, so a
    failing blocking check fails that model and dbt skips what depends on it; dbt's own tests run
    after their model as usual. A window that holds no rows (and rejected none) is not checked:
    its checks are reported skipped.

    Write-audit-publish (on unless ``RATATOUILLE_WAP=off``; not for a full refresh): every model
    is written to the run's audit branch, and later models of the invocation read their upstreams
    there, as the checks judged them. After the invocation, the models whose blocking checks (Soda
    and dbt tests) all passed are published in the order they were written (upstream first), and
    only those are reported materialized; a model that failed one keeps its rows on the audit
    branch, named in its check results, and main is unchanged. With it off, a model is written to
    main directly and is reported materialized even when a check then fails.
    """
    settings = lakehouse.settings()
    run_id = context.run.run_id
    variables = {"reporting_currency": settings.reporting_currency, **dbt_vars_}
    if settings.wap and "--full-refresh" not in extra_args:
        variables[AUDIT_BRANCH_VAR] = audit_branch(run_id)
    invocation = dbt_build(context, ["--vars", json.dumps(variables), *extra_args])
    catalog = lakehouse.catalog()
    reported: set[dg.AssetKey] = set()
    audits_path = Path(invocation.target_path) / AUDIT_DIR_NAME

    # Every event waits until the invocation's tables are published: a materialization is reported
    # for what readers can see, and a check result after the materialization it judged.
    events = list(invocation.stream())
    audits = read_audits(audits_path)
    failed_tests = {
        ".".join(e.asset_key.path) for e in events
        if isinstance(e, dg.AssetCheckResult) and not e.passed and e.severity == dg.AssetCheckSeverity.ERROR
    }
    blocked = {identifier for identifier, audit in audits.items() if blocked_message(identifier, audit.outcomes)} | failed_tests
    published, held = _publish(context, catalog, invocation.target_path, blocked, settings.commit_retries)
    writes = read_writes(invocation.target_path)

    def materialized(key: dg.AssetKey, event: dg.Output | None) -> Iterator[Any]:
        identifier = ".".join(key.path)
        audit = read_audit(audits_path, identifier)
        if identifier in held:  # nothing published: no materialization, the checks say where the rows are
            for outcome in audit.outcomes:
                yield check_result(key, outcome, held[identifier])
            reported.add(key)
            return
        elsewhere: dict[str, dict] = {}
        metadata = _materialized(context, catalog, key, models, window, audit.skipped, writes, elsewhere)
        if identifier in published:
            metadata["iceberg/published"] = dg.MetadataValue.text(published[identifier])
        if audit.skipped:
            context.log.info(f"{key.to_user_string()}: Soda checks skipped, {audit.skipped}")
        if event is None:
            yield dg.Output(None, output_name=_output_name(context, key), metadata=scope_to_newest(context, key, metadata))
        else:
            yield event.with_metadata(scope_to_newest(context, key, {**(event.metadata or {}), **metadata}))
        partitions = context.assets_def.partitions_def
        for day, figures in sorted(elsewhere.items()):  # days a merge rewrote outside the run's window
            if partitions is not None and partitions.has_partition_key(day):  # not before partitions.start
                yield dg.AssetMaterialization(asset_key=key, partition=day, metadata=figures,
                                              description="rewritten by a merge of a run over other days")
        reported.add(key)
        for outcome in audit.outcomes:
            yield check_result(key, outcome)

    for event in events:
        if isinstance(event, dg.Output):
            yield from materialized(context.asset_key_for_output(event.output_name), event)
        elif isinstance(event, dg.AssetCheckResult) and ".".join(event.asset_key.path) in held:
            yield event.with_metadata({**(event.metadata or {}), **held[".".join(event.asset_key.path)]})
        else:
            yield event

    # Models whose blocking Soda checks failed: written (to main, or held on the audit branch), audited,
    # and the reason dbt stopped.
    for identifier in audits:
        key = dg.AssetKey(identifier.split("."))
        if key in reported or key not in context.selected_asset_keys:
            continue
        yield from materialized(key, None)

    if not invocation.is_successful():
        blocks = [m for m in (blocked_message(identifier, audit.outcomes, held_on=audit_branch(run_id) if identifier in held else None)
                              for identifier, audit in audits.items()) if m]
        failed = [f for f in invocation.failures if not any(m in f for m in blocks)]
        held_tests = [f"{identifier}: a blocking dbt test failed; nothing was published, the rows are held on audit branch "
                      f"{audit_branch(run_id)!r}" for identifier in sorted(failed_tests & set(held))]
        reasons = [*blocks, *held_tests, *failed]
        raise dg.Failure(
            description="dbt build failed" + (":\n" + "\n".join(reasons) if reasons else ""),
            metadata={"dbt_log": dg.MetadataValue.path(str(Path(invocation.target_path) / "dbt.log"))},
        ) from invocation.error


def _publish(
    context: dg.AssetExecutionContext, catalog: Catalog, target_path: str | Path, blocked: set[str], retries: int,
) -> tuple[dict[str, str], dict[str, dict]]:
    """Publish the invocation's audited tables in write order (upstream first), but not those a
    blocking check failed on; a table that cannot be published holds the ones written after it
    (they were computed from it). Returns (table -> how it was published, table -> where it is held)."""
    published: dict[str, str] = {}
    held: dict[str, dict] = {}
    stopped: str | None = None
    for entry in read_writes(target_path):
        table, branch = entry["table"], entry["branch"]
        if not is_audit_branch(branch):
            continue
        model = table.removesuffix(REJECTED_SUFFIX)
        if model in blocked or stopped:
            held[table] = audit_metadata(branch, entry["snapshot_id"])
            continue
        try:
            result = publish(catalog, table, branch, window=entry["window"], run_id=context.run.run_id,
                             target=entry["target"], retry=RetryPolicy(attempts=retries))
        except Exception as exc:  # noqa: BLE001 - named in the log; the step fails below
            context.log.error(f"{table}: could not publish audit branch {branch!r}: {exc}")
            stopped = table
            held[table] = audit_metadata(branch, entry["snapshot_id"])
            continue
        published[table] = result.how
        context.log.info(f"{table}: published to {entry['target']} ({result.how}), snapshot {result.snapshot_id}")
    if stopped:
        raise dg.Failure(description=f"{stopped}: publishing failed; it and the tables written after it stay on their "
                                     "audit branch (see the log), main is unchanged for them")
    return published, held


def checked_dbt_assets(
    *,
    manifest: Mapping[str, Any],
    project: DbtProject,
    select: str,
    name: str,
    translator: DagsterDbtTranslator,
    datasets: dict[str, DatasetChecks],
    partitions_def: dg.PartitionsDefinition | None = None,
    backfill_policy: dg.BackfillPolicy | None = None,
):
    """``@dbt_assets`` plus one asset check per Soda check of each model.

    Same construction as dagster-dbt's decorator (specs from the manifest, the selection as op
    tags the resource reads back), with the Soda check specs added to the same op so their results
    come from the step that writes the data.
    """
    specs, dbt_check_specs = build_dbt_specs(
        translator=translator, manifest=manifest, select=select, exclude=DBT_DEFAULT_EXCLUDE,
        selector=DBT_DEFAULT_SELECTOR, io_manager_key=None, project=project,
    )
    soda_specs = [c for spec in specs for c in soda_check_specs(datasets, spec.key)]
    return dg.multi_asset(
        name=name,
        specs=specs,
        check_specs=[*dbt_check_specs, *soda_specs],
        can_subset=True,
        partitions_def=partitions_def,
        backfill_policy=backfill_policy,
        op_tags={DAGSTER_DBT_SELECT_METADATA_KEY: select, DAGSTER_DBT_EXCLUDE_METADATA_KEY: DBT_DEFAULT_EXCLUDE},
        allow_arbitrary_check_specs=True,
        pool=DBT_POOL,
    )


_LOGGED: set[str] = set()


def build_dbt_assets(
    project: DbtProject,
    sources: SourcesFile,
    partitions_def: dg.TimeWindowPartitionsDefinition,
    datasets: dict[str, DatasetChecks],
    automation: Callable[[dg.AssetSelection | None], dg.AutomationCondition] | None = None,
) -> list[dg.AssetsDefinition]:
    """The dbt models as two multi-assets (daily and whole), after checking the model contract
    (ratatouille_assets/project/models.py) so a model that would lose data never loads.

    ``automation(ignore)`` gives the automation condition; daily models ignore the unpartitioned
    models they depend on (dimensions, for their checks) so a dimension update does not recompute
    every recent day."""
    manifest = json.loads(Path(project.manifest_path).read_text())
    models = {dg.AssetKey([m.layer, m.table]): m for m in validate(manifest, sources, Path(project.project_dir))}
    for message in declared_twice(manifest, datasets, Path(project.project_dir)):
        # Dagster's logger is what `rat validate` and the code server print (once per process);
        # the warning is for code that builds the definitions.
        if message not in _LOGGED:
            _LOGGED.add(message)
            dg.get_dagster_logger().warning(f"{ChecksDeclaredTwice.__name__}: {message}")
        warnings.warn(message, ChecksDeclaredTwice, stacklevel=1)
    unpartitioned = dg.AssetSelection.assets(*[k for k, m in models.items() if not m.partition_by])
    translator = LayerTranslator(
        settings=DagsterDbtTranslatorSettings(enable_asset_checks=True),
        automation_condition=automation(None) if automation else None,
        daily_automation_condition=automation(unpartitioned) if automation else None,
    )
    assets = []
    daily = _model_selection(manifest, partitioned=True)
    if daily:
        @checked_dbt_assets(
            manifest=manifest,
            project=project,
            select=daily,
            name="dbt_daily",
            translator=translator,
            datasets=datasets,
            partitions_def=partitions_def,
            backfill_policy=dg.BackfillPolicy.single_run(),
        )
        def dbt_daily(context: dg.AssetExecutionContext, lakehouse: LakehouseResource, config: DbtRunConfig):
            """Daily models: the run's partition window becomes ``--vars {min_date, max_date}``."""
            window = context.partition_time_window
            keys = context.partition_keys
            label = keys[0] if len(keys) == 1 else f"{keys[0]}...{keys[-1]}"
            extra: tuple[str, ...] = ()
            if config.full_refresh:
                everything = partitions_def.get_partition_keys(dynamic_partitions_store=context.instance)
                if keys != everything:
                    raise dg.Failure(
                        f"full_refresh rebuilds whole tables, so it must run over every partition "
                        f"({everything[0]}..{everything[-1]}), not {label}: select all partitions (Materialize -> "
                        "all, or a backfill of the whole range), or drop full_refresh to replace just these days."
                    )
                extra = ("--full-refresh",)
            variables = dbt_vars(window.start, window.end, run_id=context.run.run_id, partition_key=label)
            variables[ROOT_RUN_VAR] = root_run_id(context.run)
            # A model without its own partition_granularity gets the project's (sources.yml: partitions.granularity).
            variables["partition_granularity"] = sources.granularity
            yield from _run_dbt(context, lakehouse, variables, models, extra, window=_days(window))

        assets.append(dbt_daily)

    whole = _model_selection(manifest, partitioned=False)
    if whole:
        @checked_dbt_assets(
            manifest=manifest,
            project=project,
            select=whole,
            name="dbt_current",
            translator=translator,
            datasets=datasets,
        )
        def dbt_current(context: dg.AssetExecutionContext, lakehouse: LakehouseResource, config: DbtRunConfig):
            """Unpartitioned models (dimensions), rebuilt whole from all of bronze.

            Tests that also read a daily model (facts -> dims relationships) are checks of that model
            and run with it, after the dimensions: ``cautious`` keeps them out of this invocation.
            """
            extra = ("--indirect-selection", "cautious", *(("--full-refresh",) if config.full_refresh else ()))
            variables = {"dagster_run_id": context.run.run_id, ROOT_RUN_VAR: root_run_id(context.run)}
            yield from _run_dbt(context, lakehouse, variables, models, extra)

        assets.append(dbt_current)
    return assets


def _days(window: dg.TimeWindow) -> tuple[dt.date, dt.date]:
    return window_days(window.start, window.end)
