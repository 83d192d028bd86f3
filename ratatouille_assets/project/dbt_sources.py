"""The dbt sources, generated from ``sources.yml`` (the one place a source is declared).

``dbt_project/models/_sources.generated.yml`` holds one dbt source ``bronze`` with a table per
source: its description, columns and types, ``loaded_at_field: _ingested_at``, the ``freshness:``
block, and in ``meta`` what the dbt macros need (primary_key, latest_by, event_time,
late_arrival_days, partitioned). It is rewritten whenever it differs from what sources.yml says
(before every dbt parse and whenever the definitions load), so the two can never disagree; a copy
that cannot be rewritten (a read-only image) and disagrees is an error naming both files.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from ratatouille_assets.ingest.readers import LINEAGE_COLUMNS, REFERENCE_LINEAGE_COLUMNS
from ratatouille_assets.ingest.sources import SourcesFile
from ratatouille_assets.layers import BRONZE

GENERATED_NAME = "_sources.generated.yml"
LOADED_AT_FIELD = "_ingested_at"
_HEADER = (
    "# Generated from {origin} by ratatouille_assets/project/dbt_sources.py: do not edit.\n"
    "# Declare, change or remove a source in sources.yml; this file follows on the next dbt parse\n"
    "# (make manifest) or when the Dagster definitions load.\n"
)


class SourcesMismatchError(RuntimeError):
    """The dbt sources and sources.yml disagree; the message names both files and the source."""


def generated_path(dbt_project_dir: Path) -> Path:
    return Path(dbt_project_dir) / "models" / GENERATED_NAME


def render(sources_file: SourcesFile, origin: str = "sources.yml") -> str:
    tables = []
    for source in sources_file.sources.values():
        lineage = LINEAGE_COLUMNS if source.partitioned else REFERENCE_LINEAGE_COLUMNS
        meta = {
            "partitioned": source.partitioned,
            "primary_key": list(source.primary_key),
            "latest_by": source.latest_by,
            "event_time": source.event_time,
            "late_arrival_days": source.late_arrival_days,
            "format": source.format,
            "path": source.path,
        }
        table = {
            "name": source.name,
            "description": source.description or f"Landing files of {source.name}, as they came.",
            "loaded_at_field": LOADED_AT_FIELD,
            "meta": meta,
            "columns": [{"name": c, "data_type": t} for c, t in source.columns.items()]
            + [{"name": c, "description": "lineage, added by bronze"} for c in lineage],
        }
        if source.freshness:
            table["freshness"] = source.freshness
        tables.append(table)
    document = {
        "version": 2,
        "sources": [{
            "name": BRONZE,
            "schema": BRONZE,
            "description": f"The bronze tables, one per source of {origin}, written by the Dagster bronze assets.",
            "tables": tables,
        }],
    }
    return _HEADER.format(origin=origin) + yaml.safe_dump(document, sort_keys=False, allow_unicode=True)


def sync(sources_file: SourcesFile, dbt_project_dir: Path) -> bool:
    """Write the generated dbt sources if they differ from ``sources_file``; True if written."""
    target = generated_path(dbt_project_dir)
    text = render(sources_file, origin=sources_file.path.name)
    if target.exists() and target.read_text() == text:
        return False
    try:
        tmp = target.with_name(f".{target.name}.tmp")
        tmp.write_text(text)
        tmp.replace(target)
    except OSError as exc:
        raise SourcesMismatchError(
            f"{target} does not match {sources_file.path} and cannot be rewritten ({exc}): regenerate it where the "
            "project is writable (make manifest) and rebuild the image"
        ) from exc
    return True
