"""strategy='scd2': a history table of a model's rows (valid_from, valid_to, is_current).

A support desk's contacts, exported with the time each row last changed: not the sample shop.
The planner is checked against a history computed here in Python, version by version; the
pipeline test runs bronze and the dbt model three times (and a replay) on the local default and on
S3 + PostgreSQL, reading the table back with plain DuckDB.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import uuid
from pathlib import Path

import dagster as dg
import pytest

from ratatouille_assets.definitions import build_definitions
from ratatouille_assets.lakehouse import duck, s3
from ratatouille_assets.lakehouse.catalog import load_catalog
from ratatouille_assets.lakehouse.merge import MergeError
from ratatouille_assets.lakehouse.scd2 import Scd2Spec, plan_scd2
from ratatouille_assets.lakehouse.timetravel import history
from ratatouille_assets.lakehouse.write import STRATEGY_PROPERTY
from ratatouille_assets.project.models import ModelContractError
from ratatouille_assets.settings import get_settings
from tests.conftest import use_backend, use_home
from tests.project import make_project

SPEC = Scd2Spec(("contact_id",), "changed_at")
T = [dt.datetime(2025, 3, d, 9, 0) for d in range(1, 8)]


def expected_history(loads: list[list[tuple]]) -> set[tuple]:
    """The history the loads make, computed here: per key, its versions in time; a version equal to
    the one before it adds nothing; a version already held is a replay."""
    versions: dict[int, dict[dt.datetime, tuple]] = {}
    for load in loads:
        for key, email, plan, at in sorted(set(load), key=lambda r: (r[0], r[3])):
            held = versions.setdefault(key, {})
            if at in held:
                assert held[at] == (email, plan), "the tests' loads never rewrite a version"
                continue
            earlier = [t for t in held if t < at]
            if earlier and held[max(earlier)] == (email, plan):
                continue
            held[at] = (email, plan)
    out = set()
    for key, held in versions.items():
        times = sorted(held)
        for i, at in enumerate(times):
            valid_to = times[i + 1] if i + 1 < len(times) else None
            out.add((key, *held[at], at, at, valid_to, valid_to is None))
    return out


def load(conn, rows: list[tuple], name: str) -> str:
    conn.execute(f"CREATE OR REPLACE TEMP TABLE {name} (contact_id BIGINT, email VARCHAR, plan VARCHAR, changed_at TIMESTAMP)")
    if rows:
        conn.executemany(f"INSERT INTO {name} VALUES (?, ?, ?, ?)", rows)
    return name


def apply(conn, changes: str, target: str | None, into: str):
    plan = plan_scd2(conn, changes, target, SPEC)
    conn.execute(f"CREATE OR REPLACE TEMP TABLE {into} AS {plan.sql}")
    plan.drop(conn)
    return plan


def versions_of(conn, table: str) -> set[tuple]:
    rows = conn.execute(f"SELECT contact_id, email, plan, changed_at, valid_from, valid_to, is_current FROM {table}").fetchall()
    assert len(rows) == len({(r[0], r[4]) for r in rows}), "one row per key and valid_from"
    return set(rows)


FIRST = [(k, f"c{k}@example.org", "basic", T[1]) for k in range(1, 6)]
SECOND = [
    (1, "c1@example.org", "pro", T[2]),      # changed
    (2, "c2@example.org", "basic", T[2]),    # newer time, same values: no version
    (3, "c3@example.org", "basic", T[1]),    # a version already held: a replay
    (6, "c6@example.org", "basic", T[2]),    # a new key
]
THIRD = [
    (1, "c1@new.example.org", "pro", T[4]),  # changed again
    (4, "c4@example.org", "trial", T[0]),    # late: older than the version held
    (5, "c5@example.org", "pro", T[3]),      # two versions of one key in one load
    (5, "c5@example.org", "team", T[5]),
]
TWICE = [(5, "c5@example.org", "team", T[5])]  # the same row twice in one result: one version


def test_three_loads_build_the_history_version_by_version_and_a_replay_changes_nothing():
    conn = duck.connect(get_settings())
    first = apply(conn, load(conn, FIRST, "l1"), None, "h1")
    assert versions_of(conn, "h1") == expected_history([FIRST])
    assert first.counts == {"new_keys": 5, "new_versions": 5, "late": 0, "closed": 0, "unchanged": 0, "kept": 0}

    second = apply(conn, load(conn, SECOND, "l2"), "h1", "h2")
    assert versions_of(conn, "h2") == expected_history([FIRST, SECOND])
    assert second.counts == {"new_keys": 1, "new_versions": 2, "late": 0, "closed": 1, "unchanged": 2, "kept": 4}

    third = apply(conn, load(conn, THIRD + TWICE, "l3"), "h2", "h3")
    got = versions_of(conn, "h3")
    assert got == expected_history([FIRST, SECOND, THIRD])
    assert third.counts == {"new_keys": 0, "new_versions": 4, "late": 1, "closed": 2, "unchanged": 1, "kept": 5}
    # Spelled out for the keys that moved: exactly one current row per key, the late version closed
    # at the version that followed it.
    assert conn.execute("SELECT count(*), count(DISTINCT contact_id) FROM h3 WHERE is_current").fetchone() == (6, 6)
    assert sorted((r[4], r[5], r[2]) for r in got if r[0] == 1) == [(T[1], T[2], "basic"), (T[2], T[4], "pro"), (T[4], None, "pro")]
    assert sorted((r[4], r[5], r[2]) for r in got if r[0] == 4) == [(T[0], T[1], "trial"), (T[1], None, "basic")]
    assert sorted((r[4], r[5], r[2]) for r in got if r[0] == 5) == [(T[1], T[3], "basic"), (T[3], T[5], "pro"), (T[5], None, "team")]

    replay = apply(conn, "l3", "h3", "h4")
    assert versions_of(conn, "h4") == got
    assert replay.counts["new_versions"] == 0 and replay.counts["kept"] == len(got)
    assert not conn.execute("SELECT * FROM duckdb_tables() WHERE table_name LIKE '__rat_scd2_%'").fetchall()


def test_what_a_history_cannot_place_is_refused_naming_the_rows():
    conn = duck.connect(get_settings())
    apply(conn, load(conn, FIRST, "l1"), None, "h1")
    two = load(conn, [(7, "a@x", "basic", T[2]), (7, "b@x", "basic", T[2])], "two")
    with pytest.raises(MergeError, match=r"1 key\(s\) of the model's result have two different rows at one changed_at .*7, 2025-03-03 09:00:00"):
        plan_scd2(conn, two, "h1", SPEC)
    rewrite = load(conn, [(2, "c2@example.org", "pro", T[1])], "rewrite")
    with pytest.raises(MergeError, match=r"1 row\(s\) .* the changed_at of a version the table holds.*2, 2025-03-02 09:00:00.*later changed_at"):
        plan_scd2(conn, rewrite, "h1", SPEC)
    nulls = load(conn, [(None, "n@x", "basic", T[2]), (8, "m@x", "basic", None)], "nulls")
    with pytest.raises(MergeError, match=r"2 row\(s\) of the model's result have a NULL unique_key or updated_at"):
        plan_scd2(conn, nulls, "h1", SPEC)
    conn.execute("CREATE TEMP TABLE texty AS SELECT 1 AS contact_id, 'x' AS email, 'basic' AS plan, '2025-03-01' AS changed_at")
    with pytest.raises(MergeError, match="updated_at column 'changed_at' is VARCHAR: .* DATE or TIMESTAMP"):
        plan_scd2(conn, "texty", None, SPEC)
    conn.execute("CREATE TEMP TABLE taken AS SELECT *, true AS is_current FROM l1")
    with pytest.raises(MergeError, match="has is_current, which an scd2 table adds itself"):
        plan_scd2(conn, "taken", None, SPEC)
    assert not conn.execute("SELECT * FROM duckdb_tables() WHERE table_name LIKE '__rat_scd2_%'").fetchall()


# --- through Dagster and dbt --------------------------------------------------------------------

CONTACTS = """
contacts:
  format: csv
  partitioned: false
  primary_key: [contact_id, changed_at]
  columns:
    contact_id: integer
    email: varchar
    plan: varchar
    changed_at: timestamp
"""

HISTORY_MODEL = {"silver/contacts_history.sql": """
    {{ config(strategy='scd2', unique_key='contact_id', updated_at='changed_at') }}
    select contact_id, email, plan, changed_at from {{ source('bronze', 'contacts') }}
"""}


@pytest.fixture(params=["local"])
def desk(request, tmp_path, monkeypatch):
    use_backend(request, monkeypatch, tmp_path / "rt", "desk-" + uuid.uuid4().hex[:8])
    make_project(tmp_path / "project", monkeypatch, sources=CONTACTS, models=HISTORY_MODEL)
    with dg.instance_for_test() as instance:
        yield instance
    get_settings.cache_clear()


def export(rows: list[tuple]) -> None:
    """The desk's export of changed contacts: one file, replaced by each new export."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["contact_id", "email", "plan", "changed_at"])
    writer.writerows((k, e, p, at.isoformat(sep=" ")) for k, e, p, at in rows)
    landing = get_settings().landing
    if s3.is_s3(landing):
        s3.put_bytes(s3.client(get_settings()), s3.join(landing, "contacts", "export.csv"), out.getvalue().encode())
        return
    path = Path(landing) / "contacts" / "export.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(out.getvalue())


def run(instance) -> None:
    defs = build_definitions()
    result = dg.materialize(list(defs.assets), selection=[dg.AssetKey(["bronze", "contacts"]), dg.AssetKey(["silver", "contacts_history"])],
                            resources=dict(defs.resources), instance=instance)
    assert result.success


def table_versions() -> set[tuple]:
    table = load_catalog(get_settings()).load_table("silver.contacts_history")
    conn = duck.connect(get_settings())
    return versions_of(conn, duck.scan_sql(table.metadata_location))


@pytest.mark.slow
@pytest.mark.parametrize("desk", ["local", "s3"], indirect=True)
def test_the_history_model_over_three_exports_and_a_replay(desk):
    loads = []
    for rows in (FIRST, SECOND, THIRD):
        export(rows)
        run(desk)
        loads.append(rows)
        assert table_versions() == expected_history(loads)
    catalog = load_catalog(get_settings())
    table = catalog.load_table("silver.contacts_history")
    summary = table.current_snapshot().summary.additional_properties
    assert summary[STRATEGY_PROPERTY] == "scd2"
    assert summary["ratatouille.scd2.late"] == "1" and summary["ratatouille.scd2.closed"] == "2"
    assert history(table)[0].operation == "scd2"
    snapshots = len(table.snapshots())

    run(desk)  # the same export again
    assert table_versions() == expected_history(loads)
    table = catalog.load_table("silver.contacts_history")
    assert table.current_snapshot().summary.additional_properties["ratatouille.scd2.new_versions"] == "0"
    assert len(table.snapshots()) > snapshots  # a run was recorded, and it changed no row


def test_the_contract_refuses_scd2_configs_that_cannot_work(tmp_path, monkeypatch):
    use_home(monkeypatch, tmp_path / "rt")
    bad = {
        "silver/no_time.sql": "{{ config(strategy='scd2', unique_key='contact_id') }} select 1 as contact_id",
        "silver/with_flag.sql": ("{{ config(strategy='scd2', unique_key='contact_id', updated_at='changed_at', "
                                 "merge_delete_column='gone') }} select 1 as contact_id"),
        "silver/stray_time.sql": "{{ config(strategy='merge', unique_key='contact_id', updated_at='changed_at') }} select 1 as contact_id",
    }
    make_project(tmp_path / "project", monkeypatch, sources=CONTACTS, models=bad)
    with pytest.raises(ModelContractError) as caught:
        build_definitions()
    message = str(caught.value)
    assert "no_time.sql: model 'no_time' has strategy='scd2' without updated_at" in message
    assert "with_flag.sql: model 'with_flag' sets merge_delete_column, which apply to strategy='merge' only" in message
    assert "stray_time.sql: model 'stray_time' sets updated_at, which applies to strategy='scd2' only" in message


def test_a_column_the_model_adds_or_drops_reads_null_where_a_version_has_none():
    conn = duck.connect(get_settings())
    apply(conn, load(conn, FIRST, "l1"), None, "h1")
    conn.execute("CREATE TEMP TABLE wider AS SELECT 1::BIGINT AS contact_id, 'c1@example.org' AS email, 'pro' AS plan, "
                 "TIMESTAMP '2025-03-05 09:00:00' AS changed_at, 'FR' AS country")
    apply(conn, "wider", "h1", "h2")
    got = conn.execute("SELECT contact_id, plan, country, is_current FROM h2 ORDER BY contact_id, valid_from").fetchall()
    assert got[:2] == [(1, "basic", None, False), (1, "pro", "FR", True)] and len(got) == 6
    conn.execute("CREATE TEMP TABLE narrower AS SELECT 2::BIGINT AS contact_id, 'x@example.org' AS email, "
                 "TIMESTAMP '2025-03-05 09:00:00' AS changed_at")
    apply(conn, "narrower", "h2", "h3")
    rows = conn.execute("SELECT plan, country, email, is_current FROM h3 WHERE contact_id = 2 ORDER BY valid_from").fetchall()
    assert rows == [("basic", None, "c2@example.org", False), (None, None, "x@example.org", True)]
