"""One partition through the platform, as a scheduled run does it: the ``all_layers`` job
(bronze -> silver -> gold, Soda checks, dbt tests) executed in a fresh run-worker process; or a
range of days as a backfill makes it (``--to``: ``rat materialize``'s runs, in this process).

``python -m bench.ours --day D [--to E]`` (with ``RATATOUILLE_*`` and ``DAGSTER_HOME`` in the
environment) prints JSON: when imports finished, the definitions' build time, the run's wall
time, each step's duration and whether the run succeeded. ``RATATOUILLE_TRACE_FILE`` makes the
platform record its Iceberg writes, file reads, dbt models and Soda scans for the split.
"""

from __future__ import annotations

import time

_STARTED = time.time()

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
from pathlib import Path  # noqa: E402

import dagster as dg  # noqa: E402

from ratatouille_assets.definitions import build_definitions  # noqa: E402
from ratatouille_assets.demo import ensure_dagster_home  # noqa: E402
from ratatouille_assets.settings import get_settings  # noqa: E402


def dbt_test_seconds(project_dir: Path, run_id: str) -> float:
    """Time dbt spent executing data tests in this run (from each invocation's run_results.json)."""
    total = 0.0
    for path in (project_dir / "target").glob(f"*-{run_id[:7]}-*/run_results.json"):
        for result in json.loads(path.read_text())["results"]:
            if result["unique_id"].startswith("test."):
                total += result.get("execution_time") or 0.0
    return total


def overlap_seconds(intervals: list[tuple[float, float]]) -> float:
    """How long intervals ran side by side: their lengths' sum less the time covered by any."""
    covered, reach = 0.0, None
    for start, end in sorted(intervals):
        if reach is None or start > reach:
            covered += end - start
            reach = end
        elif end > reach:
            covered += end - reach
            reach = end
    return max(0.0, sum(end - start for start, end in intervals) - covered)


def step_seconds(instance: dg.DagsterInstance, run_id: str) -> tuple[dict[str, float], float]:
    """Each step's duration, and how long steps ran side by side."""
    stats = [s for s in instance.get_run_step_stats(run_id) if s.start_time and s.end_time]
    durations = {s.step_key: s.end_time - s.start_time for s in stats}
    return durations, overlap_seconds([(s.start_time, s.end_time) for s in stats])


def main(argv: list[str] | None = None) -> int:
    imported = time.time()
    parser = argparse.ArgumentParser(prog="python -m bench.ours")
    parser.add_argument("--day", required=True)
    parser.add_argument("--to", help="last day of a backfill from --day (inclusive)")
    parser.add_argument("--warm", action="store_true",
                        help="launch the run as the daemon does (dagster.yaml's run launcher: a fork of the warm "
                             "worker, started before the clock starts) instead of executing it in this process")
    args = parser.parse_args(argv)
    launched = float(os.environ.get("BENCH_LAUNCHED_AT", _STARTED))

    ensure_dagster_home(get_settings())
    if args.to:
        return backfill(args.day, args.to, imported - launched)
    if args.warm:
        return warm(args.day)
    t = time.perf_counter()
    defs = build_definitions()
    definitions_s = time.perf_counter() - t
    instance = dg.DagsterInstance.get()
    t = time.perf_counter()
    result = defs.resolve_job_def("all_layers").execute_in_process(
        partition_key=args.day, instance=instance, raise_on_error=False,
        run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}},
    )
    run_s = time.perf_counter() - t
    steps, overlap = step_seconds(instance, result.run_id)
    print(json.dumps({
        "dbt_tests_s": dbt_test_seconds(get_settings().dbt_project_dir, result.run_id),
        "ok": result.success,
        "run_id": result.run_id,
        "seconds": {"process_start": imported - launched, "definitions": definitions_s, "run": run_s},
        "steps": steps,
        "steps_overlap_s": overlap,
    }))
    return 0 if result.success else 1


def warm(day: str) -> int:
    """The day's ``all_layers`` run as a scheduled run starts under ``make dev``: created, then
    launched by the instance's run launcher (a fork of the warm worker, which is started and
    ready first: a daemon's worker is up from its first run on), timed from launch to the run's end."""
    from dagster._core.definitions.reconstruct import ReconstructableRepository

    from ratatouille_assets.defs.launcher import PID_TAG, WarmRunLauncher, _alive

    instance = dg.DagsterInstance.get()
    launcher = instance.run_launcher
    if not isinstance(launcher, WarmRunLauncher):
        raise SystemExit(f"the instance's run launcher is {type(launcher).__name__}, not WarmRunLauncher")
    t = time.perf_counter()
    launcher.warm_up()
    worker_start_s = time.perf_counter() - t
    repository = ReconstructableRepository.for_module("ratatouille_assets.definitions", "defs", os.getcwd())
    recon = repository.get_reconstructable_job("all_layers")
    t = time.perf_counter()
    job = recon.get_definition()
    definitions_s = time.perf_counter() - t
    started = time.perf_counter()
    run = instance.create_run_for_job(
        job_def=job, run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}},
        tags={"dagster/partition": day}, job_code_origin=recon.get_python_origin())
    instance.launch_run(run.run_id, None)
    # Wait for the run's process to exit (cheap to watch: polling the run storage every few ms
    # would take CPU and SQLite locks from the run it measures), then read its final status.
    pid = int(instance.get_run_by_id(run.run_id).tags[PID_TAG])
    while _alive(pid):
        time.sleep(0.01)
    run_s = time.perf_counter() - started
    while not (current := instance.get_run_by_id(run.run_id)).is_finished:  # written before the exit
        time.sleep(0.1)
    steps, overlap = step_seconds(instance, run.run_id)
    launcher.dispose()
    print(json.dumps({
        "dbt_tests_s": dbt_test_seconds(get_settings().dbt_project_dir, run.run_id),
        "ok": current.status == dg.DagsterRunStatus.SUCCESS,
        "run_id": run.run_id,
        "seconds": {"process_start": 0.0, "definitions": 0.0, "run": run_s},
        "not_timed_s": {"worker_start": worker_start_s, "definitions_here": definitions_s},
        "steps": steps,
        "steps_overlap_s": overlap,
    }))
    return 0 if current.status == dg.DagsterRunStatus.SUCCESS else 1


def backfill(start: str, end: str, process_start: float) -> int:
    """Days start..end through every layer the way ``rat materialize`` (and a backfill) runs them."""
    from ratatouille_assets.materialize import day_range, run_pipeline

    instance = dg.DagsterInstance.get()
    t = time.perf_counter()
    report = run_pipeline(day_range(start, end), instance=instance, raise_on_error=False)
    run_s = time.perf_counter() - t
    # No per-step stats here: reading back a long backfill's events (~11 s at 2,400 days) is the
    # bench's cost, not the platform's, and the history scenario does not report steps.
    print(json.dumps({
        "dbt_tests_s": sum(dbt_test_seconds(get_settings().dbt_project_dir, run) for run in report.runs),
        "ok": report.success and report.checks_failed == 0,
        "runs": report.runs,
        "checks": {"passed": report.checks_passed, "failed": report.checks_failed, "warned": report.checks_warned},
        "seconds": {"process_start": process_start, "run": run_s, **{f"run_{k}": v for k, v in report.seconds.items()}},
    }))
    return 0 if report.success else 1


if __name__ == "__main__":
    raise SystemExit(main())
