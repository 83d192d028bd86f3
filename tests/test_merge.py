"""strategy='merge' (SCD1 upsert on a key): a CRM export of changed accounts merged into the accounts
table, through Dagster, dbt and the write path; what the contract refuses when definitions load;
a merge is never committed onto a head it did not read."""

from __future__ import annotations

import csv
import datetime as dt
import io
import threading
import uuid
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pytest

from ratatouille_assets.definitions import build_definitions
from ratatouille_assets.lakehouse import duck, s3
from ratatouille_assets.lakehouse.catalog import load_catalog
from ratatouille_assets.lakehouse.errors import HeadMovedError
from ratatouille_assets.lakehouse.merge import MergeSpec, plan_merge
from ratatouille_assets.lakehouse.timetravel import history
from ratatouille_assets.lakehouse.wap import audit_branch, publish
from ratatouille_assets.lakehouse.write import STRATEGY_PROPERTY, write_window
from ratatouille_assets.project.models import ModelContractError
from ratatouille_assets.settings import get_settings
from tests.conftest import use_backend
from tests.project import make_project

ACCOUNTS = """
accounts:
  format: csv
  partitioned: false
  primary_key: [account_id]
  columns:
    account_id: integer
    name: varchar
    tier: varchar
    seats: integer
    op: varchar
"""


def model(config: str) -> dict[str, str]:
    return {"silver/accounts.sql": f"""
        {{{{ config({config}) }}}}
        select account_id, name, tier, seats, coalesce(op = 'D', false) as is_deleted,
               case when account_id is null then 'missing_key' end as _reject_reason
        from {{{{ source('bronze', 'accounts') }}}}
    """}


MERGE = "strategy='merge', unique_key='account_id', merge_delete_column='is_deleted'"


@pytest.fixture(params=["local"])
def crm(request, tmp_path, monkeypatch):
    """The local default, or (param "s3") the warehouse and landing on S3 over HTTP, the catalog on PostgreSQL."""
    use_backend(request, monkeypatch, tmp_path / "rt", "crm-" + uuid.uuid4().hex[:8])

    def make(config: str = MERGE) -> Path:
        return make_project(tmp_path / "project", monkeypatch, sources=ACCOUNTS, models=model(config))

    with dg.instance_for_test() as instance:
        yield make, instance
    get_settings.cache_clear()


def export(rows: list[tuple]) -> None:
    """The CRM's export: one file, replaced by each new export (bronze holds the latest)."""
    out = io.StringIO()
    w = csv.writer(out)
    w.writerow(["account_id", "name", "tier", "seats", "op"])
    w.writerows(["" if v is None else v for v in row] for row in rows)
    landing = get_settings().landing
    if s3.is_s3(landing):
        s3.put_bytes(s3.client(get_settings()), s3.join(landing, "accounts", "export.csv"), out.getvalue().encode())
        return
    path = Path(landing) / "accounts" / "export.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(out.getvalue())


def run(instance, raise_on_error=True):
    defs = build_definitions()
    return dg.materialize(list(defs.assets), selection=[dg.AssetKey(["bronze", "accounts"]), dg.AssetKey(["silver", "accounts"])],
                          resources=dict(defs.resources), instance=instance, raise_on_error=raise_on_error)


def table_rows(name: str) -> dict:
    """The table as plain DuckDB reads main's metadata: {account_id: (name, tier, seats)}."""
    table = load_catalog(get_settings()).load_table(name)
    conn = duck.connect(get_settings())
    got = conn.execute(f"SELECT account_id, name, tier, seats FROM {duck.scan_sql(table.metadata_location)}").fetchall()
    assert len(got) == len({r[0] for r in got}), "one row per key"
    return {r[0]: r[1:] for r in got}


def first_export() -> list[tuple]:
    return [(i, f"account {i}", "free", i % 7, None) for i in range(1, 2001)]


@pytest.mark.slow
@pytest.mark.parametrize("crm", ["local", "s3"], indirect=True)
def test_changes_are_upserted_and_a_replay_changes_nothing(crm):
    make, instance = crm
    make()
    export(first_export())
    assert run(instance).success
    expected = {i: (f"account {i}", "free", i % 7) for i in range(1, 2001)}
    assert table_rows("silver.accounts") == expected

    # 500 updates + 500 new accounts + 2 deletions + 1 row without a key.
    changes = [(i, f"account {i} renamed", "pro", 100 + i, None) for i in range(1, 501)]
    changes += [(i, f"new account {i}", "free", 1, None) for i in range(2001, 2501)]
    changes += [(1500, "account 1500", "free", 1, "D"), (1501, "account 1501", "free", 1, "D"), (None, "no key", "pro", 1, None)]
    export(changes)
    result = run(instance)
    assert result.success
    for i in range(1, 501):
        expected[i] = (f"account {i} renamed", "pro", 100 + i)
    for i in range(2001, 2501):
        expected[i] = (f"new account {i}", "free", 1)
    del expected[1500], expected[1501]
    merged = table_rows("silver.accounts")
    assert len(merged) == 2498
    assert merged == expected  # row by row
    catalog = load_catalog(get_settings())
    summary = catalog.load_table("silver.accounts").current_snapshot().summary.additional_properties
    assert {k: summary[k] for k in summary if k.startswith("ratatouille.merge.")} == {
        "ratatouille.merge.inserted": "500", "ratatouille.merge.updated": "500",
        "ratatouille.merge.deleted": "2", "ratatouille.merge.kept": "1498"}
    assert summary[STRATEGY_PROPERTY] == "merge"
    latest = history(catalog.load_table("silver.accounts"))[0]
    assert (latest.operation, latest.note) == ("merge", "500 inserted, 500 updated, 2 deleted, 1498 kept")
    assert "is_deleted" not in catalog.load_table("silver.accounts").schema().column_names
    conn = duck.connect(get_settings())
    rejected_sql = f"SELECT name, _reject_reason FROM {duck.scan_sql(catalog.load_table('silver.accounts__rejected').metadata_location)}"
    assert conn.execute(rejected_sql).fetchall() == [("no key", "missing_key")]

    # The same export again: nothing changes, the rejected row is kept once.
    assert run(instance).success
    assert table_rows("silver.accounts") == expected
    assert conn.execute(rejected_sql).fetchall() == [("no key", "missing_key")]


@pytest.mark.slow
def test_update_columns_keep_the_rest_and_duplicate_keys_are_refused_naming_them(crm):
    make, instance = crm
    make(MERGE + ", merge_update_columns=['tier']")
    export(first_export()[:10])
    assert run(instance).success
    export([(3, "ignored name", "pro", 99, None), (11, "eleven", "free", 5, None)])
    assert run(instance).success
    rows = table_rows("silver.accounts")
    assert rows[3] == ("account 3", "pro", 3)  # only tier updated
    assert rows[11] == ("eleven", "free", 5)  # a new key is inserted whole
    assert len(rows) == 11
    before = load_catalog(get_settings()).load_table("silver.accounts").current_snapshot().snapshot_id

    export([(4, "a", "pro", 1, None), (4, "b", "free", 2, None), (5, "c", "pro", 1, None)])
    result = run(instance, raise_on_error=False)
    assert not result.success
    message = "\n".join(str(e.step_failure_data.error) for e in result.all_events if e.is_step_failure)
    assert "silver/accounts.sql" in message or "silver.accounts" in message
    assert "1 key(s) of the model's result appear more than once (account_id): 4 (2 rows)" in message
    table = load_catalog(get_settings()).load_table("silver.accounts")
    assert table.current_snapshot().snapshot_id == before
    assert table_rows("silver.accounts") == rows


def test_the_contract_refuses_merge_configs_that_cannot_work(crm):
    make, _ = crm
    root = make()
    models = root / "dbt_project" / "models" / "silver"
    cases = {
        "no_key.sql": "{{ config(strategy='merge') }} select 1 as id",
        "partitioned.sql": "{{ config(strategy='merge', unique_key='id', partition_by='d') }} select 1 as id, current_date as d",
        "history.sql": ("{{ config(strategy='scd2', unique_key='id', updated_at='d', partition_by='d') }} "
                        "select 1 as id, current_date as d"),
        "typo.sql": "{{ config(strategy='upsert', unique_key='id') }} select 1 as id",
        "stray.sql": "{{ config(unique_key='id') }} select 1 as id",
        "key_updated.sql": "{{ config(strategy='merge', unique_key='id', merge_update_columns=['id', 'x']) }} select 1 as id, 2 as x",
        "window.sql": "{{ config(strategy='overwrite_window') }} select 1 as id",
    }
    for name, sql in cases.items():
        (models / name).write_text(sql)
    with pytest.raises(ModelContractError) as info:
        build_definitions()
    message = str(info.value)
    for text in [
        f"{models}/no_key.sql: model 'no_key' has strategy='merge' without unique_key",
        f"{models}/history.sql: model 'history' has strategy='scd2' and partition_by: a history is kept per key",
        f"{models}/typo.sql: model 'typo' has strategy='upsert': use one of overwrite_window, replace, append, merge, scd2.",
        f"{models}/stray.sql: model 'stray' sets unique_key without strategy='merge'",
        f"{models}/key_updated.sql: model 'key_updated' has merge_update_columns naming its unique_key (id)",
        f"{models}/window.sql: model 'window' has strategy='overwrite_window' but no partition_by",
    ]:
        assert text in message, text
    assert "silver/accounts.sql" not in message
    assert "partitioned.sql" not in message  # a partitioned merge is a merge of the days it touches


def test_a_merge_is_committed_only_onto_the_head_it_read(settings):
    catalog = load_catalog(settings)
    first = write_window(catalog, "silver.accounts", pa.table({"id": [1, 2], "v": ["a", "b"]}), window=None, run_id="r1")
    # Another writer commits after our merge read `first`: ours is refused, nothing of it committed.
    write_window(catalog, "silver.accounts", pa.table({"id": [1, 2, 3], "v": ["a", "b", "c"]}), window=None, run_id="r2")
    table = catalog.load_table("silver.accounts")
    files_before = {f["file_path"] for f in table.inspect.files().to_pylist()}
    data_dir = Path(table.location().removeprefix("file://")) / "data"
    on_disk = set(data_dir.rglob("*.parquet"))
    with pytest.raises(HeadMovedError, match=f"read at snapshot {first.snapshot_id}"):
        write_window(catalog, "silver.accounts", pa.table({"id": [1, 2], "v": ["a", "B"]}), window=None, run_id="r3",
                     expect_head=first.snapshot_id)
    table = catalog.load_table("silver.accounts")
    assert table.scan().to_arrow().sort_by("id").column("v").to_pylist() == ["a", "b", "c"]
    assert {f["file_path"] for f in table.inspect.files().to_pylist()} == files_before
    assert set(data_dir.rglob("*.parquet")) == on_disk  # the refused write's files were removed

    # Write-audit-publish: a merge audited on its branch is not carried onto a main that moved.
    head = table.current_snapshot().snapshot_id
    branch = audit_branch("r4")
    write_window(catalog, "silver.accounts", pa.table({"id": [1, 2, 3], "v": ["x", "b", "c"]}), window=None, run_id="r4",
                 branch=branch, expect_head=head, extra_properties={STRATEGY_PROPERTY: "merge"})
    write_window(catalog, "silver.accounts", pa.table({"id": [1, 2, 3, 4], "v": ["a", "b", "c", "d"]}), window=None, run_id="r5")
    moved = catalog.load_table("silver.accounts").current_snapshot().snapshot_id
    with pytest.raises(HeadMovedError, match="nothing published"):
        publish(catalog, "silver.accounts", branch, window=None, run_id="r4")
    table = catalog.load_table("silver.accounts")
    assert table.current_snapshot().snapshot_id == moved
    assert branch in table.metadata.refs  # kept for inspection


def test_a_merge_of_a_million_changes_into_ten_million_rows_streams_out_whole():
    """plan_merge's SQL at the size where the earlier plan (a join UNION ALL an anti-join of the
    same inputs) parked every DuckDB thread and never returned; checked against the merged table
    built independently, row by row from the same generators, without any join."""
    rows, updates, new = 10_000_000, 500_000, 500_000
    conn = duck.connect(get_settings())
    value = "'account ' || range AS name, CAST(range % 97 AS INTEGER) AS seats"
    conn.execute(f"CREATE TEMP TABLE target AS SELECT range AS id, {value} FROM range({rows})")
    # Every 20th key updated (every 1,000th of those deleted instead), then new keys.
    conn.execute(f"CREATE TEMP TABLE changes AS SELECT range * 20 AS id, 'renamed ' || range AS name, "
                 f"CAST(7 AS INTEGER) AS seats, range % 1000 = 0 AS gone FROM range({updates}) UNION ALL "
                 f"SELECT {rows} + range, 'new ' || range, CAST(1 AS INTEGER), false FROM range({new})")
    plan = plan_merge(conn, "changes", "target", MergeSpec(("id",), update_columns=("name",), delete_column="gone"))
    deleted = updates // 1000
    assert (plan.inserted, plan.updated, plan.deleted, plan.kept) == (new, updates - deleted, deleted, rows - updates)

    outcome: dict = {}

    def stream() -> None:
        try:
            reader = conn.execute(f"SELECT * FROM ({plan.sql})").to_arrow_reader(500_000)
            outcome["batches"] = [batch for batch in reader]
        except BaseException as exc:  # noqa: BLE001 - reported below
            outcome["error"] = exc

    worker = threading.Thread(target=stream, daemon=True)
    worker.start()
    worker.join(600)  # a hang detector, not a timing: this takes seconds even on a loaded machine
    assert not worker.is_alive(), "the merged result did not stream out (DuckDB parked its threads?)"
    assert "error" not in outcome, outcome.get("error")
    merged = pa.Table.from_batches(outcome["batches"])
    assert merged.column_names == ["id", "name", "seats"]  # the delete flag is not stored
    conn.register("merged", merged)
    expected = (f"SELECT range AS id, CASE WHEN range >= {rows} THEN 'new ' || (range - {rows}) "
                f"WHEN range % 20 = 0 THEN 'renamed ' || (range // 20) ELSE 'account ' || range END AS name, "
                f"CAST(CASE WHEN range >= {rows} THEN 1 ELSE range % 97 END AS INTEGER) AS seats "
                f"FROM range({rows + new}) WHERE NOT (range < {rows} AND range % 20 = 0 AND (range // 20) % 1000 = 0)")
    digest = "SELECT count(*), count(DISTINCT id), sum(hash(id, name, seats)) FROM {}"
    got, want = conn.execute(digest.format("merged")).fetchone(), conn.execute(digest.format(f"({expected})")).fetchone()
    assert got == want and got[0] == rows + new - deleted == got[1], (got, want)


# --- a partitioned merge: only the days the changes touch are rewritten -----------------------------

def test_a_write_of_scattered_days_replaces_exactly_those_days(settings):
    """The write path's window of chosen days (what a partitioned merge commits): the other days'
    files stay as they were, and a row of a day not in the window is refused."""
    from ratatouille_assets.lakehouse.errors import PartitionContractError
    from ratatouille_assets.lakehouse.write import Window

    catalog = load_catalog(settings)
    days = [dt.date(2021, 7, 1) + dt.timedelta(days=i) for i in range(6)]
    first = pa.table({"id": list(range(60)), "d": [days[i % 6] for i in range(60)], "v": ["old"] * 60})
    write_window(catalog, "silver.parcels", first, window=Window("d", days[0], days[-1]), run_id="r1")
    files_by_day = _files_by_day(catalog, "silver.parcels")
    chosen = Window.of_days("d", [days[1], days[4]])
    assert chosen.only == frozenset({days[1], days[4]}) and str(chosen) == "d:2021-07-02..2021-07-02,2021-07-05..2021-07-05"
    new = pa.table({"id": [1, 4, 100], "d": [days[1], days[4], days[4]], "v": ["new", "new", "new"]})
    write_window(catalog, "silver.parcels", new, window=chosen, run_id="r2")
    got = catalog.load_table("silver.parcels").scan().to_arrow().to_pylist()
    expected = [r for r in first.to_pylist() if r["d"] not in (days[1], days[4])] + new.to_pylist()
    assert sorted(got, key=lambda r: r["id"]) == sorted(expected, key=lambda r: r["id"])
    after = _files_by_day(catalog, "silver.parcels")
    assert {d: after[d] for d in after if d not in chosen.only} == {d: files_by_day[d] for d in files_by_day if d not in chosen.only}
    assert after[days[1]] != files_by_day[days[1]]
    with pytest.raises(PartitionContractError, match=r"2021-07-03 fall outside the days being written"):
        write_window(catalog, "silver.parcels", pa.table({"id": [7], "d": [days[2]], "v": ["x"]}), window=chosen, run_id="r3")


def _files_by_day(catalog, identifier: str) -> dict:
    out: dict = {}
    for row in catalog.load_table(identifier).inspect.files().select(["file_path", "partition"]).to_pylist():
        out.setdefault(next(iter(row["partition"].values())), set()).add(row["file_path"])
    return out


SHIPMENTS = """
shipments:
  description: A carrier's daily export of the shipments created or changed that day.
  format: csv
  primary_key: [shipment_id]
  columns:
    shipment_id: bigint
    shipped_on: date
    status: varchar
    weight_kg: double
"""
SHIPMENT_MODEL = """
    {{ config(strategy='merge', unique_key='shipment_id', partition_by='shipped_on') }}
    select shipment_id, shipped_on, status, weight_kg
    from {{ source('bronze', 'shipments') }} where {{ source_window('shipments') }}
"""
FEB20 = dt.date(2023, 2, 20)


@pytest.fixture(params=["local"])
def carrier(request, tmp_path, monkeypatch):
    use_backend(request, monkeypatch, tmp_path / "rt", "carrier-" + uuid.uuid4().hex[:8])
    make_project(tmp_path / "project", monkeypatch, sources=SHIPMENTS, start="2023-02-01",
                 models={"silver/shipments.sql": SHIPMENT_MODEL})
    with dg.instance_for_test() as instance:
        yield instance
    get_settings.cache_clear()


def ship_export(day: str, rows: list[tuple]) -> None:
    body = "shipment_id,shipped_on,status,weight_kg\n" + "".join(
        ",".join("" if v is None else str(v) for v in row) + "\n" for row in rows)
    landing = get_settings().landing
    if s3.is_s3(landing):
        s3.put_bytes(s3.client(get_settings()), s3.join(landing, "shipments", day, "export.csv"), body.encode())
        return
    path = Path(landing) / "shipments" / day / "export.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(body)


def ship(instance, day: str):
    defs = build_definitions()
    keys = [dg.AssetKey(["bronze", "shipments"]), dg.AssetKey(["silver", "shipments"])]
    return dg.materialize(list(defs.assets), selection=keys, resources=dict(defs.resources), instance=instance,
                          partition_key=day)


def shipments() -> dict:
    table = load_catalog(get_settings()).load_table("silver.shipments")
    got = duck.connect(get_settings()).execute(
        f"SELECT shipment_id, shipped_on, status, weight_kg FROM {duck.scan_sql(table.metadata_location)}").fetchall()
    assert len(got) == len({r[0] for r in got}), "one row per key"
    return {r[0]: r[1:] for r in got}


def day_figures(result) -> dict[str, int]:
    """{partition: row count} of silver.shipments' materializations in a run."""
    out = {}
    for event in result.get_asset_materialization_events():
        materialization = event.event_specific_data.materialization
        if materialization.asset_key == dg.AssetKey(["silver", "shipments"]):
            out[materialization.partition] = materialization.metadata["dagster/row_count"].value
    return out


@pytest.mark.slow
@pytest.mark.parametrize("carrier", ["local", "s3"], indirect=True)
def test_a_partitioned_merge_rewrites_only_the_days_its_changes_touch(carrier):
    instance = carrier
    # Day 1's export: 300 shipments over ten days of shipping.
    first = [(i, FEB20 + dt.timedelta(days=i % 10), "created", i / 2) for i in range(1, 301)]
    ship_export("2023-03-01", first)
    one = ship(instance, "2023-03-01")
    assert one.success
    expected = {i: (d, s, w) for i, d, s, w in first}
    assert shipments() == expected
    # Each day has its own count; the nine days before the run's day came from its merge.
    assert day_figures(one) == {(FEB20 + dt.timedelta(days=k)).isoformat(): 30 for k in range(10)}
    catalog = load_catalog(get_settings())
    before = _files_by_day(catalog, "silver.shipments")

    # Day 2: five shipments of Feb 22 delivered, shipment 3 moved from Feb 23 to Feb 25, ten new
    # shipments, and a row with no shipping day (rejected).
    delivered = [(i, FEB20 + dt.timedelta(days=2), "delivered", i / 2) for i in (2, 12, 22, 32, 42)]
    moved = [(3, FEB20 + dt.timedelta(days=5), "rerouted", 1.5)]
    new = [(i, dt.date(2023, 3, 2), "created", 1.0) for i in range(301, 311)]
    ship_export("2023-03-02", [*delivered, *moved, *new, (999, None, "created", 2.0)])
    two = ship(instance, "2023-03-02")
    assert two.success
    for i, d, s, w in [*delivered, *moved, *new]:
        expected[i] = (d, s, w)
    assert shipments() == expected  # row by row
    touched = {FEB20 + dt.timedelta(days=k) for k in (2, 3, 5)} | {dt.date(2023, 3, 2)}
    after = _files_by_day(catalog, "silver.shipments")
    assert {d: f for d, f in after.items() if d not in touched} == {d: f for d, f in before.items() if d not in touched}
    assert all(after[d] != before.get(d) for d in touched)
    summary = catalog.load_table("silver.shipments").current_snapshot().summary.additional_properties
    assert {k: summary[k] for k in summary if k.startswith("ratatouille.merge.")} == {
        "ratatouille.merge.inserted": "10", "ratatouille.merge.updated": "6", "ratatouille.merge.deleted": "0",
        "ratatouille.merge.kept": "294", "ratatouille.merge.days": "4"}
    merge_id = catalog.load_table("silver.shipments").current_snapshot().snapshot_id
    on_day = lambda d: {e.snapshot_id for e in history(catalog.load_table("silver.shipments"), day=d)}  # noqa: E731
    assert merge_id in on_day(FEB20 + dt.timedelta(days=5)) and merge_id not in on_day(FEB20 + dt.timedelta(days=4))
    assert day_figures(two) == {"2023-03-02": 10, "2023-02-22": 30, "2023-02-23": 29, "2023-02-25": 31}
    rejected = catalog.load_table("silver.shipments__rejected").scan().to_arrow()
    assert rejected.select(["shipment_id", "_reject_reason"]).to_pylist() == [
        {"shipment_id": 999, "_reject_reason": "missing_partition_value"}]

    # The same export again: the table is the same.
    assert ship(instance, "2023-03-02").success
    assert shipments() == expected
    assert catalog.load_table("silver.shipments__rejected").scan().to_arrow().num_rows == 1
