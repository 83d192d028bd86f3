"""The asset graph as a reviewed snapshot (keys, deps, groups, partitions, checks), and the
definitions loading through Dagster's own CLI. Always runs: no skip, no env gate.

After an intended change to the graph: ``UPDATE_SNAPSHOTS=1 make test`` and review the diff.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import dagster as dg
import pytest

from ratatouille_assets.definitions import build_definitions
from ratatouille_assets.defs.partitions import dbt_vars, window_days

SNAPSHOT = Path(__file__).parent / "snapshots" / "asset_graph.json"
ROOT = Path(__file__).resolve().parent.parent


def graph_snapshot(defs: dg.Definitions) -> dict:
    graph = defs.resolve_asset_graph()
    assets = {}
    for key in sorted(graph.get_all_asset_keys(), key=lambda k: k.to_user_string()):
        node = graph.get(key)
        partitions = node.partitions_def
        deps = {}
        for parent in sorted(node.parent_keys, key=lambda k: k.to_user_string()):
            mapping = node.partition_mappings.get(parent)
            deps[parent.to_user_string()] = repr(mapping) if mapping else None
        assets[key.to_user_string()] = {
            "group": node.group_name,
            "kinds": sorted(node.kinds),
            "partitions": f"{type(partitions).__name__}({partitions.start:%Y-%m-%d}, {partitions.timezone})" if partitions else None,
            "backfill_policy": repr(node.backfill_policy) if node.backfill_policy else None,
            "pools": sorted(node.pools or []),
            "automation": node.automation_condition.get_label() if node.automation_condition else None,
            "deps": deps,
            "checks": {c.name: "blocking" if graph.get_check_spec(c).blocking else "warn" for c in sorted(node.check_keys, key=lambda c: c.name)},
        }
    jobs = sorted(j.name for j in defs.jobs or [])
    sensors = {s.name: str(s.default_status.value) for s in defs.sensors or []}
    schedules = {
        name: f"{s.cron_schedule} {s.execution_timezone} {s.default_status.value}"
        for name in sorted(x.name for x in defs.schedules or [])
        for s in [defs.resolve_schedule_def(name)]
    }
    return {"assets": assets, "jobs": jobs, "sensors": sensors, "schedules": schedules}


def test_asset_graph_matches_snapshot(settings):
    current = graph_snapshot(build_definitions())
    if os.environ.get("UPDATE_SNAPSHOTS"):
        SNAPSHOT.write_text(json.dumps(current, indent=2, sort_keys=True) + "\n")
    assert current == json.loads(SNAPSHOT.read_text())


def test_a_process_that_builds_the_definitions_allocates_arrow_memory_with_the_system_allocator(settings):
    import pyarrow as pa

    build_definitions()
    assert pa.default_memory_pool().backend_name == "system"  # see lakehouse/write.py: use_system_memory_pool


def test_graph_connects_landing_bronze_silver_gold(settings):
    graph = build_definitions().resolve_asset_graph()
    kpi = dg.AssetKey(["gold", "kpi_daily_sales"])
    upstream, frontier = set(), [kpi]
    while frontier:
        for parent in graph.get(frontier.pop()).parent_keys:
            if parent.to_user_string() not in upstream:
                upstream.add(parent.to_user_string())
                frontier.append(parent)
    assert {"gold/fct_order_lines", "silver/orders", "silver/order_items", "silver/fx_rates",
            "bronze/orders", "bronze/order_items", "bronze/fx_rates", "landing/orders"} <= upstream
    # dbt runs are serialized through one pool (dagster.yaml limits it to 1): overlapping automation
    # runs once wrote gold from each other's half-updated inputs.
    defs = build_definitions()
    pools = {a.node_def.pool for a in defs.assets if isinstance(a, dg.AssetsDefinition) and a.node_def.name.startswith("dbt_")}
    assert pools == {"dbt"}
    assert "default_limit: 1" in (ROOT / "dagster.yaml").read_text()
    # Silver day D reads landing days D..D+1 of late-arriving sources.
    mapping = graph.get(dg.AssetKey(["silver", "orders"])).partition_mappings[dg.AssetKey(["bronze", "orders"])]
    assert isinstance(mapping, dg.TimeWindowPartitionMapping) and (mapping.start_offset, mapping.end_offset) == (0, 1)


def test_partition_window_to_dbt_vars():
    import datetime as dt

    start, end = dt.datetime(2024, 1, 1), dt.datetime(2024, 1, 2)
    assert dbt_vars(start, end, run_id="r", partition_key="2024-01-01") == {
        "min_date": "2024-01-01", "max_date": "2024-01-01", "dagster_run_id": "r", "partition_key": "2024-01-01"}
    # A 30-day backfill is one window, end exclusive -> inclusive last day (regression: off-by-one).
    assert window_days(dt.datetime(2024, 1, 1), dt.datetime(2024, 1, 31)) == (dt.date(2024, 1, 1), dt.date(2024, 1, 30))


def test_definitions_load_without_the_venv_on_path_and_reparse_stale_manifest(settings, monkeypatch, tmp_path):
    """Regression: `dagster dev` once failed because dbt was looked up on PATH.

    On a copy of the project: touching the repository's own model would make every warm run worker
    of a test running beside this one stale (its code fingerprint names the model and the manifest)."""
    from ratatouille_assets.defs.dbt import dbt_project
    from ratatouille_assets.ingest.sources import load_sources_file
    from ratatouille_assets.project.manifest import manifest_is_stale
    from ratatouille_assets.settings import get_settings
    from tests.project import make_project

    make_project(tmp_path / "project", monkeypatch, sources="", with_example=True)
    settings = get_settings()
    assert Path(settings.dbt_project_dir).is_relative_to(tmp_path)
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    monkeypatch.setenv("DAGSTER_IS_DEV_CLI", "1")
    sources = load_sources_file(settings.sources_file)
    project = dbt_project(settings, sources)
    model = Path(project.project_dir) / "models" / "example" / "gold" / "kpi_daily_sales.sql"
    os.utime(model)  # touched after the manifest: the manifest is stale and gets re-parsed
    assert manifest_is_stale(project.project_dir, project.profiles_dir)
    dbt_project(settings, sources)
    assert not manifest_is_stale(project.project_dir, project.profiles_dir)
    assert build_definitions().resolve_asset_graph().has(dg.AssetKey(["gold", "kpi_daily_sales"]))


def test_a_landing_root_that_is_not_there_fails_the_load_and_names_the_variable(settings, monkeypatch):
    import pytest

    from ratatouille_assets.ingest.landing import LandingRootError
    from ratatouille_assets.settings import get_settings

    missing = Path(settings.home) / "no-such-mount" / "landing"
    monkeypatch.setenv("RATATOUILLE_LANDING", str(missing))
    get_settings.cache_clear()
    with pytest.raises(LandingRootError, match=r"RATATOUILLE_LANDING=.*no-such-mount.* is not a folder"):
        build_definitions()
    missing.mkdir(parents=True)  # an empty landing zone that is there is fine
    assert build_definitions().resolve_asset_graph() is not None


def _prepare_and_read(index: int, barrier, results) -> None:
    """One process loading the project as a run worker does: prepare the manifest, then read it."""
    from ratatouille_assets.ingest.sources import load_sources_file
    from ratatouille_assets.project import manifest as dbt_manifest
    from ratatouille_assets.settings import get_settings

    settings = get_settings()
    barrier.wait()
    path = dbt_manifest.prepare(load_sources_file(settings.sources_file), settings.dbt_project_dir)
    results.put((index, len(json.loads(Path(path).read_text())["nodes"])))


@pytest.mark.slow
def test_processes_loading_a_stale_project_at_once_parse_it_once_and_read_a_whole_manifest(settings, monkeypatch, tmp_path):
    """Run workers starting together on a project whose models changed: before the project lock,
    two `dbt parse` wrote manifest.json over each other and a third read half of it."""
    from tests.concurrency import race
    from tests.project import make_project

    make_project(tmp_path / "project", monkeypatch, sources="""
        feed:
          format: csv
          columns: {id: bigint}
    """, models={"silver/feed_clean.sql": "{{ config(partition_by='_landing_date') }}\nselect * from {{ source('bronze', 'feed') }}\n"})
    for round_ in range(2):  # the second round: a model edited since the first parse
        if round_:
            model = tmp_path / "project" / "dbt_project" / "models" / "silver" / "feed_clean.sql"
            model.write_text(model.read_text() + "-- edited\n")
        counts = race(_prepare_and_read, lambda i: (i,), processes=3, timeout=300)
        assert len(counts) == 3 and len(set(counts.values())) == 1 and next(iter(counts.values())) >= 1
