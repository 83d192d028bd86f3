"""The benchmark's own correctness (never its timings): both sides compute the same tables, the
memory sampler sees child processes, history is built through the platform's write path."""

from __future__ import annotations

import sys
import textwrap

import dagster as dg
import pytest

from bench import history, measure, queries
from bench.raw import run_raw
from bench.sql import compile_models
from ratatouille_assets.demo import run_pipeline
from ratatouille_assets.ingest.generator import SampleSpec, generate
from ratatouille_assets.lakehouse import duck
from ratatouille_assets.lakehouse.catalog import load_catalog, table_locations
from ratatouille_assets.settings import get_settings

pytestmark = pytest.mark.slow

SPEC = SampleSpec(days=2, rows_per_day=600, seed=11)
VOLATILE = {"_ingested_at", "_run_id"}  # lineage that differs by design (when, which run)


def _columns(conn, relation: str) -> list[str]:
    return [r[0] for r in conn.execute(f"DESCRIBE SELECT * FROM {relation}").fetchall() if r[0] not in VOLATILE]


def test_both_sides_of_the_benchmark_produce_identical_tables(settings, tmp_path):
    generate(SPEC, settings.landing)
    days = [SPEC.day(i).isoformat() for i in range(SPEC.days)]
    with dg.instance_for_test() as instance:
        report = run_pipeline(days, instance=instance)
    assert report.checks_failed == 0

    models = compile_models(settings.dbt_project_dir, tmp_path / "compile")
    raw = run_raw(settings.landing, days, models, tmp_path / "raw", settings.sources_file, "1GB", 2)
    assert raw["rows"]["gold.kpi_daily_sales"] > 0

    conn = duck.connect(settings)
    compared = []
    for (namespace, name), location in sorted(table_locations(load_catalog(settings)).items()):
        ours = f"iceberg_scan('{location}')"
        theirs = f"read_parquet('{tmp_path / 'raw' / namespace / (name + '.parquet')}')"
        columns = _columns(conn, ours)
        assert columns == _columns(conn, theirs), f"{namespace}.{name}: columns differ"
        select = ", ".join(f'"{c}"' for c in columns)
        n_ours, n_theirs = (conn.execute(f"SELECT count(*) FROM {r}").fetchone()[0] for r in (ours, theirs))
        only_ours = conn.execute(f"SELECT count(*) FROM (SELECT {select} FROM {ours} EXCEPT ALL SELECT {select} FROM {theirs})").fetchone()[0]
        only_theirs = conn.execute(f"SELECT count(*) FROM (SELECT {select} FROM {theirs} EXCEPT ALL SELECT {select} FROM {ours})").fetchone()[0]
        assert (n_ours, only_ours, only_theirs) == (n_theirs, 0, 0), f"{namespace}.{name} differs"
        compared.append(f"{namespace}.{name}")
    # Every layer was compared, gold included, rejects too.
    assert {"gold.kpi_daily_sales", "gold.fct_order_lines", "gold.dim_customers", "silver.orders__rejected",
            "bronze.orders"} <= set(compared)


def test_memory_sampler_counts_every_process_and_enforces_the_limit():
    child = textwrap.dedent("""
        import subprocess, sys
        code = "import time; block = bytearray(300 * 1024 * 1024); time.sleep(1.5)"
        subprocess.run([sys.executable, "-c", code], check=True)
    """)
    m = measure.run([sys.executable, "-c", child])
    assert m.ok and m.peak_rss_bytes > 300 * 1024 * 1024  # the grandchild's block is counted

    m = measure.run([sys.executable, "-c", child], rss_limit_bytes=150 * 1024 * 1024)
    assert m.over_limit and not m.ok and m.returncode != 0


def test_memory_sampler_counts_pages_a_fork_shares_once():
    # A parent holding 400 MB forks a child that only reads them (a run forked from the warm
    # worker): the tree holds ~400 MB, not the ~800 MB its RSS sum says.
    child = textwrap.dedent("""
        import os, time
        block = bytearray(400 * 1024 * 1024)
        for i in range(0, len(block), 4096):
            block[i] = 1
        pid = os.fork()
        if pid == 0:
            total = sum(block[i] for i in range(0, len(block), 4096))  # touches every page, writes none
            time.sleep(2.5)
            os._exit(0 if total else 1)
        os.waitpid(pid, 0)
    """)
    m = measure.run([sys.executable, "-c", child])
    assert m.ok
    assert 400 * 1024 * 1024 < m.peak_rss_bytes < 600 * 1024 * 1024, m.peak_rss_bytes


def test_history_is_daily_commits_through_the_write_path(settings, tmp_path):
    spec = SampleSpec(days=3, rows_per_day=300, seed=5)
    generate(spec, settings.landing)
    models = compile_models(settings.dbt_project_dir, tmp_path / "compile")
    days = [spec.day(i).isoformat() for i in range(spec.days)]
    history.build(settings, days, models)

    catalog = load_catalog(settings)
    kpi = catalog.load_table("gold.kpi_daily_sales")
    partitions = [s.summary.additional_properties.get("ratatouille.partition") for s in kpi.metadata.snapshots]
    assert sorted({p for p in partitions if p}) == days  # one write per day, tagged with its day
    stats = history.metadata_stats(settings)
    assert stats["tables"] == len(table_locations(catalog)) and stats["snapshots"] >= 3 * stats["tables"]

    latency = queries.dashboard_latency(get_settings(), repetitions=2)
    conn = duck.connect(settings)
    expected = conn.execute(f"SELECT count(*) FROM iceberg_scan('{kpi.metadata_location}')").fetchone()[0]
    assert latency["kpi_rows"] == expected > 0
    assert latency["days"] == f"{days[0]}..{days[-1]}"


def test_the_merge_benchmark_merges_the_same_rows_on_both_sides_and_pyicebergs_upsert_agrees(settings, tmp_path, monkeypatch):
    from bench import merge

    monkeypatch.setenv("RATATOUILLE_HOME", str(settings.home))  # run() points it at its work folder; restored after
    out = merge.run(tmp_path / "merge", rows=20_000, changes=2_000, reps=1, upsert_rows=2_000, log=lambda _: None)
    get_settings.cache_clear()
    assert out["same_content"]  # same row count and hash of every row, ours (Iceberg) vs plain DuckDB (Parquet)
    assert out["merged_rows"] == 20_000 + 1_000  # 1,000 updates, 1,000 new keys
    assert (out["ours_detail"]["inserted"], out["ours_detail"]["updated"]) == (1_000, 1_000)
    assert (out["pyiceberg_upsert"]["updated"], out["pyiceberg_upsert"]["inserted"]) == (100, 100)


def test_the_split_takes_off_the_time_steps_ran_side_by_side():
    from bench.__main__ import split
    from bench.ours import overlap_seconds

    assert overlap_seconds([(0.0, 2.0), (1.0, 3.0), (5.0, 6.0)]) == 1.0
    assert overlap_seconds([(0.0, 4.0), (1.0, 2.0), (1.5, 3.0)]) == 2.5  # two inside one
    assert overlap_seconds([(0.0, 1.0), (1.0, 2.0)]) == 0.0
    out = {"steps": {"bronze_orders": 2.0, "dbt_current": 2.0, "dbt_daily": 1.0}, "steps_overlap_s": 1.0,
           "dbt_tests_s": 0.5, "seconds": {"process_start": 0.0}}
    spans = [{"span": "bronze.read", "seconds": 1.5, "table": "bronze.orders"},
             {"span": "dbt.model", "seconds": 1.0, "table": "silver.orders"}]
    parts = split(out, spans, wall=4.5)["split_s"]
    assert parts["overlap"] == -1.0
    assert abs(sum(parts.values()) - 4.5) < 1e-9
