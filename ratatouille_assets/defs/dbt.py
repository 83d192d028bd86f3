"""dbt models (silver, gold) as Dagster assets.

Naming rule, stated once: a dbt model's asset key is ``[schema, alias]`` (the schema is the
layer: see dbt_project/macros/generate_schema_name.sql) and a source's is ``[source_name, name]``,
so ``source('bronze', 'orders')`` is the Python asset ``bronze/orders`` with no special case.

Models with ``config.partition_by`` are daily-partitioned and run as one dbt invocation per
Dagster run over the run's window (``BackfillPolicy.single_run()``); the rest are rebuilt whole.
"""


import json
import subprocess
import sys
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

from ratatouille_assets.defs.dbt_inprocess import dbt_build
from ratatouille_assets.defs.checks import check_result, soda_check_specs
from ratatouille_assets.defs.metadata import snapshot_metadata
from ratatouille_assets.defs.partitions import dbt_vars
from ratatouille_assets.defs.resources import LakehouseResource
from ratatouille_assets.lakehouse.dbt_plugin import AUDIT_DIR_NAME
from ratatouille_assets.lakehouse.tables import describe
from ratatouille_assets.quality.audit import blocked_message, read_audit, read_audits
from ratatouille_assets.quality.sodacl import DatasetChecks
from ratatouille_assets.settings import Settings


def dbt_executable() -> str:
    """The dbt of this interpreter's environment, even when the venv is not on PATH."""
    beside = Path(sys.executable).parent / "dbt"
    return str(beside) if beside.exists() else "dbt"


def dbt_project(settings: Settings) -> DbtProject:
    """The dbt project, with ``dbt parse`` run first if the manifest is missing or older than any
    project file (so edited models show up on reload in ``dagster dev``; a built image never parses)."""
    project = DbtProject(project_dir=settings.dbt_project_dir, profiles_dir=settings.dbt_project_dir)
    if manifest_is_stale(project):
        parse_manifest(project)
    return project


def manifest_is_stale(project: DbtProject) -> bool:
    manifest = Path(project.manifest_path)
    if not manifest.exists():
        return True
    built = manifest.stat().st_mtime
    root = Path(project.project_dir)
    sources = [root / "dbt_project.yml", Path(project.profiles_dir) / "profiles.yml"]
    for folder in ("models", "macros", "tests", "seeds", "snapshots"):
        sources += [p for p in (root / folder).rglob("*") if p.is_file()]
    return any(p.exists() and p.stat().st_mtime > built for p in sources)


def parse_manifest(project: DbtProject) -> None:
    result = subprocess.run(
        [dbt_executable(), "parse", "--quiet", "--profiles-dir", str(project.profiles_dir)],
        cwd=project.project_dir, capture_output=True, text=True,
    )
    if result.returncode != 0:
        raise RuntimeError(f"dbt parse failed in {project.project_dir}:\n{result.stdout}{result.stderr}")


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
        late = int((dbt_parent_resource_props.get("meta") or {}).get("late_arrival_days", 0))
        if is_partitioned(dbt_resource_props) and dbt_parent_resource_props.get("resource_type") == "source" and late:
            return dg.TimeWindowPartitionMapping(start_offset=0, end_offset=late, allow_nonexistent_upstream_partitions=True)
        return None


def _model_selection(manifest: Mapping[str, Any], partitioned: bool) -> str:
    fqns = [
        ".".join(node["fqn"])
        for node in manifest["nodes"].values()
        if node["resource_type"] == "model" and is_partitioned(node) == partitioned
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


def _run_dbt(
    context: dg.AssetExecutionContext,
    lakehouse: LakehouseResource,
    dbt_vars_: dict[str, str],
    extra_args: tuple[str, ...] = (),
) -> Iterator[Any]:
    """One ``dbt build``; every model's materialization gets Iceberg metadata and its Soda results.

    Soda checks run inside dbt (the plugin's audit hook) right after each model is written, so a
    failing blocking check fails that model and dbt skips what depends on it. The table was
    written, so it is still reported as materialized, with the failed check; the step then fails.
    """
    settings = lakehouse.settings()
    variables = {"reporting_currency": settings.reporting_currency, **dbt_vars_}
    invocation = dbt_build(context, ["--vars", json.dumps(variables), *extra_args])
    catalog = lakehouse.catalog()
    run_id = context.run.run_id
    reported: set[dg.AssetKey] = set()

    def materialized(key: dg.AssetKey, event: dg.Output | None) -> Iterator[Any]:
        info = describe(catalog, ".".join(key.path), run_id)
        metadata = snapshot_metadata(info)
        if event is None:
            yield dg.Output(None, output_name=_output_name(context, key), metadata=metadata)
        else:
            yield event.with_metadata({**(event.metadata or {}), **metadata})
        reported.add(key)

    audits_path = Path(invocation.target_path) / AUDIT_DIR_NAME
    for event in invocation.stream():
        if isinstance(event, dg.Output):
            key = context.asset_key_for_output(event.output_name)
            yield from materialized(key, event)
            for outcome in read_audit(audits_path, ".".join(key.path)):
                yield check_result(key, outcome)
        else:
            yield event

    # Models whose blocking checks failed: written, audited, and the reason dbt stopped.
    audits = read_audits(audits_path)
    for identifier, outcomes in audits.items():
        key = dg.AssetKey(identifier.split("."))
        if key in reported or key not in context.selected_asset_keys:
            continue
        yield from materialized(key, None)
        for outcome in outcomes:
            yield check_result(key, outcome)

    if not invocation.is_successful():
        blocked = [
            blocked_message(identifier, outcomes) for identifier, outcomes in audits.items()
        ]
        raise dg.Failure(
            description="dbt build failed" + (": " + " | ".join(m for m in blocked if m) if any(blocked) else ""),
            metadata={"dbt_log": dg.MetadataValue.path(str(Path(invocation.target_path) / "dbt.log"))},
        ) from invocation.error


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


def build_dbt_assets(
    project: DbtProject,
    partitions_def: dg.PartitionsDefinition,
    datasets: dict[str, DatasetChecks],
    automation: Callable[[dg.AssetSelection | None], dg.AutomationCondition] | None = None,
) -> list[dg.AssetsDefinition]:
    """``automation(ignore)`` gives the automation condition; daily models ignore the unpartitioned
    models they depend on (dimensions, for their checks) so a dimension update does not recompute
    every recent day."""
    manifest = json.loads(Path(project.manifest_path).read_text())
    unpartitioned = dg.AssetSelection.assets(*[
        dg.AssetKey([node["schema"], node.get("alias") or node["name"]])
        for node in manifest["nodes"].values()
        if node["resource_type"] == "model" and not is_partitioned(node)
    ])
    translator = LayerTranslator(
        settings=DagsterDbtTranslatorSettings(enable_asset_checks=True),
        automation_condition=automation(None) if automation else None,
        daily_automation_condition=automation(unpartitioned) if automation else None,
    )

    @checked_dbt_assets(
        manifest=manifest,
        project=project,
        select=_model_selection(manifest, partitioned=True),
        name="dbt_daily",
        translator=translator,
        datasets=datasets,
        partitions_def=partitions_def,
        backfill_policy=dg.BackfillPolicy.single_run(),
    )
    def dbt_daily(context: dg.AssetExecutionContext, lakehouse: LakehouseResource):
        """Daily models: the run's partition window becomes ``--vars {min_date, max_date}``."""
        window = context.partition_time_window
        keys = context.partition_keys
        label = keys[0] if len(keys) == 1 else f"{keys[0]}...{keys[-1]}"
        yield from _run_dbt(
            context, lakehouse, dbt_vars(window.start, window.end, run_id=context.run.run_id, partition_key=label)
        )

    @checked_dbt_assets(
        manifest=manifest,
        project=project,
        select=_model_selection(manifest, partitioned=False),
        name="dbt_current",
        translator=translator,
        datasets=datasets,
    )
    def dbt_current(context: dg.AssetExecutionContext, lakehouse: LakehouseResource):
        """Unpartitioned models (dimensions), rebuilt whole from all of bronze.

        Tests that also read a daily model (facts -> dims relationships) are checks of that model
        and run with it, after the dimensions: ``cautious`` keeps them out of this invocation.
        """
        yield from _run_dbt(
            context, lakehouse, {"dagster_run_id": context.run.run_id}, ("--indirect-selection", "cautious")
        )

    return [dbt_daily, dbt_current]
