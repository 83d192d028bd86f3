"""The sample generator: deterministic by seed, dirt at the documented rates."""

from __future__ import annotations

import hashlib
from pathlib import Path

import duckdb

from ratatouille_assets.ingest.generator import Dirt, SampleSpec, generate

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
