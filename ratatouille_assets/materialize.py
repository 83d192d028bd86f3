"""``rat materialize``: days through bronze -> silver -> gold in this process, no server needed.

The same runs a backfill makes, recorded in DAGSTER_HOME (``make dev`` shows them): reference
sources once, partitioned bronze in one run over the whole range (one commit per table; or in
batches of ``RATATOUILLE_BRONZE_PARTITIONS_PER_RUN`` days if that is set; each day its own
partition, with its own row counts), then silver and gold in one run over the whole range (one
dbt invocation, as the dbt assets' single-run backfill policy does).

Over a long window (``PARALLEL_MIN_DAYS`` or more) the partitioned sources load side by side: one
run per source, the largest first, taken in turn by this process and by
``RATATOUILLE_BRONZE_WORKERS - 1`` worker processes (``python -m ratatouille_assets.materialize
--worker``: the same code, the same DAGSTER_HOME). Dagster's in-process executor runs a run's
steps one after another, and a source's load is mostly single-threaded Python and Arrow: two
sources at once use the second core. Each table still has one writer.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import datetime as dt
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import dagster as dg
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from ratatouille_assets.definitions import build_definitions
from ratatouille_assets.ingest.landing import local_bytes
from ratatouille_assets.ingest.sources import load_sources_file
from ratatouille_assets.layers import BRONZE, MODEL_LAYERS
from ratatouille_assets.settings import get_settings


# Bronze windows at least this long load their sources side by side (a worker process costs a
# few seconds to start, which a short window does not win back).
PARALLEL_MIN_DAYS = 30
_WORKER_REPLY = "@@ratatouille-worker "


class PartitionRangeError(ValueError):
    """Days outside the daily partitions; the message names the setting to change."""


@dataclasses.dataclass
class RunReport:
    days: list[str]
    runs: list[str]
    checks_passed: int
    checks_failed: int
    checks_warned: int
    seconds: dict[str, float]
    success: bool = True


def check_days(days: list[str], start: str, sources_file: str = "sources.yml") -> None:
    """Refuse days before the first partition or after the last complete one, saying what to change."""
    if not days:
        return
    if days[0] < start:
        raise PartitionRangeError(
            f"{days[0]} is before the first daily partition, {start} (partitions.start in {sources_file}). "
            f"Set partitions.start: {days[0]} there (reload the code location if `make dev` runs), then run again."
        )
    yesterday = (dt.date.today() - dt.timedelta(days=1)).isoformat()
    if days[-1] > yesterday:
        raise PartitionRangeError(
            f"{days[-1]} is not a partition yet: the last one is yesterday, {yesterday} (a day is a partition once it ends)."
        )


def day_range(start: str, end: str) -> list[str]:
    first, last = dt.date.fromisoformat(start), dt.date.fromisoformat(end)
    if last < first:
        raise ValueError(f"--to {end} is before --from {start}")
    return [(first + dt.timedelta(days=i)).isoformat() for i in range((last - first).days + 1)]


BRANCH_TAG = "ratatouille/branch"


def with_branch_tag(tags: dict[str, str] | None) -> dict[str, str] | None:
    """A run's tags plus the data branch it writes, in dev mode (the UI's runs list shows it)."""
    branch = get_settings().branch
    return {**(tags or {}), BRANCH_TAG: branch} if branch != "main" else tags


def run_pipeline(
    days: list[str],
    instance: dg.DagsterInstance | None = None,
    *,
    layers: tuple[str, ...] = (BRONZE, *MODEL_LAYERS),
    quiet: bool = True,
    raise_on_error: bool = True,
) -> RunReport:
    """Materialize ``layers`` for ``days`` (inclusive, sorted): reference sources once, daily bronze
    in batches, then the dbt layers over the whole window in one run."""
    settings = get_settings()
    check_days(days, load_sources_file(settings.sources_file).start, settings.sources_file.name)
    defs = build_definitions()
    instance = instance or dg.DagsterInstance.get()
    assets = list(defs.assets or [])
    resources = dict(defs.resources or {})
    graph = defs.resolve_asset_graph()
    runs, seconds, evaluations, success = [], {}, [], True
    checks: list[tuple[int, int, int]] = []  # passed, failed, warned of the runs made by workers
    run_config = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}} if quiet else None

    def run(label: str, keys: list[dg.AssetKey], tags: dict[str, str] | None = None) -> None:
        nonlocal success
        if not keys:
            return
        t0 = time.perf_counter()
        result = dg.materialize(
            assets, selection=keys, instance=instance, resources=resources, tags=with_branch_tag(tags),
            run_config=run_config, raise_on_error=raise_on_error,
        )
        seconds[label] = seconds.get(label, 0.0) + time.perf_counter() - t0
        success = success and result.success
        print(f"  {label:<12} {tags_label(tags)}  run {result.run_id[:8]}" + ("" if result.success else "  FAILED"), flush=True)
        runs.append(result.run_id)
        evaluations.extend(result.get_asset_check_evaluations())

    def keys_of(layer: str, partitioned: bool) -> list[dg.AssetKey]:
        return sorted(
            (k for k in graph.get_all_asset_keys()
             if graph.get(k).group_name == layer and graph.get(k).is_materializable
             and (graph.get(k).partitions_def is not None) == partitioned),
            key=lambda k: k.to_user_string(),
        )

    if BRONZE in layers:
        daily = keys_of(BRONZE, partitioned=True)
        workers = _worker_processes(settings, instance, daily, days)
        try:
            run("bronze", keys_of(BRONZE, partitioned=False))
            batch = settings.bronze_partitions_per_run if settings.bronze_partitions_per_run > 0 else max(1, len(days))
            for i in range(0, len(days), batch):
                chunk = days[i:i + batch]
                if not workers:
                    run("bronze", daily, _range(chunk[0], chunk[-1]))
                    continue
                before, t0 = seconds.get("bronze", 0.0), time.perf_counter()
                sides = _side_by_side(workers, _largest_first(settings, daily), _range(chunk[0], chunk[-1]),
                                      lambda key, tags: run("bronze", [key], tags))
                seconds["bronze"] = before + time.perf_counter() - t0  # wall time, not the runs' sum
                for side in sides:
                    success = success and side["success"]
                    if side["run_id"]:
                        runs.append(side["run_id"])
                    checks.append((side["passed"], side["failed"], side["warned"]))
                    print(f"  {'bronze':<12} {tags_label(side['tags'])}  run {side['run_id'][:8]} (worker)"
                          + ("" if side["success"] else "  FAILED"), flush=True)
                failed = [side for side in sides if not side["success"]]
                if failed and raise_on_error:
                    raise dg.DagsterError("bronze run(s) failed in a worker process:\n" + "\n".join(
                        f"{side['key']} (run {side['run_id'] or 'none'}): {side['error']}" for side in failed))
        finally:
            for worker_process in workers:
                worker_process.close()
    models = [layer for layer in layers if layer in MODEL_LAYERS]
    if models and not success:
        # As in one Dagster run: what is downstream of a failed step does not run.
        print(f"  {'+'.join(models):<12} skipped: a bronze run failed (see its log); run again once it passes",
              flush=True)
    elif models:
        daily = [k for layer in models for k in keys_of(layer, partitioned=True)] if days else []
        whole = [k for layer in models for k in keys_of(layer, partitioned=False)]
        label = "+".join(models)
        if daily:
            run(label, whole + daily, _range(days[0], days[-1]))
        else:
            run(label, whole)
    passed, failed, warned = _check_counts(evaluations)
    return RunReport(
        days=days,
        runs=runs,
        checks_passed=passed + sum(c[0] for c in checks),
        checks_failed=failed + sum(c[1] for c in checks),
        checks_warned=warned + sum(c[2] for c in checks),
        seconds=seconds,
        success=success,
    )


def _check_counts(evaluations) -> tuple[int, int, int]:
    return (
        sum(1 for e in evaluations if e.passed),
        sum(1 for e in evaluations if not e.passed and e.severity == dg.AssetCheckSeverity.ERROR),
        sum(1 for e in evaluations if not e.passed and e.severity == dg.AssetCheckSeverity.WARN),
    )


def _worker_processes(settings, instance: dg.DagsterInstance, daily: list[dg.AssetKey], days: list[str]) -> list:
    """Worker processes for a long bronze window of several sources, started now so that their
    imports overlap this process's first run; none when the window is short, there is one source,
    workers are off, or the instance is not DAGSTER_HOME's (a worker could not record its runs)."""
    home = os.environ.get("DAGSTER_HOME")
    wanted = min(settings.bronze_workers, len(daily)) - 1
    if wanted < 1 or len(days) < PARALLEL_MIN_DAYS or not home or not instance.is_persistent:
        return []
    if Path(instance.root_directory).resolve() != Path(home).resolve():
        return []
    return [_Worker() for _ in range(wanted)]


def _largest_first(settings, keys: list[dg.AssetKey]) -> list[dg.AssetKey]:
    sources = load_sources_file(settings.sources_file).sources
    size = {k: local_bytes(settings.landing, sources[k.path[-1]]) if k.path[-1] in sources else 0 for k in keys}
    return sorted(keys, key=lambda k: -size[k])  # stable: declared order among equals (and on S3)


def _side_by_side(workers: list, keys: list[dg.AssetKey], tags: dict[str, str], run_here) -> list[dict]:
    """Each of ``keys`` in its own run over ``tags``' range, taken in turn from one queue by this
    process (``run_here(key, tags)``, in the calling thread, as Dagster wants) and by each worker.
    Returns the workers' runs. A worker that dies fails the run it had and takes no more."""
    queue = collections.deque(keys)
    lock = threading.Lock()
    done: list[dict] = []

    def take() -> dg.AssetKey | None:
        with lock:
            return queue.popleft() if queue else None

    def feed(worker: _Worker) -> None:
        while (key := take()) is not None:
            side = worker.run(key, tags)
            with lock:
                done.append(side)
            if side.get("dead"):
                return

    threads = [threading.Thread(target=feed, args=(w,), name="bronze-worker", daemon=True) for w in workers]
    for thread in threads:
        thread.start()
    try:
        while (key := take()) is not None:
            run_here(key, tags)
    except BaseException:
        with lock:
            queue.clear()  # this side failed: the workers finish the run they have and stop
        raise
    finally:
        for thread in threads:
            thread.join()
    return done


class _Worker:
    """A ``python -m ratatouille_assets.materialize --worker`` process: one bronze run per request."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "ratatouille_assets.materialize", "--worker"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1,
        )

    def run(self, key: dg.AssetKey, tags: dict[str, str]) -> dict:
        request = {"key": key.to_user_string(), "tags": tags}
        base = {"key": request["key"], "tags": tags, "run_id": "", "success": False, "passed": 0, "failed": 0,
                "warned": 0, "seconds": 0.0, "error": ""}
        try:
            self.process.stdin.write(json.dumps(request) + "\n")
            self.process.stdin.flush()
            for line in self.process.stdout:
                if line.startswith(_WORKER_REPLY):
                    return {**base, **json.loads(line[len(_WORKER_REPLY):])}
                print(line, end="", flush=True)  # what the worker printed, passed on
        except OSError:  # a broken pipe: the worker is gone
            pass
        code = self.process.wait()
        return {**base, "dead": True, "error": f"the worker process exited with code {code} (its log is above)"}

    def close(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(OSError):
                self.process.stdin.close()
            try:
                self.process.wait(timeout=120)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _cause(error) -> str:
    """The innermost message of a step's error (Dagster wraps the user's exception)."""
    while error.cause is not None:
        error = error.cause
    return error.message.strip()


def worker(stdin=sys.stdin, stdout=sys.stdout) -> int:
    """The worker side of :class:`_Worker`: reads one request per line (an asset key and a
    partition range), materializes it in this process, answers one line; until stdin ends."""
    defs = build_definitions()
    instance = dg.DagsterInstance.get()
    assets, resources = list(defs.assets or []), dict(defs.resources or {})
    run_config = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
    for line in stdin:
        request = json.loads(line)
        t0 = time.perf_counter()
        result = dg.materialize(assets, selection=[dg.AssetKey.from_user_string(request["key"])], instance=instance,
                                resources=resources, tags=with_branch_tag(request["tags"]), run_config=run_config,
                                raise_on_error=False)
        passed, failed, warned = _check_counts(result.get_asset_check_evaluations())
        errors = [_cause(e.event_specific_data.error) for e in result.get_step_failure_events()
                  if e.event_specific_data and e.event_specific_data.error]
        reply = {"run_id": result.run_id, "success": result.success, "passed": passed, "failed": failed,
                 "warned": warned, "seconds": time.perf_counter() - t0, "error": "\n".join(errors)}
        stdout.write(_WORKER_REPLY + json.dumps(reply) + "\n")
        stdout.flush()
    return 0


def _range(start: str, end: str) -> dict[str, str]:
    return {ASSET_PARTITION_RANGE_START_TAG: start, ASSET_PARTITION_RANGE_END_TAG: end}


def tags_label(tags: dict[str, str] | None) -> str:
    if not tags:
        return "(whole)"
    start, end = tags[ASSET_PARTITION_RANGE_START_TAG], tags[ASSET_PARTITION_RANGE_END_TAG]
    return start if start == end else f"{start}..{end}"


def main(argv: list[str] | None = None) -> int:
    import argparse

    if argv is None and sys.argv[1:] == ["--worker"]:
        return worker()
    from ratatouille_assets.demo import ensure_dagster_home, summary

    parser = argparse.ArgumentParser(
        prog="rat materialize", description="days through bronze -> silver -> gold, in this process (no server)"
    )
    parser.add_argument("--from", dest="start", help="first day, YYYY-MM-DD (partitioned assets)")
    parser.add_argument("--to", dest="end", help="last day, YYYY-MM-DD, inclusive (default: --from)")
    parser.add_argument("--layers", default=",".join((BRONZE, *MODEL_LAYERS)), help="comma-separated (default: all)")
    args = parser.parse_args(argv)
    settings = get_settings()
    ensure_dagster_home(settings)
    days = day_range(args.start, args.end or args.start) if args.start else []
    try:
        report = run_pipeline(days, layers=tuple(args.layers.split(",")), raise_on_error=False)
    except PartitionRangeError as exc:
        print(f"error: {exc}")
        return 2
    print(summary(settings, report))
    return 0 if report.success and report.checks_failed == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
