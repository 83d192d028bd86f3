"""The dbt model contract: what a model may be is checked when the definitions load (each refused
case names the file, the model and the fix), and what it writes is checked when it is written
(TIMESTAMP partitions by day, NULL partition values rejected, schema changes, full refresh).
sources.yml and the dbt sources cannot disagree."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG
from pyiceberg.transforms import DayTransform, IdentityTransform, MonthTransform

from ratatouille_assets.definitions import build_definitions
from ratatouille_assets.lakehouse import duck
from ratatouille_assets.lakehouse.catalog import load_catalog
from ratatouille_assets.lakehouse.tables import day_counts
from ratatouille_assets.lakehouse.write import Window
from ratatouille_assets.layers import MODEL_LAYERS
from ratatouille_assets.project import dbt_sources
from ratatouille_assets.project.manifest import DbtProjectError
from ratatouille_assets.project.models import ModelContractError
from ratatouille_assets.settings import get_settings
from tests.conftest import use_home
from tests.project import ROOT, make_project, write_csv

EVENTS = """
events:
  format: csv
  primary_key: [event_id]
  event_time: happened_at
  late_arrival_days: 1
  columns:
    event_id: varchar
    happened_at: timestamp
    kind: varchar
    amount: integer
"""
GOOD = {"silver/events.sql": "select * from {{ source('bronze', 'events') }} where {{ source_window('events') }}"}


@pytest.fixture
def project(tmp_path, monkeypatch):
    use_home(monkeypatch, tmp_path / "rt")

    def make(models: dict[str, str], sources: str = EVENTS, **kw) -> Path:
        return make_project(tmp_path / "project", monkeypatch, sources=sources, models=models, **kw)

    yield make
    get_settings.cache_clear()


def test_the_schema_macro_knows_the_same_layers_as_the_platform():
    macro = (ROOT / "dbt_project" / "macros" / "generate_schema_name.sql").read_text()
    assert f"{{%- set layers = {list(MODEL_LAYERS)!r} -%}}" in macro


def test_every_refused_model_is_named_with_its_fix(project):
    root = project({
        **GOOD,
        "silver/as_table.sql": "{{ config(materialized='table') }} select 1 as x",
        "silver/as_view.sql": "{{ config(materialized='view') }} select 1 as x",
        "gold/as_incremental.sql": "{{ config(materialized='incremental') }} select 1 as x",
        "marts/no_layer.sql": "select 1 as x",
        "gold/two_columns.sql": "{{ config(partition_by=['a', 'b']) }} select 1 as a, 2 as b",
        "gold/ignored.sql": "{{ config(on_schema_change='ignore') }} select 1 as x",
        "gold/weekly.sql": "{{ config(partition_by='d', partition_granularity='week') }} select current_date as d",
        "gold/coarse.sql": "{{ config(partition_granularity='month') }} select 1 as x",
        "gold/orders__rejected.sql": "select 1 as x",
        "gold/typed.sql": "{{ config(partition_by='kind') }} select 'a' as kind",
        "gold/typed.yml": "version: 2\nmodels:\n  - name: typed\n    columns:\n      - name: kind\n        data_type: varchar\n",
        "silver/extra_sources.yml": "version: 2\nsources:\n  - name: bronze\n    tables:\n      - name: hand_written\n"
                                    "  - name: crm\n    tables:\n      - name: accounts\n",
    })
    (root / "dbt_project" / "seeds").mkdir()
    (root / "dbt_project" / "seeds" / "codes.csv").write_text("code\nA\n")
    with pytest.raises(ModelContractError) as info:
        build_definitions()
    message = str(info.value)
    models = root / "dbt_project" / "models"
    expected = [
        f"{models}/silver/as_table.sql: model 'as_table' is materialized='table', which would write into dbt's in-memory DuckDB",
        f"{models}/silver/as_view.sql: model 'as_view' is materialized='view'",
        f"{models}/gold/as_incremental.sql: model 'as_incremental' is materialized='incremental'",
        "or use 'ephemeral' for a step that is not stored",
        f"{models}/marts/no_layer.sql: model 'no_layer' has no layer (its schema would be 'main'). Put it under a "
        "folder named silver or gold (e.g. models/gold/no_layer.sql) or set {{ config(schema='gold') }} in it.",
        f"{models}/gold/two_columns.sql: model 'two_columns' has partition_by=['a', 'b']: give one DATE or TIMESTAMP column name",
        f"{models}/gold/ignored.sql: model 'ignored' has on_schema_change='ignore': use append_new_columns, sync_all_columns, fail",
        f"{models}/gold/weekly.sql: model 'weekly' has partition_granularity='week': use one of day, month, year.",
        f"{models}/gold/coarse.sql: model 'coarse' has partition_granularity='month': it applies to partitioned models only",
        f"{models}/gold/orders__rejected.sql: model 'orders__rejected' is named 'orders__rejected': names ending in __rejected",
        f"{models}/gold/typed.sql: model 'typed' is partitioned on 'kind', declared varchar: partition on a DATE or TIMESTAMP column",
        f"{models}/silver/extra_sources.yml: source('bronze', 'hand_written') is declared outside {root / 'sources.yml'}",
        f"{models}/silver/extra_sources.yml: dbt source 'crm' is not a bronze table",
        f"{root}/dbt_project/seeds/codes.csv: dbt seeds would live only in the in-memory DuckDB of one run. Load the file as a "
        "reference source instead (partitioned: false in sources.yml",
    ]
    for text in expected:
        assert text in message, text
    assert "silver/events.sql" not in message  # the good model is not blamed


def test_a_model_takes_its_layer_from_a_folder_or_its_config(project):
    project({
        **GOOD,
        "marts/gold/daily.sql": "select * from {{ ref('events') }}",
        "reporting/summary.sql": "{{ config(schema='gold') }} select count(*) as n from {{ ref('events') }}",
        "silver/step.sql": "{{ config(materialized='ephemeral') }} select 1 as x",
    })
    graph = build_definitions().resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert {"silver/events", "gold/daily", "gold/summary", "bronze/events", "landing/events"} <= keys
    assert not any("step" in k for k in keys)  # ephemeral: inlined, not stored, not an asset
    assert graph.get(dg.AssetKey(["gold", "summary"])).group_name == "gold"


def test_removing_a_source_that_a_model_reads_names_both_files(project):
    root = project(GOOD)
    build_definitions()  # loads: the source is declared
    (root / "sources.yml").write_text("partitions:\n  start: 2024-01-01\nsources:\n")
    with pytest.raises(DbtProjectError) as info:
        build_definitions()
    message = str(info.value)
    assert f"{root}/dbt_project/models/silver/events.sql reads source('bronze', 'events'), but {root}/sources.yml declares no source 'events'" in message
    assert "Declare 'events' in sources.yml, or remove the reference from the model." in message


def test_the_generated_dbt_sources_follow_sources_yml(project):
    root = project(GOOD)
    build_definitions()
    generated = root / "dbt_project" / "models" / dbt_sources.GENERATED_NAME
    text = generated.read_text()
    assert "late_arrival_days: 1" in text and "event_time: happened_at" in text and "loaded_at_field: _ingested_at" in text
    generated.write_text(text.replace("name: events", "name: renamed_by_hand"))  # edited by hand: the other side
    graph = build_definitions().resolve_asset_graph()  # rewritten from sources.yml, so they agree again
    assert generated.read_text() == text
    assert graph.has(dg.AssetKey(["silver", "events"]))
    # A freshness block in sources.yml reaches dbt and becomes checks in Dagster.
    (root / "sources.yml").write_text((root / "sources.yml").read_text().replace(
        "  late_arrival_days: 1", "  late_arrival_days: 1\n    freshness: {warn_after: {count: 6, period: hour}}"))
    defs = build_definitions()
    assert "freshness:\n      warn_after:\n        count: 6\n        period: hour" in generated.read_text()
    checks = {(key.asset_key.to_user_string(), key.name) for c in defs.asset_checks for key in c.check_keys}
    # Beside the landing check every source has, and the health check every table has.
    assert checks == {("bronze/events", "freshness_check"), ("bronze/events", "landing_files_read"),
                      ("bronze/events", "health"), ("silver/events", "health")}


# ---- what a model writes (dbt runs) -----------------------------------------------------------

# Recent days, so that "every partition" (a full refresh's range: partitions.start..yesterday) is a few days,
# and both in one month (the month-partitioned tests put them in one file): on the 3rd, a day earlier.
D1 = dt.date.today() - dt.timedelta(days=3)
if (D1 + dt.timedelta(days=1)).day == 1:
    D1 -= dt.timedelta(days=1)
D2 = D1 + dt.timedelta(days=1)


_INSTANCE: list[dg.DagsterInstance] = []


def materialize(keys: list[list[str]], start: dt.date, end: dt.date, run_config=None, raise_on_error=True):
    defs = build_definitions()
    return dg.materialize(
        list(defs.assets), selection=[dg.AssetKey(k) for k in keys], resources=dict(defs.resources),
        tags={ASSET_PARTITION_RANGE_START_TAG: start.isoformat(), ASSET_PARTITION_RANGE_END_TAG: end.isoformat()},
        instance=_INSTANCE[-1], run_config=run_config, raise_on_error=raise_on_error,
    )


def rows(sql: str) -> list[tuple]:
    settings = get_settings()
    conn = duck.connect(settings)
    duck.register_iceberg_views(conn, load_catalog(settings))
    return conn.execute(sql).fetchall()


def failure(result) -> str:
    return "\n".join(str(e.step_failure_data.error) for e in result.all_events if e.is_step_failure)


@pytest.fixture
def events(project, tmp_path):
    """Two landing days of events, around midnight, one late, one with no time; bronze loaded."""
    root = project({"silver/events.sql": """
        {{ config(partition_by='happened_at') }}
        select event_id, happened_at, kind, amount, _landing_date from {{ source('bronze', 'events') }}
        where {{ source_window('events') }}
    """}, start=D1.isoformat())
    landing = Path(get_settings().landing) / "events"
    write_csv(landing / f"{D1}" / "a.csv", "event_id,happened_at,kind,amount",
              [f"e1,{D1} 00:00:00,click,1", f"e2,{D1} 23:59:59,click,2", "e3,,click,3"])
    write_csv(landing / f"{D2}" / "a.csv", "event_id,happened_at,kind,amount",
              [f"e4,{D2} 00:00:01,view,4", f"e5,{D1} 12:00:00,view,5"])
    with dg.instance_for_test() as instance:
        _INSTANCE.append(instance)
        assert materialize([["bronze", "events"]], D1, D2).success
        yield root
        _INSTANCE.pop()


def test_timestamp_partitions_by_day_and_null_partition_values_are_rejected(events):
    result = materialize([["silver", "events"]], D1, D2)
    assert result.success
    table = load_catalog(get_settings()).load_table("silver.events")
    assert [type(f.transform) for f in table.spec().fields] == [DayTransform]
    assert day_counts(table, Window("happened_at", D1, D2)) == {D1: 3, D2: 1}  # e1, e2 and late e5 | e4
    assert rows(f"SELECT event_id FROM silver.events WHERE cast(happened_at AS date) = DATE '{D1}' ORDER BY 1") == [
        ("e1",), ("e2",), ("e5",)]
    rejected = rows("SELECT event_id, _reject_reason, _landing_date FROM silver.events__rejected")
    assert rejected == [("e3", "missing_partition_value", D1)]
    # Rerunning day 1 replaces exactly day 1: nothing duplicated, day 2 untouched.
    files_day2 = {f["file_path"] for f in table.inspect.files().to_pylist() if f["partition"]["happened_at_day"] == D2}
    assert materialize([["silver", "events"]], D1, D1).success
    table = load_catalog(get_settings()).load_table("silver.events")
    assert day_counts(table, Window("happened_at", D1, D2)) == {D1: 3, D2: 1}
    assert {f["file_path"] for f in table.inspect.files().to_pylist() if f["partition"]["happened_at_day"] == D2} == files_day2
    assert rows("SELECT count(*) FROM silver.events__rejected") == [(1,)]
    metadata = result.asset_materializations_for_node("dbt_daily")
    by_day = {m.partition: m.metadata["rejected_rows"].value for m in metadata}
    assert by_day == {D1.isoformat(): 1, D2.isoformat(): 0}


def test_a_month_partitioned_model_keeps_daily_partitions_and_replaces_only_its_days(events):
    model = events / "dbt_project" / "models" / "silver" / "events.sql"
    model.write_text(model.read_text().replace("partition_by='happened_at'", "partition_by='happened_at', partition_granularity='month'"))
    assert materialize([["silver", "events"]], D1, D2).success
    table = load_catalog(get_settings()).load_table("silver.events")
    assert [type(f.transform) for f in table.spec().fields] == [MonthTransform]
    assert len(table.inspect.files()) == 1  # both days in the month's one file
    assert day_counts(table, Window("happened_at", D1, D2)) == {D1: 3, D2: 1}
    result = materialize([["silver", "events"]], D2, D2)
    assert result.success
    table = load_catalog(get_settings()).load_table("silver.events")
    assert day_counts(table, Window("happened_at", D1, D2)) == {D1: 3, D2: 1}
    assert [m.metadata["dagster/row_count"].value for m in result.asset_materializations_for_node("dbt_daily")] == [1]


def test_the_projects_granularity_applies_to_every_table_that_sets_none_and_evolves_existing_ones(events):
    # sources.yml's partitions.granularity: bronze.events (loaded daily by the fixture) and the model
    # without its own setting go monthly on their next write; a model's own setting still wins.
    sources = events / "sources.yml"
    sources.write_text(sources.read_text().replace("partitions:\n", "partitions:\n  granularity: month\n", 1))
    (events / "dbt_project" / "models" / "gold").mkdir()
    (events / "dbt_project" / "models" / "gold" / "daily_kinds.sql").write_text(
        "{{ config(partition_by='day', partition_granularity='day') }}\n"
        "select cast(happened_at as date) as day, kind, count(*) as n from {{ ref('events') }}\n"
        "where {{ in_window('happened_at') }} group by all")
    get_settings.cache_clear()
    assert materialize([["bronze", "events"], ["silver", "events"], ["gold", "daily_kinds"]], D1, D2).success
    catalog = load_catalog(get_settings())
    transforms = {name: [type(f.transform) for f in catalog.load_table(name).spec().fields]
                  for name in ("bronze.events", "silver.events", "gold.daily_kinds")}
    assert transforms == {"bronze.events": [MonthTransform], "silver.events": [MonthTransform],
                          "gold.daily_kinds": [IdentityTransform]}
    bronze = catalog.load_table("bronze.events")
    assert day_counts(bronze, Window("_landing_date", D1, D2)) == {D1: 3, D2: 2}
    assert day_counts(catalog.load_table("silver.events"), Window("happened_at", D1, D2)) == {D1: 3, D2: 1}
    # Reloading one day rewrites it inside its month and leaves the other day as it was.
    assert materialize([["bronze", "events"]], D2, D2).success
    assert day_counts(catalog.load_table("bronze.events"), Window("_landing_date", D1, D2)) == {D1: 3, D2: 2}


def test_partitioning_on_text_fails_naming_the_model_and_the_fix(events):
    model = events / "dbt_project" / "models" / "silver" / "events.sql"
    model.write_text(model.read_text().replace("partition_by='happened_at'", "partition_by='kind'"))
    result = materialize([["silver", "events"]], D1, D2, raise_on_error=False)
    assert not result.success
    message = failure(result)
    assert "models/silver/events.sql: silver.events: partition column 'kind' is string: partition on a DATE or TIMESTAMP column" in message
    assert "Cast it in the model (cast(kind as date) as kind)" in message


def test_schema_changes_follow_on_schema_change_and_full_refresh_rebuilds(events):
    model = events / "dbt_project" / "models" / "silver" / "events.sql"
    assert materialize([["silver", "events"]], D1, D2).success
    # append_new_columns (default): a new column is added, the others stay.
    model.write_text(model.read_text().replace("amount, _landing_date", "amount, _landing_date, upper(kind) as kind_code"))
    assert materialize([["silver", "events"]], D1, D2).success
    assert "kind_code" in load_catalog(get_settings()).load_table("silver.events").schema().column_names
    # fail: any difference stops the write, naming the model and the two ways out.
    model.write_text("{{ config(on_schema_change='fail') }}\n" + model.read_text().replace(", upper(kind) as kind_code", ""))
    result = materialize([["silver", "events"]], D1, D2, raise_on_error=False)
    assert not result.success
    assert "models/silver/events.sql: silver.events: the schema changed (missing column(s) kind_code) and on_schema_change is 'fail'" in failure(result)
    # sync_all_columns: the column the model no longer has is dropped from the table.
    model.write_text(model.read_text().replace("on_schema_change='fail'", "on_schema_change='sync_all_columns'"))
    assert materialize([["silver", "events"]], D1, D2).success
    assert "kind_code" not in load_catalog(get_settings()).load_table("silver.events").schema().column_names
    # A type that cannot widen (integer -> text) needs a rebuild: the error says so.
    model.write_text(model.read_text().replace("kind, amount,", "kind, cast(amount as varchar) || ' pts' as amount,"))
    result = materialize([["silver", "events"]], D1, D2, raise_on_error=False)
    assert not result.success
    assert "Rebuild the table with the new schema: a full refresh" in failure(result)
    # A full refresh over some days only would drop the others: refused.
    full = {"ops": {"dbt_daily": {"config": {"full_refresh": True}}}}
    result = materialize([["silver", "events"]], D1, D2, run_config=full, raise_on_error=False)
    assert not result.success
    assert f"full_refresh rebuilds whole tables, so it must run over every partition ({D1}.." in failure(result)
    # Over every partition: the table is rebuilt with the new type, every row from this run.
    yesterday = dt.date.today() - dt.timedelta(days=1)
    assert materialize([["silver", "events"]], D1, yesterday, run_config=full).success
    table = load_catalog(get_settings()).load_table("silver.events")
    assert str(table.schema().find_field("amount").field_type) == "string"
    assert rows("SELECT event_id, amount FROM silver.events ORDER BY 1") == [
        ("e1", "1 pts"), ("e2", "2 pts"), ("e4", "4 pts"), ("e5", "5 pts")]
    assert rows("SELECT event_id FROM silver.events__rejected") == [("e3",)]
    assert not load_catalog(get_settings()).table_exists("silver.events__rebuild")
