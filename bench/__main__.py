"""``make bench [BENCH_SCALE=small|full]``: measure the platform against plain DuckDB.

For each scale (order lines per day) the same generated landing day is processed by our
platform (one Dagster run of the whole graph in a fresh process: bronze, dbt silver and gold,
Soda checks, dbt tests, Iceberg commits) and by plain DuckDB (same SQL, Parquet out),
interleaved A/B, ``reps`` times. Then: the fixed overhead of a tiny day split by component,
peak RSS of each whole process tree, the incremental cost of day N after N-1 days of history,
and dashboard query latency over that history. Prints a table and writes
``bench/results/<date>-<host>.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import duckdb

from bench import history, measure, queries
from bench.sql import Model, compile_models, save
from ratatouille_assets.ingest.generator import SampleSpec, generate
from ratatouille_assets.ingest.sources import load_sources_file
from ratatouille_assets.lakehouse import trace
from ratatouille_assets.settings import get_settings

ROOT = Path(__file__).resolve().parent.parent
GB = 1024**3


@dataclasses.dataclass(frozen=True)
class Plan:
    rows_per_day: tuple[int, ...]      # throughput and overhead ratio, one day each
    reps: int                          # interleaved A/B repetitions per scale
    tiny: int                          # the "tiny partition" of the fixed-overhead split
    history_rows: int                  # rows/day of the incremental-cost history
    history_days: tuple[int, ...]      # N: measure day N after N-1 days of history
    search_rows: tuple[int, ...] = ()  # larger days tried for "largest day under the RSS limit"
    memory_limit: str = "2GB"          # DuckDB memory_limit, both sides
    rss_limit_gb: float = 4.0
    backfill_days: int = 365           # days of history loaded landing -> gold in one backfill
    backfill_rows: int = 1_000         # order lines per day of that history
    backfill_reps: int = 1             # interleaved A/B repetitions of the backfill
    # The history's sources.yml partitions.granularity: a thousand order lines a day is where the
    # guide says to choose month (day: one small Iceberg file per table and day, the old figure).
    backfill_granularity: str = "month"
    # Maintain every table (compaction, expiry, sweep) after each this many days of the
    # incremental history, and before each measured day; 0: never (writes alone).
    maintain_every: int = 0
    # A day's run as the daemon starts one under `make dev` (dagster.yaml's launcher forks it from
    # the warm worker, which is up before the clock starts), timed from launch to the run's end;
    # False: executed in a fresh process, as a Kubernetes Job or RATATOUILLE_WARM_RUNS=0 runs it.
    warm: bool = True


PLANS = {
    # Under 5 minutes on 2 cores: the shape of every measurement, at small sizes.
    "small": Plan(rows_per_day=(1_000, 100_000), reps=3, tiny=1_000, history_rows=1_000, history_days=(1, 30),
                  backfill_days=240, backfill_reps=1),
    # The sizes: ~1.5-2 hours on 2 cores (most of it the year of history and the 10M day).
    "full": Plan(
        rows_per_day=(100_000, 1_000_000, 10_000_000), reps=3, tiny=1_000, history_rows=100_000,
        history_days=(1, 30, 365), search_rows=(50_000_000,), backfill_days=2_400, backfill_reps=2,
    ),
}


def _env(home: Path, landing: Path, plan: Plan) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RATATOUILLE_") and k != "DAGSTER_HOME"}
    env.update({
        "RATATOUILLE_HOME": str(home),
        "RATATOUILLE_LANDING": str(landing),
        "DAGSTER_HOME": str(home / "dagster"),
        "RATATOUILLE_TRACE_FILE": str(home / "trace.jsonl"),
        "RATATOUILLE_DUCKDB_MEMORY_LIMIT": plan.memory_limit,
        "PYTHONPATH": str(ROOT),
    })
    return env


def _last_json(text: str) -> dict:
    for line in reversed(text.strip().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise ValueError("no JSON result in the output")


def run_ours(home: Path, landing: Path, day: str, plan: Plan, fresh: bool = True,
             extra_env: dict[str, str] | None = None) -> dict:
    """One day of the whole graph through the platform, in a fresh process; timings split by component."""
    if fresh:
        shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True, exist_ok=True)
    env = {**_env(home, landing, plan), **(extra_env or {})}
    trace_file = Path(env["RATATOUILLE_TRACE_FILE"])
    trace_file.unlink(missing_ok=True)
    env["BENCH_LAUNCHED_AT"] = repr(time.time())
    m = measure.run([sys.executable, "-m", "bench.ours", "--day", day, *(["--warm"] if plan.warm else [])], env,
                    cwd=str(ROOT), rss_limit_bytes=int(plan.rss_limit_gb * GB))
    result = {"wall_s": m.seconds, "peak_rss_bytes": m.peak_rss_bytes, "ok": m.ok, "over_rss_limit": m.over_limit}
    if not m.ok:
        result["error"] = (m.stderr or m.stdout)[-2000:]
        return result
    out = _last_json(m.stdout)
    spans = trace.read(str(trace_file))
    # Warm: the run's own time (launch to end); the bench process's start and the worker's are not a run's.
    wall = out["seconds"]["run"] if plan.warm else m.seconds
    result["wall_s"] = wall
    result.update(split(out, spans, wall))
    return result


def split(out: dict, spans: list[dict], wall: float) -> dict:
    """Per-layer times and rows, and the wall time split into process start, Dagster, dbt, Iceberg,
    quality checks, file reads and SQL compute (less the time steps overlapped)."""
    layer_s: dict[str, float] = defaultdict(float)
    rows: dict[str, int] = defaultdict(int)
    total: dict[str, float] = defaultdict(float)
    for s in spans:
        total[s["span"]] += s["seconds"]
        table = s.get("table", "")
        layer = table.split(".")[0]
        if layer in ("silver", "gold"):
            layer_s[layer] += s["seconds"]
        if s["span"] == "iceberg.write" and not table.endswith("__rejected"):
            rows[layer] += s.get("rows", 0)
    steps = out["steps"]
    # A bronze asset's step is bronze_<source>; bronze__<source>_<check> steps are its checks.
    layer_s["bronze"] = sum(v for k, v in steps.items() if k.startswith("bronze_") and not k.startswith("bronze__"))
    dbt_steps = sum(v for k, v in steps.items() if k.startswith("dbt_"))
    in_dbt = sum(s["seconds"] for s in spans if s["span"] in ("dbt.model", "iceberg.write", "iceberg.publish", "soda.scan")
                 and s.get("table", "").split(".")[0] in ("silver", "gold"))
    tests = out.get("dbt_tests_s", 0.0)
    parts = {
        "process_start": out["seconds"]["process_start"],
        "iceberg_write": total["iceberg.write"],
        "iceberg_publish": total["iceberg.publish"],
        "soda_checks": total["soda.scan"],
        "dbt_tests": tests,
        "file_reads": total["bronze.read"],
        "sql_compute": total["dbt.model"],
        "dbt": dbt_steps - in_dbt - tests,
    }
    # Steps that ran side by side (two at once on threads) count their parts twice; "overlap"
    # takes that time off again, so the parts still add up to the wall time.
    overlap = out.get("steps_overlap_s", 0.0)
    parts["dagster"] = wall + overlap - sum(parts.values())
    parts["overlap"] = -overlap
    return {"layers_s": dict(layer_s), "rows": dict(rows), "split_s": parts, "steps_s": steps}


def run_raw(work: Path, landing: Path, days: list[str], models_file: Path, plan: Plan, tag: str) -> dict:
    out = work / f"raw-{tag}"
    shutil.rmtree(out, ignore_errors=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "BENCH_LAUNCHED_AT": repr(time.time())}
    m = measure.run([sys.executable, "-m", "bench.raw", "--landing", str(landing), "--days", ",".join(days),
                     "--models", str(models_file), "--out", str(out), "--memory-limit", plan.memory_limit],
                    env, cwd=str(ROOT), rss_limit_bytes=int(plan.rss_limit_gb * GB))
    result = {"wall_s": m.seconds, "peak_rss_bytes": m.peak_rss_bytes, "ok": m.ok, "over_rss_limit": m.over_limit}
    if m.ok:
        data = _last_json(m.stdout)
        rows: dict[str, int] = defaultdict(int)
        for table, n in data["rows"].items():
            if not table.endswith("__rejected"):
                rows[table.split(".")[0]] += n
        result.update({"layers_s": {k: data["seconds"][k] for k in ("bronze", "silver", "gold")}, "rows": dict(rows)})
    else:
        result["error"] = (m.stderr or m.stdout)[-2000:]
    return result


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def throughput(work: Path, rows_per_day: int, models_file: Path, plan: Plan, log) -> dict:
    """One landing day at ``rows_per_day``, both sides ``plan.reps`` times, alternating who goes first."""
    spec = SampleSpec(days=1, rows_per_day=rows_per_day)
    landing = work / f"landing-{rows_per_day}"
    shutil.rmtree(landing, ignore_errors=True)
    t = time.perf_counter()
    generate(spec, str(landing))
    log(f"  generated {rows_per_day:,} order lines in {time.perf_counter() - t:.1f}s")
    day = spec.day(0).isoformat()
    ours, raw = [], []
    for rep in range(plan.reps):
        for side in (("ours", "raw") if rep % 2 == 0 else ("raw", "ours")):
            if side == "ours":
                r = run_ours(work / "ours", landing, day, plan)
                ours.append(r)
            else:
                r = run_raw(work, landing, [day], models_file, plan, str(rows_per_day))
                raw.append(r)
            log(f"  rep {rep + 1} {side:<4} {'ok' if r['ok'] else 'FAILED'} {r['wall_s']:6.1f}s "
                f"peak RSS {r['peak_rss_bytes'] / GB:.2f} GB")
    pairs = [o["wall_s"] / r["wall_s"] for o, r in zip(ours, raw) if o["ok"] and r["ok"]]
    summary = {"rows_per_day": rows_per_day, "ours": ours, "raw": raw, "overhead_ratio": _median(pairs)}
    for name, runs in (("ours", ours), ("raw", raw)):
        good = [r for r in runs if r["ok"]]
        if not good:
            continue
        summary[f"{name}_median_s"] = _median([r["wall_s"] for r in good])
        summary[f"{name}_peak_rss_bytes"] = max(r["peak_rss_bytes"] for r in runs)
        rates = {}
        for layer in ("bronze", "silver", "gold"):
            secs = _median([r["layers_s"].get(layer, 0.0) for r in good])
            n = good[0]["rows"].get(layer, 0)
            rates[layer] = {"rows": n, "seconds": secs, "rows_per_s": n / secs if secs else None}
        whole = sum(good[0]["rows"].values())
        rates["pipeline"] = {"rows": whole, "seconds": summary[f"{name}_median_s"],
                             "rows_per_s": whole / summary[f"{name}_median_s"]}
        summary[f"{name}_layers"] = rates
    if ours and all(o["ok"] for o in ours):
        summary["ours_split_s"] = {k: _median([o["split_s"][k] for o in ours]) for k in ours[0]["split_s"]}
    return summary


def incremental(work: Path, models: list[Model], plan: Plan, log) -> dict:
    """Day N after N-1 days of history, for each N in ``plan.history_days``, in one growing warehouse.

    Each N > 1 is run ``plan.reps`` times (each run replaces day N), interleaved with day 1 in a
    fresh, empty warehouse of its own: the ratio for N is the median of those pairs' ratios, so a
    slow hour of the machine weighs on both sides alike."""
    n_max = max(plan.history_days)
    spec = SampleSpec(days=n_max, rows_per_day=plan.history_rows)
    landing = work / f"landing-history-{plan.history_rows}"
    shutil.rmtree(landing, ignore_errors=True)
    t = time.perf_counter()
    generate(spec, str(landing))
    log(f"  generated {n_max} days x {plan.history_rows:,} order lines in {time.perf_counter() - t:.1f}s")
    home, first_home = work / "history", work / "history-day1"
    shutil.rmtree(home, ignore_errors=True)
    env = _env(home, landing, plan)
    days = [spec.day(i).isoformat() for i in range(n_max)]
    results, built = {}, 0
    for n in sorted(plan.history_days):
        t = time.perf_counter()
        with _environ(env, drop=("RATATOUILLE_TRACE_FILE",)):
            get_settings.cache_clear()
            history.build(get_settings(), days[built:n - 1], models, plan.maintain_every, done=built)
            upkeep = None
            if plan.maintain_every:
                t_maint = time.perf_counter()
                upkeep = {**history.maintain_all(get_settings()), "seconds": time.perf_counter() - t_maint}
            before = history.metadata_stats(get_settings())
        built = n
        log(f"  history: {n - 1} days built ({time.perf_counter() - t:.1f}s), {before['snapshots']} snapshots, "
            f"{before['data_files']} data files" + (f", maintained ({upkeep})" if upkeep else ""))
        runs, firsts = [], []
        for rep in range(plan.reps):
            for side in (("n", "first") if rep % 2 == 0 else ("first", "n")):
                if side == "n":
                    runs.append(run_ours(home, landing, days[n - 1], plan, fresh=False))
                    log(f"  day {n} (rep {rep + 1}): {'ok' if runs[-1]['ok'] else 'FAILED'} {runs[-1]['wall_s']:.1f}s")
                elif n > 1:  # day 1 on an empty warehouse: the pair's baseline
                    firsts.append(run_ours(first_home, landing, days[0], plan, fresh=True))
                    log(f"  day 1, empty warehouse (rep {rep + 1}): {'ok' if firsts[-1]['ok'] else 'FAILED'} "
                        f"{firsts[-1]['wall_s']:.1f}s")
        ok = [r for r in runs if r["ok"]]
        pairs = [a["wall_s"] / b["wall_s"] for a, b in zip(runs, firsts) if a["ok"] and b["ok"]]
        results[n] = {
            "wall_s": _median([r["wall_s"] for r in ok]) if ok else None, "walls_s": [r["wall_s"] for r in runs],
            "ok": len(ok) == len(runs), "peak_rss_bytes": max((r["peak_rss_bytes"] for r in runs), default=0),
            "split_s": {k: _median([r["split_s"][k] for r in ok]) for k in ok[0]["split_s"]} if ok and ok[0].get("split_s") else None,
            "day1_walls_s": [r["wall_s"] for r in firsts],
            "ratio_to_day1": _median(pairs) if pairs else None,
            "metadata_before": before, "maintenance_before": upkeep,
        }
    with _environ(env, drop=("RATATOUILLE_TRACE_FILE",)):
        get_settings.cache_clear()
        after = history.metadata_stats(get_settings())
        latency = queries.dashboard_latency(get_settings())
    get_settings.cache_clear()
    shutil.rmtree(first_home, ignore_errors=True)
    last = results[max(results)]
    return {
        "rows_per_day": plan.history_rows,
        "maintain_every": plan.maintain_every,
        "days": results,
        "ratio_last_to_first": last.get("ratio_to_day1"),
        "metadata_after": after,
        "gold_queries": latency,
    }


def backfill_history(work: Path, models_file: Path, plan: Plan, log) -> dict:
    """``plan.backfill_days`` of history landing -> gold in one go: the platform's own backfill
    (``rat materialize``'s runs: reference sources once, bronze in one run, dbt once) against plain
    DuckDB reading the same files, running the same compiled SQL and writing Parquet; interleaved."""
    last = dt.date.today() - dt.timedelta(days=1)
    spec = SampleSpec(start=last - dt.timedelta(days=plan.backfill_days - 1), days=plan.backfill_days,
                      rows_per_day=plan.backfill_rows)
    landing = work / f"landing-backfill-{plan.backfill_days}x{plan.backfill_rows}"
    shutil.rmtree(landing, ignore_errors=True)
    t = time.perf_counter()
    generate(spec, str(landing))
    files = sum(len(names) for _, _, names in os.walk(landing))
    log(f"  generated {plan.backfill_days} days x {plan.backfill_rows:,} order lines ({files:,} files) in "
        f"{time.perf_counter() - t:.1f}s")
    first, end = spec.day(0).isoformat(), last.isoformat()
    # The history starts before the project's first partition: a copy of sources.yml that starts
    # with it, and declares the granularity its volumes call for.
    sources_file = work / "sources-backfill.yml"
    text = (ROOT / "sources.yml").read_text()
    start = f"start: {load_sources_file(ROOT / 'sources.yml').start}"
    if start not in text:
        raise ValueError(f"sources.yml: no line '{start}' to change for the history")
    sources_file.write_text(text.replace(start, f"start: {first}\n  granularity: {plan.backfill_granularity}", 1))
    ours, raw = [], []
    for rep in range(plan.backfill_reps):
        for side in (("raw", "ours") if rep % 2 == 0 else ("ours", "raw")):
            if side == "ours":
                home = work / "backfill-ours"
                shutil.rmtree(home, ignore_errors=True)
                home.mkdir(parents=True)
                env = {**_env(home, landing, plan), "RATATOUILLE_SOURCES_FILE": str(sources_file),
                       "BENCH_LAUNCHED_AT": repr(time.time())}
                m = measure.run([sys.executable, "-m", "bench.ours", "--day", first, "--to", end], env, cwd=str(ROOT),
                                rss_limit_bytes=int(plan.rss_limit_gb * GB))
                r = {"wall_s": m.seconds, "peak_rss_bytes": m.peak_rss_bytes, "ok": m.ok}
                if m.ok:
                    out = _last_json(m.stdout)
                    r.update(runs=len(out["runs"]), checks=out["checks"], seconds=out["seconds"])
                    with _environ(env, drop=("RATATOUILLE_TRACE_FILE",)):
                        get_settings.cache_clear()
                        r["tables"] = history.table_stats(get_settings())
                    get_settings.cache_clear()
                else:
                    r["error"] = (m.stderr or m.stdout)[-2000:]
                ours.append(r)
            else:
                r = run_raw(work, landing, [d.isoformat() for d in (spec.day(i) for i in range(spec.days))],
                            models_file, plan, "backfill")
                raw.append(r)
            log(f"  rep {rep + 1} {side:<4} {'ok' if r['ok'] else 'FAILED'} {r['wall_s']:6.1f}s "
                f"peak RSS {r['peak_rss_bytes'] / GB:.2f} GB")
    pairs = [o["wall_s"] / r["wall_s"] for o, r in zip(ours, raw) if o["ok"] and r["ok"]]
    result = {"days": plan.backfill_days, "rows_per_day": plan.backfill_rows, "landing_files": files,
              "granularity": plan.backfill_granularity,
              "ours": ours, "raw": raw, "ratio": _median(pairs)}
    good = [o for o in ours if o["ok"]]
    if good:
        result["ours_median_s"] = _median([o["wall_s"] for o in good])
        result["ours_peak_rss_bytes"] = max(o["peak_rss_bytes"] for o in ours)
        result["tables"] = good[-1]["tables"]
    if any(r["ok"] for r in raw):
        result["raw_median_s"] = _median([r["wall_s"] for r in raw if r["ok"]])
        result["raw_peak_rss_bytes"] = max(r["peak_rss_bytes"] for r in raw)
    return result


def wap_cost(work: Path, plan: Plan, log) -> dict:
    """What write-audit-publish costs: day 2 of the whole graph (tables made by day 1) with
    ``RATATOUILLE_WAP`` on and off, interleaved in one warehouse (each run replaces day 2 again);
    wall time and the Iceberg commits (metadata versions) each run added over every table."""
    spec = SampleSpec(days=2, rows_per_day=plan.tiny)
    landing = work / "landing-wap"
    shutil.rmtree(landing, ignore_errors=True)
    generate(spec, str(landing))
    home = work / "wap"
    env = _env(home, landing, plan)
    first = run_ours(home, landing, spec.day(0).isoformat(), plan)
    if not first["ok"]:
        return {"ok": False, "error": first.get("error")}

    def commits() -> int:
        with _environ(env, drop=("RATATOUILLE_TRACE_FILE",)):
            get_settings.cache_clear()
            tables = history.table_stats(get_settings())
        get_settings.cache_clear()
        return sum(t["commits"] for t in tables.values())

    runs: dict[str, list[dict]] = {"on": [], "off": []}
    for rep in range(plan.reps):
        for side in (("on", "off") if rep % 2 == 0 else ("off", "on")):
            before = commits()
            r = run_ours(home, landing, spec.day(1).isoformat(), plan, fresh=False, extra_env={"RATATOUILLE_WAP": side})
            if r["ok"]:
                r["commits"] = commits() - before
            runs[side].append(r)
            log(f"  rep {rep + 1} WAP {side:<3} {'ok' if r['ok'] else 'FAILED'} {r['wall_s']:6.1f}s "
                f"{r.get('commits', '-')} commits")
    both = [(a, b) for a, b in zip(runs["on"], runs["off"]) if a["ok"] and b["ok"]]
    out: dict = {"rows_per_day": plan.tiny, "runs": runs,
                 "extra_s_median": _median([a["wall_s"] - b["wall_s"] for a, b in both]),
                 "ratio_median": _median([a["wall_s"] / b["wall_s"] for a, b in both])}
    for side, good in runs.items():
        good = [r for r in good if r["ok"]]
        if good:
            out[f"{side}_median_s"] = _median([r["wall_s"] for r in good])
            out[f"{side}_commits"] = good[-1]["commits"]
            out[f"{side}_iceberg_write_s"] = _median([r["split_s"]["iceberg_write"] for r in good])
            out[f"{side}_iceberg_publish_s"] = _median([r["split_s"]["iceberg_publish"] for r in good])
    return out


class _environ:
    """Temporarily run this process with ``env`` (the history builder runs in-process)."""

    def __init__(self, env: dict[str, str], drop: tuple[str, ...] = ()):
        self.env, self.drop = env, drop

    def __enter__(self):
        self.saved = dict(os.environ)
        os.environ.clear()
        os.environ.update({k: v for k, v in self.env.items() if k not in self.drop})

    def __exit__(self, *exc):
        os.environ.clear()
        os.environ.update(self.saved)


def machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    mem = next((int(line.split()[1]) * 1024 for line in open("/proc/meminfo") if line.startswith("MemTotal")), 0)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    return {"host": platform.node(), "cpus": os.cpu_count(), "cpu": cpu, "memory_gb": round(mem / GB, 1),
            "python": platform.python_version(), "duckdb": duckdb.__version__, "commit": commit or None}


def report(results: dict) -> str:
    lines = [f"Ratatouille bench ({results['scale']}) on {results['machine']['cpus']} x {results['machine']['cpu']}, "
             f"{results['machine']['memory_gb']} GB; DuckDB memory_limit {results['plan']['memory_limit']}", ""]
    lines.append(f"{'rows/day':>10} {'ours s':>8} {'duckdb s':>9} {'ratio':>6} {'ours RSS':>9} "
                 f"{'bronze r/s':>11} {'silver r/s':>11} {'gold r/s':>10} {'pipeline r/s':>13}")
    for t in results["throughput"]:
        layers = t.get("ours_layers", {})
        rate = lambda k: f"{layers[k]['rows_per_s']:,.0f}" if layers.get(k, {}).get("rows_per_s") else "-"  # noqa: E731
        ratio = f"{t['overhead_ratio']:.2f}" if t.get("overhead_ratio") else "-"
        lines.append(
            f"{t['rows_per_day']:>10,} {t.get('ours_median_s', float('nan')):>8.1f} {t.get('raw_median_s', float('nan')):>9.1f} "
            f"{ratio:>6} {t.get('ours_peak_rss_bytes', 0) / GB:>8.2f}G {rate('bronze'):>11} {rate('silver'):>11} "
            f"{rate('gold'):>10} {rate('pipeline'):>13}"
        )
    tiny = next((t for t in results["throughput"] if t["rows_per_day"] == results["plan"]["tiny"]), None)
    if tiny and tiny.get("ours_median_s") and tiny.get("raw_median_s"):
        lines.append("")
        lines.append("Marginal ratio (the data-dependent part, fixed costs of the tiny day removed): " + ", ".join(
            f"{t['rows_per_day']:,}: {m:.2f}" for t in results["throughput"]
            if (m := t.get("marginal_ratio")) is not None
        ))
    fixed = results.get("fixed_overhead")
    if fixed:
        how = "forked from the warm worker" if results["plan"].get("warm") else "in a fresh process"
        lines += ["", f"Fixed overhead, one day of {fixed['rows_per_day']:,} order lines, whole graph, {how}: "
                  f"{fixed['wall_s']:.1f}s (median) = " + ", ".join(f"{k} {v:.1f}s" for k, v in fixed["split_s"].items())]
    if results.get("largest_day_under_limit"):
        big = results["largest_day_under_limit"]
        lines.append(f"Largest day completed under {results['plan']['rss_limit_gb']:.0f} GB RSS: "
                     f"{big['rows_per_day']:,} order lines (peak {big['peak_rss_bytes'] / GB:.2f} GB)")
    inc = results.get("incremental")
    if inc:
        days = ", ".join(f"day {n}: {d['wall_s']:.1f}s" + (f" ({d['ratio_to_day1']:.2f}x day 1)" if d.get("ratio_to_day1") else "")
                         for n, d in inc["days"].items() if d.get("wall_s"))
        ratio = f"{inc['ratio_last_to_first']:.2f}" if inc.get("ratio_last_to_first") else "-"
        meta = inc["metadata_after"]
        upkeep = f"maintained every {inc['maintain_every']} days" if inc.get("maintain_every") else "no maintenance"
        lines += ["", f"Incremental ({inc['rows_per_day']:,} rows/day, {upkeep}): {days}; last/first = {ratio} "
                      "(median of pairs with day 1 on an empty warehouse)",
                  f"  after: {meta['snapshots']} snapshots, {meta.get('data_files', '?')} data files in {meta['tables']} tables, "
                  f"current metadata {meta['current_metadata_bytes'] / 1024:.0f} KiB, all metadata files "
                  f"{meta['metadata_dir_bytes'] / 1024**2:.1f} MiB"]
        q = inc["gold_queries"]
        lines.append(f"Gold dashboard queries over {q['days']} ({q['kpi_rows']:,} KPI rows): "
                     f"p50 {q['p50_ms']:.1f} ms, p95 {q['p95_ms']:.1f} ms")
    back = results.get("backfill")
    if back:
        ratio = f"{back['ratio']:.1f}x" if back.get("ratio") else "-"
        lines += ["", f"History backfill, {back['days']} days x {back['rows_per_day']:,} order lines "
                      f"({back['landing_files']:,} landing files, {back.get('granularity', 'day')} Iceberg partitions), "
                      "landing -> gold in one go: ours "
                      f"{back.get('ours_median_s', float('nan')):.1f}s (peak RSS {back.get('ours_peak_rss_bytes', 0) / GB:.2f} GB), "
                      f"plain DuckDB {back.get('raw_median_s', float('nan')):.1f}s: {ratio}"]
        if back.get("tables"):
            lines.append(f"  {'table':<28} {'commits':>7} {'data files':>10} {'metadata.json':>13} {'metadata files':>14} {'rows':>10}")
            for name, t in sorted(back["tables"].items()):
                lines.append(f"  {name:<28} {t['commits']:>7} {t['data_files']:>10} {t['metadata_json']:>13} "
                             f"{t['metadata_files']:>14} {t['rows']:>10,}")
    wap = results.get("wap")
    if wap and wap.get("on_median_s") and wap.get("off_median_s"):
        lines += ["", f"Write-audit-publish, day 2 of {wap['rows_per_day']:,} order lines, whole graph: on "
                      f"{wap['on_median_s']:.1f}s ({wap['on_commits']} commits), off {wap['off_median_s']:.1f}s "
                      f"({wap['off_commits']} commits): +{wap['extra_s_median']:.2f}s per run (median of pairs; "
                      f"publishing {wap['on_iceberg_publish_s']:.2f}s), "
                      f"ratio {wap['ratio_median']:.3f}"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--scale", choices=sorted(PLANS), default=os.environ.get("BENCH_SCALE", "small"))
    parser.add_argument("--work", type=Path, default=ROOT / ".ratatouille" / "bench")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--rows", type=lambda v: tuple(int(x) for x in v.split(",")),
                        help="override the scale's order lines/day, comma-separated (e.g. 1000000)")
    parser.add_argument("--reps", type=int, help="override the A/B repetitions")
    parser.add_argument("--no-history", action="store_true", help="skip the incremental-cost and query part")
    parser.add_argument("--only-backfill", action="store_true", help="only the history backfill scenario")
    parser.add_argument("--only-wap", action="store_true", help="only the write-audit-publish cost (on vs off)")
    parser.add_argument("--backfill-days", type=int, help="override the history backfill's days (e.g. 2400)")
    parser.add_argument("--backfill-granularity", choices=("day", "month", "year"),
                        help="the history's Iceberg partition granularity (default month)")
    parser.add_argument("--history-rows", type=int, help="override the history's order lines/day")
    parser.add_argument("--history-days", type=lambda v: tuple(int(x) for x in v.split(",")),
                        help="override N of the incremental cost (e.g. 1,30,365)")
    parser.add_argument("--cold", action="store_true",
                        help="runs in a fresh process each (a Kubernetes Job, RATATOUILLE_WARM_RUNS=0), not forked warm")
    parser.add_argument("--only-throughput", action="store_true",
                        help="only the throughput, fixed cost and largest-day part")
    parser.add_argument("--search-rows", type=lambda v: tuple(int(x) for x in v.split(",")),
                        help="order lines/day to try for the largest day under the RSS limit (e.g. 50000000)")
    parser.add_argument("--only-history", action="store_true", help="only the incremental cost (day N after N-1 days)")
    parser.add_argument("--maintain-every", type=int, metavar="DAYS",
                        help="maintain every table after each DAYS days of the history, and before each measured day")
    args = parser.parse_args(argv)
    plan = PLANS[args.scale]
    if args.rows:
        plan = dataclasses.replace(plan, rows_per_day=args.rows, search_rows=())
    if args.search_rows:
        plan = dataclasses.replace(plan, search_rows=args.search_rows)
    if args.cold:
        plan = dataclasses.replace(plan, warm=False)
    if args.reps:
        plan = dataclasses.replace(plan, reps=args.reps)
    if args.history_rows:
        plan = dataclasses.replace(plan, history_rows=args.history_rows)
    if args.history_days:
        plan = dataclasses.replace(plan, history_days=args.history_days)
    if args.backfill_days:
        plan = dataclasses.replace(plan, backfill_days=args.backfill_days)
    if args.maintain_every is not None:
        plan = dataclasses.replace(plan, maintain_every=args.maintain_every)
    if args.backfill_granularity:
        plan = dataclasses.replace(plan, backfill_granularity=args.backfill_granularity)
    started = time.perf_counter()

    def log(message: str) -> None:
        print(f"[{time.perf_counter() - started:6.0f}s] {message}", flush=True)

    args.work.mkdir(parents=True, exist_ok=True)
    models = compile_models(ROOT / "dbt_project", args.work)
    models_file = args.work / "models.json"
    save(models, models_file)
    results: dict = {"scale": args.scale, "date": dt.date.today().isoformat(), "machine": machine(),
                     "plan": dataclasses.asdict(plan), "throughput": []}

    if args.only_history:
        log(f"incremental cost: N = {', '.join(map(str, plan.history_days))} at {plan.history_rows:,} order lines/day"
            + (f", maintained every {plan.maintain_every} days" if plan.maintain_every else ", no maintenance"))
        results["incremental"] = incremental(args.work, models, plan, log)
        return _finish(args, results, started)

    if not args.only_backfill and not args.only_throughput:
        log(f"write-audit-publish on vs off: day 2 at {plan.tiny:,} order lines, {plan.reps} pairs")
        results["wap"] = wap_cost(args.work, plan, log)
        if args.only_wap:
            return _finish(args, results, started)

    if not args.only_throughput:
        log(f"history backfill: {plan.backfill_days} days x {plan.backfill_rows:,} order lines, landing -> gold")
        results["backfill"] = backfill_history(args.work, models_file, plan, log)
        if args.only_backfill:
            return _finish(args, results, started)

    for rows in sorted(set(plan.rows_per_day) | {plan.tiny}):
        log(f"throughput at {rows:,} order lines/day")
        results["throughput"].append(throughput(args.work, rows, models_file, plan, log))
    tiny = next(t for t in results["throughput"] if t["rows_per_day"] == plan.tiny)
    for t in results["throughput"]:
        if t is not tiny and t.get("ours_median_s") and tiny.get("ours_median_s") and t.get("raw_median_s"):
            extra_raw = t["raw_median_s"] - tiny["raw_median_s"]
            t["marginal_ratio"] = (t["ours_median_s"] - tiny["ours_median_s"]) / extra_raw if extra_raw > 0 else None
    if "ours_split_s" in tiny:
        results["fixed_overhead"] = {"rows_per_day": plan.tiny, "wall_s": tiny["ours_median_s"], "split_s": tiny["ours_split_s"]}

    done = [t for t in results["throughput"] if t.get("ours") and all(o["ok"] for o in t["ours"])]
    for rows in plan.search_rows:
        log(f"largest day: trying {rows:,} order lines/day")
        probe = throughput(args.work, rows, models_file, dataclasses.replace(plan, reps=1), log)
        if not all(o["ok"] for o in probe["ours"]):
            break
        done.append(probe)
    if done:
        big = max(done, key=lambda t: t["rows_per_day"])
        results["largest_day_under_limit"] = {"rows_per_day": big["rows_per_day"], "peak_rss_bytes": big["ours_peak_rss_bytes"],
                                              "searched_up_to": max([*plan.rows_per_day, *plan.search_rows])}

    if not args.no_history and not args.only_throughput:
        log(f"incremental cost: N = {', '.join(map(str, plan.history_days))} at {plan.history_rows:,} order lines/day")
        results["incremental"] = incremental(args.work, models, plan, log)
    return _finish(args, results, started)


def _finish(args, results: dict, started: float) -> int:
    results["seconds"] = time.perf_counter() - started
    args.out.mkdir(parents=True, exist_ok=True)
    overridden = (args.rows or args.reps or args.no_history or args.history_rows or args.history_days
                  or args.only_backfill or args.only_wap or args.backfill_days or args.backfill_granularity
                  or args.only_history or args.maintain_every is not None or args.only_throughput
                  or args.search_rows or args.cold)
    custom = f"-custom-{dt.datetime.now():%H%M%S}" if overridden else ""
    path = args.out / f"{results['date']}-{platform.node()}-{args.scale}{custom}.json"
    path.write_text(json.dumps(results, indent=2, default=str))
    print()
    print(report(results))
    print(f"\nresults: {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path} ({results['seconds'] / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
