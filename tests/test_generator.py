"""The sample generator: deterministic by seed, dirt at the documented rates."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import duckdb

from ratatouille_assets.ingest.generator import Dirt, SampleSpec, generate
from ratatouille_assets.ingest.landing import LocalLandingZone
from ratatouille_assets.ingest.sources import load_sources_file
from tests.project import ROOT

SPEC = SampleSpec(days=3, rows_per_day=3000, seed=11)


def digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes_other_seed_other_data(tmp_path):
    generate(SPEC, str(tmp_path / "a"))
    generate(SPEC, str(tmp_path / "b"))
    generate(SampleSpec(days=3, rows_per_day=3000, seed=12), str(tmp_path / "c"))
    a, b, c = digest(tmp_path / "a"), digest(tmp_path / "b"), digest(tmp_path / "c")
    assert a == b
    assert a.keys() == c.keys() and a != c
    formats = {Path(k).suffix for k in a}
    assert {".csv", ".jsonl", ".parquet"} <= formats


def test_regenerating_replaces_old_sample_files(tmp_path):
    generate(SampleSpec(days=2, rows_per_day=300, files_per_day=3), str(tmp_path))
    generate(SampleSpec(days=2, rows_per_day=300, files_per_day=1), str(tmp_path))
    assert len(list((tmp_path / "orders" / "2024-01-01").iterdir())) == 1


def test_dirt_rates(tmp_path):
    generate(SPEC, str(tmp_path))
    con = duckdb.connect()
    orders = f"read_json('{tmp_path}/orders/*/*.jsonl', format='newline_delimited', filename=true)"
    total = con.execute(f"SELECT count(DISTINCT order_id) FROM {orders}").fetchone()[0]
    assert total == SPEC.orders_per_day * SPEC.days - _late_of_last_day(con, orders, SPEC)

    def rate(sql: str) -> float:
        return con.execute(sql).fetchone()[0] / total

    dirt = Dirt()
    exact_dupes = rate(f"SELECT count(*) FROM (SELECT order_id, updated_at, count(*) c FROM {orders} GROUP BY ALL HAVING c > 1)")
    late = rate(f"SELECT count(DISTINCT order_id) FROM {orders} WHERE order_ts::DATE < regexp_extract(filename, '(\\d{{4}}-\\d{{2}}-\\d{{2}})', 1)::DATE")
    unknown = rate(f"SELECT count(DISTINCT order_id) FROM {orders} WHERE currency NOT IN ('USD','EUR','GBP','JPY','CHF')")
    null_country = rate(f"SELECT count(DISTINCT order_id) FROM {orders} WHERE ship_country IS NULL")
    messy = rate(f"SELECT count(DISTINCT order_id) FROM {orders} WHERE ship_country <> upper(trim(ship_country))")
    updated = rate(f"SELECT count(*) FROM (SELECT order_id FROM {orders} GROUP BY 1 HAVING count(DISTINCT status) > 1)")
    for got, want in [(exact_dupes, dirt.duplicate), (late, dirt.late * 2 / 3), (unknown, dirt.unknown_currency),
                      (null_country, dirt.null_field), (messy, dirt.messy_text), (updated, dirt.updated)]:
        assert abs(got - want) < max(0.5 * want, 0.01), (got, want)

    items = f"read_parquet('{tmp_path}/order_items/*/*.parquet')"
    negative = con.execute(f"SELECT avg((quantity < 0)::INT) FROM {items}").fetchone()[0]
    assert abs(negative - dirt.negative_quantity) < 0.005
    lines = con.execute(f"SELECT count(*) FROM (SELECT DISTINCT order_id, line_no FROM {items})").fetchone()[0]
    assert abs(lines / (SPEC.rows_per_day * SPEC.days) - 1) < 0.1  # rows_per_day means order lines


def _late_of_last_day(con, orders: str, spec: SampleSpec) -> int:
    """Orders of the last day that were held back for a day that was never generated."""
    present = con.execute(f"SELECT count(DISTINCT order_id) FROM {orders} WHERE order_ts::DATE = DATE '{spec.day(spec.days - 1)}'").fetchone()[0]
    return spec.orders_per_day - present


def stats(root: Path) -> dict[str, tuple[int, bytes]]:
    return {str(p.relative_to(root)): (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(root.rglob("*")) if p.is_file()}


def test_regenerating_the_same_sample_touches_no_file(tmp_path):
    """``make dev`` regenerates the sample: the landing sensor must see nothing new (same bytes, same mtime)."""
    spec = SampleSpec(days=2, rows_per_day=300, seed=5)
    generate(spec, str(tmp_path))
    past = 1_600_000_000_000_000_000  # 2020: a rewritten file could not keep this mtime
    for p in tmp_path.rglob("*"):
        if p.is_file():
            os.utime(p, ns=(past, past))
    before = stats(tmp_path)
    sources = load_sources_file(ROOT / "sources.yml").sources
    zone = LocalLandingZone(str(tmp_path))
    fingerprints = {f.path: f.fingerprint for s in sources.values() for f in zone.files(s)}
    assert len(fingerprints) == len(before) > 0  # every generated file is a landing file of a source

    generate(spec, str(tmp_path))
    assert stats(tmp_path) == before
    assert {f.path: f.fingerprint for s in sources.values() for f in zone.files(s)} == fingerprints
    assert not [p for p in tmp_path.rglob(".*") if p.is_file()]  # no temporary file left behind


def test_regenerating_with_another_seed_rewrites_the_files(tmp_path):
    generate(SampleSpec(days=2, rows_per_day=300, seed=5), str(tmp_path))
    before = stats(tmp_path)
    generate(SampleSpec(days=2, rows_per_day=300, seed=6), str(tmp_path))
    after = stats(tmp_path)
    assert after.keys() == before.keys()
    changed = [name for name in after if after[name][1] != before[name][1]]
    assert changed == list(after), f"unchanged with another seed: {sorted(set(after) - set(changed))}"
    assert all(after[name][0] != before[name][0] for name in changed)  # new mtimes: the sensor sees them


def test_fewer_files_per_day_remove_the_extra_sample_files_and_keep_the_users_own(tmp_path):
    generate(SampleSpec(days=2, rows_per_day=300, files_per_day=3), str(tmp_path))
    folder = tmp_path / "orders" / "2024-01-01"
    assert sorted(p.name for p in folder.iterdir()) == [f"sample-orders-2024-01-01-00{i}.jsonl" for i in (1, 2, 3)]
    con = duckdb.connect()
    day_rows = f"SELECT count(*) FROM read_json('{folder}/sample-*.jsonl', format='newline_delimited')"
    three = con.execute(day_rows).fetchone()[0]
    own = folder / "orders-from-the-shop.jsonl"
    own.write_text('{"order_id": "mine"}\n')

    generate(SampleSpec(days=2, rows_per_day=300, files_per_day=1), str(tmp_path))
    assert sorted(p.name for p in folder.iterdir()) == ["orders-from-the-shop.jsonl", "sample-orders-2024-01-01-001.jsonl"]
    assert own.read_text() == '{"order_id": "mine"}\n'
    for source in ("order_items", "customers", "products"):
        names = [p.name for p in (tmp_path / source / "2024-01-02").iterdir()]
        assert len(names) == 1 and names[0].endswith("-001" + Path(names[0]).suffix), (source, names)
    assert con.execute(day_rows).fetchone()[0] == three > 0  # the one file holds the day's records the three held
