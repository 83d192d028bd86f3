"""The dbt model contract, checked when the definitions load (before anything runs).

What a model may be, so that nothing it computes is silently lost:

- **a layer**: its schema is ``silver`` or ``gold``, from ``config(schema=...)`` or the first folder
  of its path named after a layer (``models/gold/x.sql``, ``models/example/silver/y.sql``); the
  asset key is ``[layer, table]``.
- **an Iceberg table** (``materialized='iceberg'``, the project default) or ``ephemeral`` (a CTE
  inlined where it is used). ``table``, ``view``, ``incremental`` and the rest would write into the
  invocation's in-memory DuckDB and vanish when it ends: refused.
- ``partition_by``: one column name (a DATE or a TIMESTAMP: the table is partitioned on its day;
  the type is checked here when the model's YAML declares ``data_type``, else when it is written).
- ``partition_granularity``: ``day`` (default), ``month`` or ``year``, with ``partition_by`` only.
- ``strategy``: ``overwrite_window`` (with ``partition_by``, the default there), ``replace``
  (without, the default there), ``append`` (insert only, partitioned or not; a replayed run adds
  nothing), ``merge`` (SCD1 upsert on ``unique_key``; with ``partition_by``, only
  the days the changes touch are rewritten; with optional ``merge_update_columns`` and
  ``merge_delete_column``, which apply to merge only) or ``scd2``
  (history on ``unique_key`` and ``updated_at``, unpartitioned).
- ``on_schema_change``: ``append_new_columns`` (default), ``sync_all_columns`` or ``fail``;
  dbt's ``ignore`` would drop the new columns' values without a word.
- names: ``<table>__rejected`` and ``<table>__rebuild`` belong to the platform; two models may
  not share a ``[layer, table]``.
- sources: only ``source('bronze', <name>)``, generated from sources.yml. Seeds and snapshots
  would also live only in the in-memory DuckDB: use a reference source (``partitioned: false``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ratatouille_assets.ingest.sources import SourcesFile
from ratatouille_assets.layers import BRONZE, MODEL_LAYERS
from ratatouille_assets.lakehouse.dbt_plugin import ON_SCHEMA_CHANGE, REJECTED_SUFFIX
from ratatouille_assets.lakehouse.merge import STRATEGIES
from ratatouille_assets.lakehouse.write import GRANULARITIES, REBUILD_SUFFIX
from ratatouille_assets.project.dbt_sources import GENERATED_NAME

MATERIALIZATIONS = ("iceberg", "ephemeral")
_RESERVED_SUFFIXES = (REJECTED_SUFFIX, REBUILD_SUFFIX, "__dbt_staging")
_PARTITION_TYPES = ("date", "timestamp", "timestamptz", "timestamp with time zone", "datetime")


class ModelContractError(ValueError):
    """One or more dbt models break the contract; each line names the file, the model and the fix."""


@dataclasses.dataclass(frozen=True)
class Model:
    unique_id: str
    name: str
    layer: str
    table: str
    path: Path
    partition_by: str | None
    materialized: str

    @property
    def identifier(self) -> str:
        return f"{self.layer}.{self.table}"


def model_of(node: Mapping[str, Any], project_dir: Path) -> Model:
    config = node.get("config") or {}
    partition_by = config.get("partition_by")
    return Model(
        unique_id=node["unique_id"],
        name=node["name"],
        layer=node["schema"],
        table=node.get("alias") or node["name"],
        path=Path(project_dir) / node["original_file_path"],
        partition_by=partition_by if isinstance(partition_by, str) else None,
        materialized=config.get("materialized") or "iceberg",
    )


def _model_problems(node: Mapping[str, Any], model: Model) -> list[str]:
    config = node.get("config") or {}
    where = f"{model.path}: model '{model.name}'"
    if model.materialized not in MATERIALIZATIONS:
        return [
            f"{where} is materialized='{model.materialized}', which would write into dbt's in-memory DuckDB "
            "and be lost when the run ends. Remove materialized= (every model is an Iceberg table: without "
            "partition_by it is rebuilt whole, like 'table'; with partition_by a run replaces its days, like "
            "'incremental'), or use 'ephemeral' for a step that is not stored."
        ]
    if model.materialized == "ephemeral":
        return []
    problems = []
    if model.layer not in MODEL_LAYERS:
        problems.append(
            f"{where} has no layer (its schema would be '{model.layer}'). Put it under a folder named "
            f"{' or '.join(MODEL_LAYERS)} (e.g. models/gold/{model.path.name}) or set "
            f"{{{{ config(schema='gold') }}}} in it."
        )
    partition_by = config.get("partition_by")
    if partition_by is not None and (not isinstance(partition_by, str) or not partition_by.strip()):
        problems.append(
            f"{where} has partition_by={partition_by!r}: give one DATE or TIMESTAMP column name, "
            "e.g. {{ config(partition_by='order_date') }}."
        )
    declared = {c.get("name"): (c.get("data_type") or "") for c in (node.get("columns") or {}).values()}
    if isinstance(partition_by, str) and declared.get(partition_by):
        data_type = declared[partition_by].strip().lower()
        if not data_type.startswith(_PARTITION_TYPES):
            problems.append(
                f"{where} is partitioned on '{partition_by}', declared {data_type}: partition on a DATE or "
                f"TIMESTAMP column (cast({partition_by} as date) as {partition_by})."
            )
    granularity = config.get("partition_granularity")
    if granularity is not None and (granularity not in GRANULARITIES or not isinstance(partition_by, str)):
        problems.append(
            f"{where} has partition_granularity={granularity!r}: "
            + (f"use one of {', '.join(GRANULARITIES)}." if granularity not in GRANULARITIES
               else "it applies to partitioned models only; set partition_by too, or remove it.")
        )
    on_schema_change = config.get("on_schema_change") or "append_new_columns"
    if on_schema_change not in ON_SCHEMA_CHANGE:
        problems.append(
            f"{where} has on_schema_change='{on_schema_change}': use {', '.join(ON_SCHEMA_CHANGE)} "
            "('ignore' would drop the values of new columns without a word)."
        )
    problems += _strategy_problems(config, where, partition_by)
    wap = config.get("write_audit_publish", True)
    if not isinstance(wap, bool):
        problems.append(f"{where} has write_audit_publish={wap!r}: use true or false.")
    if model.table.endswith(_RESERVED_SUFFIXES):
        problems.append(
            f"{where} is named '{model.table}': names ending in {', '.join(_RESERVED_SUFFIXES)} belong to the "
            "platform (rejected rows, rebuilds); rename the model or set another alias."
        )
    return problems


def _names(value) -> list[str] | None:
    """A column name or a list of them as a list; None when it is neither."""
    if isinstance(value, str) and value.strip():
        return [value]
    if isinstance(value, list | tuple) and value and all(isinstance(v, str) and v.strip() for v in value):
        return list(value)
    return None


def _strategy_problems(config: Mapping[str, Any], where: str, partition_by) -> list[str]:
    strategy = config.get("strategy")
    merge_options = [k for k in ("merge_update_columns", "merge_delete_column") if config.get(k) is not None]
    keyed = ["unique_key"] if config.get("unique_key") is not None else []
    dated = ["updated_at"] if config.get("updated_at") is not None else []
    if strategy is None:
        if keyed + merge_options + dated:
            return [f"{where} sets {', '.join(keyed + merge_options + dated)} without strategy='merge' or 'scd2': "
                    "add the strategy, or remove them."]
        return []
    if strategy not in STRATEGIES:
        return [f"{where} has strategy={strategy!r}: use one of {', '.join(STRATEGIES)}."]
    partitioned = isinstance(partition_by, str)
    if strategy == "overwrite_window" and not partitioned:
        return [f"{where} has strategy='overwrite_window' but no partition_by: a window is days of the partition "
                "column. Set partition_by, or use strategy='replace' (the default without it)."]
    if strategy == "replace" and partitioned:
        return [f"{where} has strategy='replace' and partition_by: a partitioned model's run replaces its days "
                "(overwrite_window, the default); remove one of them."]
    if strategy not in ("merge", "scd2"):
        extra = keyed + merge_options + dated
        return [f"{where} sets {', '.join(extra)}, which apply to strategy='merge' or 'scd2' only."] if extra else []
    problems = []
    if partitioned and strategy == "scd2":
        problems.append(f"{where} has strategy='scd2' and partition_by: a history is kept per key across all time, "
                        "not per day; remove partition_by.")
    keys = _names(config.get("unique_key"))
    if keys is None:
        problems.append(f"{where} has strategy='{strategy}' without unique_key: name the column(s) a row is matched "
                        f"on, e.g. {{{{ config(strategy='{strategy}', unique_key='customer_id') }}}}.")
    if strategy == "scd2":
        if merge_options:
            problems.append(f"{where} sets {', '.join(merge_options)}, which apply to strategy='merge' only "
                            "(an scd2 history keeps every column of every version and removes nothing).")
        updated_at = config.get("updated_at")
        if not (isinstance(updated_at, str) and updated_at.strip()):
            problems.append(f"{where} has strategy='scd2' without updated_at: name the DATE or TIMESTAMP column that "
                            "orders a key's versions, e.g. updated_at='updated_at'.")
        elif keys and updated_at in keys:
            problems.append(f"{where} has updated_at='{updated_at}', one of its unique_key columns: a key's versions "
                            "differ in time, so updated_at cannot be part of the key.")
        return problems
    if dated:
        problems.append(f"{where} sets updated_at, which applies to strategy='scd2' only.")
    updates = config.get("merge_update_columns")
    if updates is not None and _names(updates) is None:
        problems.append(f"{where} has merge_update_columns={updates!r}: give a column name or a list of them.")
    elif updates is not None and keys and set(_names(updates)) & set(keys):
        problems.append(f"{where} has merge_update_columns naming its unique_key ({', '.join(sorted(set(_names(updates)) & set(keys)))}): "
                        "a key is what a row is matched on, not what it updates; remove it from the list.")
    delete = config.get("merge_delete_column")
    if delete is not None and not (isinstance(delete, str) and delete.strip()):
        problems.append(f"{where} has merge_delete_column={delete!r}: give one BOOLEAN column name.")
    return problems


def validate(manifest: Mapping[str, Any], sources: SourcesFile, project_dir: Path) -> list[Model]:
    """The project's stored models (ephemeral ones excluded), or :class:`ModelContractError`."""
    project_dir = Path(project_dir)
    problems: list[str] = []
    models: list[Model] = []
    seen: dict[tuple[str, str], Model] = {}
    for node in manifest["nodes"].values():
        kind = node["resource_type"]
        path = project_dir / node.get("original_file_path", "")
        if kind in ("seed", "snapshot"):
            problems.append(
                f"{path}: dbt {kind}s would live only in the in-memory DuckDB of one run. Load the file as a "
                f"reference source instead (partitioned: false in {sources.path.name}: docs/your-own-data.md)."
            )
            continue
        if kind != "model":
            continue
        model = model_of(node, project_dir)
        problems += _model_problems(node, model)
        if model.materialized == "ephemeral":
            continue
        key = (model.layer, model.table)
        if key in seen:
            problems.append(
                f"{path} and {seen[key].path}: both models write {model.identifier}; rename one or set an alias."
            )
        seen[key] = model
        models.append(model)
    for source in manifest.get("sources", {}).values():
        path = project_dir / source.get("original_file_path", "")
        if source["source_name"] != BRONZE:
            problems.append(
                f"{path}: dbt source '{source['source_name']}' is not a bronze table. Sources are declared in "
                f"{sources.path} (each becomes source('bronze', <name>)); remove this one."
            )
        elif path.name != GENERATED_NAME:
            problems.append(
                f"{path}: source('bronze', '{source['name']}') is declared outside {sources.path}. Declare it there "
                f"(the dbt sources are generated from it) and remove it from {path.name}."
            )
        elif source["name"] not in sources.sources:
            problems.append(f"{path} declares '{source['name']}', which {sources.path} does not: run make manifest.")
    if problems:
        raise ModelContractError("the dbt project breaks the model contract:\n  " + "\n  ".join(problems))
    return models
