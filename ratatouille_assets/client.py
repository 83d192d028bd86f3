"""A small client for a running Ratatouille webserver (its GraphQL API), for the CLI and tests.

``rat backfill`` launches the same asset backfill the UI's "Materialize…" dialog does: the
daemon runs it with each asset's backfill policy (bronze in one run per range, dbt in one run).
Without dates it backfills what the landing zone holds that is not materialized yet; ``--wait``
shows progress; ``--cancel`` stops a backfill and terminates its runs.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import sys
import time
import urllib.error
import urllib.request
from typing import Any

from ratatouille_assets.layers import LAYERS

DEFAULT_URL = "http://127.0.0.1:3000"

_LAUNCH = """
mutation Launch($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message }
    ... on InvalidSubsetError { message }
    ... on UnauthorizedError { message }
    ... on PartitionSetNotFoundError { message }
  }
}
"""

_STATUS = """
query Status($id: String!) {
  partitionBackfillOrError(backfillId: $id) {
    __typename
    ... on PartitionBackfill {
      id status numCancelable runs(limit: 1000) { runId status }
      assetBackfillData {
        assetBackfillStatuses {
          __typename
          ... on AssetPartitionsStatusCounts {
            assetKey { path } numPartitionsTargeted numPartitionsInProgress numPartitionsMaterialized numPartitionsFailed
          }
          ... on UnpartitionedAssetStatus { assetKey { path } inProgress materialized failed }
        }
      }
    }
    ... on PythonError { message }
  }
}
"""

_RUN_ROWS = """
query RunRows($id: ID!) {
  runOrError(runId: $id) {
    ... on Run { assetMaterializations { assetKey { path } metadataEntries { label ... on IntMetadataEntry { intValue } } } }
  }
}
"""

_MATERIALIZED = """
{ assetNodes {
    assetKey { path } groupName isPartitioned
    assetPartitionStatuses {
      __typename
      ... on TimePartitionStatuses { ranges { startKey endKey status } }
      ... on DefaultPartitionStatuses { materializedPartitions }
    }
    assetMaterializations(limit: 1) { timestamp }
} }
"""

_RUNNING = """
{ partitionBackfillsOrError(status: REQUESTED, limit: 20) {
    __typename ... on PartitionBackfills { results { id title timestamp } } ... on PythonError { message } } }
"""

_CANCEL = """
mutation Cancel($id: String!) {
  cancelPartitionBackfill(backfillId: $id) {
    __typename ... on CancelBackfillSuccess { backfillId } ... on PythonError { message } ... on UnauthorizedError { message }
  }
}
"""

_TERMINATE = """
mutation Terminate($ids: [String!]!) {
  terminateRuns(runIds: $ids, terminatePolicy: MARK_AS_CANCELED_IMMEDIATELY) {
    __typename
    ... on TerminateRunsResult { terminateRunResults { __typename ... on TerminateRunFailure { message } } }
    ... on PythonError { message }
  }
}
"""
_UNFINISHED = ("QUEUED", "NOT_STARTED", "STARTING", "STARTED", "MANAGED", "CANCELING")


class ClientError(RuntimeError):
    """The webserver answered with an error (the message is the server's)."""


def graphql(url: str, query: str, variables: dict[str, Any] | None = None, timeout: float = 60) -> dict[str, Any]:
    body = json.dumps({"query": query, "variables": variables or {}}).encode()
    request = urllib.request.Request(url.rstrip("/") + "/graphql", data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            payload = json.loads(response.read())
    except urllib.error.HTTPError as exc:  # GraphQL errors come back as 4xx/5xx with a JSON body
        payload = json.loads(exc.read() or b"{}")
        if not payload.get("data") and not payload.get("errors"):
            raise ClientError(f"HTTP {exc.code} from {url}/graphql") from exc
    if payload.get("errors"):
        raise ClientError("; ".join(e.get("message", str(e)) for e in payload["errors"]))
    return payload["data"]


def layer_assets(url: str, layers: tuple[str, ...] = LAYERS) -> list[tuple[list[str], bool]]:
    """(asset key path, is partitioned) of every asset in the given layers."""
    data = graphql(url, "{ assetNodes { assetKey { path } groupName isPartitioned } }")
    return [(n["assetKey"]["path"], n["isPartitioned"]) for n in data["assetNodes"] if n["groupName"] in layers]


def launch_backfill(url: str, start: str, end: str, layers: tuple[str, ...] = LAYERS, title: str | None = None) -> str:
    """Backfill days ``start``..``end`` (inclusive) of every asset in ``layers``; returns the backfill id."""
    selection = layer_assets(url, layers)
    plan = {tuple(path): ((start, end) if partitioned else None) for path, partitioned in selection}
    return launch_plan(url, plan, title or f"{start}..{end} ({', '.join(layers)})", start)


def launch_plan(url: str, plan: dict[tuple[str, ...], tuple[str, str] | None], title: str, start: str | None = None) -> str:
    """Backfill each asset of ``plan`` over its own range of days (None: an unpartitioned asset, once)."""
    params = {
        "partitionsByAssets": [
            {"assetKey": {"path": list(path)}, "partitions": {"range": {"start": r[0], "end": r[1]}} if r else None}
            for path, r in plan.items()
        ],
        "title": title,
    }
    start = start or min((r[0] for r in plan.values() if r), default="")
    try:
        result = graphql(url, _LAUNCH, {"params": params})["launchPartitionBackfill"]
    except ClientError as exc:
        raise ClientError(_partition_hint(str(exc), start, url)) from exc
    if result["__typename"] != "LaunchBackfillSuccess":
        raise ClientError(_partition_hint(f"{result['__typename']}: {result.get('message')}", start, url))
    return result["backfillId"]


def _partition_hint(message: str, start: str, url: str) -> str:
    """Dagster's partition-range error, with the setting that fixes it."""
    if "before the partitions definition start time" not in message:
        return message
    first_line = next((line.strip() for line in message.splitlines() if "start time" in line), message)
    return (
        f"{start} is before the first daily partition of the code location at {url}: set partitions.start in "
        f"sources.yml to {start} or earlier, reload the code location (UI: Deployment -> Reload; no restart "
        f"needed), then launch again. (Dagster: {first_line})"
    )


def materialized(url: str, layers: tuple[str, ...] = LAYERS) -> dict[tuple[str, ...], "Materialized"]:
    """What each asset of ``layers`` has materialized: its days (partitioned) or whether it ever was."""
    out = {}
    for node in graphql(url, _MATERIALIZED)["assetNodes"]:
        if node["groupName"] not in layers:
            continue
        days: set[str] = set()
        statuses = node.get("assetPartitionStatuses") or {}
        for r in statuses.get("ranges") or []:
            if r["status"] == "MATERIALIZED":
                days |= set(_days(r["startKey"], r["endKey"]))
        days |= set(statuses.get("materializedPartitions") or [])
        out[tuple(node["assetKey"]["path"])] = Materialized(
            partitioned=node["isPartitioned"], days=frozenset(days), ever=bool(node["assetMaterializations"]) or bool(days),
        )
    return out


@dataclasses.dataclass(frozen=True)
class Materialized:
    partitioned: bool
    days: frozenset[str]
    ever: bool


def _days(start: str, end: str) -> list[str]:
    first, last = dt.date.fromisoformat(start), dt.date.fromisoformat(end)
    return [(first + dt.timedelta(days=i)).isoformat() for i in range((last - first).days + 1)]


def plan_missing(
    landing_days: dict[str, set[str] | None], state: dict[tuple[str, ...], Materialized], valid: tuple[str, str],
    bronze: str = "bronze",
) -> dict[tuple[str, ...], tuple[str, str] | None]:
    """What a backfill without dates covers: per source, its landing days not materialized yet (as
    one range, first..last: days in between that are loaded are reloaded, which is idempotent); a
    reference source (``None`` in ``landing_days``) if it has files and was never loaded; the
    models over the union of those ranges, their unpartitioned ones once. ``valid`` is the first
    and last day that are partitions."""
    plan: dict[tuple[str, ...], tuple[str, str] | None] = {}
    for source, days in landing_days.items():
        key = (bronze, source)
        if key not in state:
            continue
        if days is None:
            if not state[key].ever:
                plan[key] = None
            continue
        missing = sorted(d for d in days if valid[0] <= d <= valid[1] and d not in state[key].days)
        if missing:
            plan[key] = (missing[0], missing[-1])
    ranges = [r for r in plan.values() if r]
    if not plan:
        return {}
    for key, s in state.items():
        if key[0] == bronze:
            continue
        if s.partitioned and ranges:
            plan[key] = (min(r[0] for r in ranges), max(r[1] for r in ranges))
        elif not s.partitioned:
            plan[key] = None
    return plan


def landing_days(settings) -> dict[str, set[str] | None]:
    """Per source, the days its landing folder holds (None for a reference source with files)."""
    from ratatouille_assets.ingest.landing import landing_zone
    from ratatouille_assets.ingest.sources import load_sources

    zone = landing_zone(settings.landing, settings)
    out: dict[str, set[str] | None] = {}
    for source in load_sources(settings.sources_file).values():
        files = list(zone.files(source))
        if source.partitioned:
            out[source.name] = {f.day for f in files if f.day}
        elif files:
            out[source.name] = None
    return out


def running_backfills(url: str) -> list[dict[str, Any]]:
    result = graphql(url, _RUNNING)["partitionBackfillsOrError"]
    if result["__typename"] != "PartitionBackfills":
        raise ClientError(result.get("message", result["__typename"]))
    return result["results"]


def cancel_backfill(url: str, backfill_id: str, timeout: float = 300) -> dict[str, Any]:
    """Cancel the backfill (no new runs) and terminate the runs it has queued or started; returns
    its final status once nothing of it runs any more."""
    result = graphql(url, _CANCEL, {"id": backfill_id})["cancelPartitionBackfill"]
    if result["__typename"] != "CancelBackfillSuccess":
        raise ClientError(result.get("message", result["__typename"]))
    deadline = time.monotonic() + timeout
    while True:
        status = backfill_status(url, backfill_id)
        unfinished = [r["runId"] for r in status["runs"] if r["status"] in _UNFINISHED]
        if unfinished:
            graphql(url, _TERMINATE, {"ids": unfinished})
        elif status["status"] not in ("REQUESTED", "CANCELING"):
            return status
        if time.monotonic() > deadline:
            raise TimeoutError(f"backfill {backfill_id} still {status['status']} with runs {unfinished} after {timeout:.0f}s")
        time.sleep(2)


@dataclasses.dataclass
class Progress:
    """Partitions done of a backfill's targets, with rows loaded into bronze, elapsed time and ETA."""

    done: int
    total: int
    in_progress: int
    failed: int
    rows: int
    elapsed_s: float

    @property
    def eta_s(self) -> float | None:
        if not self.done or self.done >= self.total:
            return None
        return self.elapsed_s / self.done * (self.total - self.done)

    def line(self) -> str:
        pct = 100 * self.done / self.total if self.total else 100.0
        eta = f", ETA {_clock(self.eta_s)}" if self.eta_s is not None else ""
        failed = f", {self.failed} failed" if self.failed else ""
        return (f"{self.done:,}/{self.total:,} partitions ({pct:.0f}%), {self.in_progress:,} in progress{failed}, "
                f"{self.rows:,} rows into bronze, {_clock(self.elapsed_s)} elapsed{eta}")


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


def progress(url: str, status: dict[str, Any], started: float, rows_cache: dict[str, int]) -> Progress:
    done = total = in_progress = failed = 0
    for s in (status.get("assetBackfillData") or {}).get("assetBackfillStatuses") or []:
        if s["__typename"] == "AssetPartitionsStatusCounts":
            total += s["numPartitionsTargeted"]
            done += s["numPartitionsMaterialized"]
            in_progress += s["numPartitionsInProgress"]
            failed += s["numPartitionsFailed"]
        else:
            total += 1
            done += int(s["materialized"])
            in_progress += int(s["inProgress"])
            failed += int(s["failed"])
    for run in status["runs"]:
        if run["status"] == "SUCCESS" and run["runId"] not in rows_cache:
            rows_cache[run["runId"]] = _bronze_rows(url, run["runId"])
    return Progress(done, total, in_progress, failed, sum(rows_cache.values()), time.monotonic() - started)


def _bronze_rows(url: str, run_id: str) -> int:
    run = graphql(url, _RUN_ROWS, {"id": run_id})["runOrError"]
    rows = 0
    for m in run.get("assetMaterializations") or []:
        if m["assetKey"]["path"][0] != "bronze":
            continue
        # A run over many days has one materialization per day, each with that day's rows.
        for entry in m["metadataEntries"]:
            if entry["label"] == "dagster/row_count" and entry.get("intValue") is not None:
                rows += entry["intValue"]
                break
    return rows


def backfill_status(url: str, backfill_id: str) -> dict[str, Any]:
    result = graphql(url, _STATUS, {"id": backfill_id})["partitionBackfillOrError"]
    if result["__typename"] != "PartitionBackfill":
        raise ClientError(result.get("message", result["__typename"]))
    return result


def wait_for_backfill(
    url: str, backfill_id: str, timeout: float = 1800, interval: float = 3, report=None,
) -> dict[str, Any]:
    """Poll until the backfill leaves REQUESTED (COMPLETED, FAILED, CANCELED...); ``report`` gets a
    :class:`Progress` whenever it changes."""
    deadline = time.monotonic() + timeout
    started, rows_cache, last = time.monotonic(), {}, None
    while True:
        status = backfill_status(url, backfill_id)
        if report is not None:
            now = progress(url, status, started, rows_cache)
            if last is None or (now.done, now.in_progress, now.failed, now.rows) != last:
                report(now)
                last = (now.done, now.in_progress, now.failed, now.rows)
        if status["status"] not in ("REQUESTED", "CANCELING"):
            return status
        if time.monotonic() > deadline:
            raise TimeoutError(f"backfill {backfill_id} still {status['status']} after {timeout:.0f}s")
        time.sleep(interval)


def _describe(plan: dict[tuple[str, ...], tuple[str, str] | None]) -> str:
    lines = []
    for key, r in sorted(plan.items()):
        span = "once (unpartitioned)" if r is None else f"{r[0]}..{r[1]} ({len(_days(*r)):,} days)"
        lines.append(f"  {'/'.join(key):<32} {span}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(
        prog="rat backfill",
        description="backfill days through bronze -> silver -> gold on the running webserver. Without --from/--to: "
                    "whatever the landing zone holds that is not materialized yet, per source.",
    )
    parser.add_argument("--from", dest="start", help="first day, YYYY-MM-DD (with --to)")
    parser.add_argument("--to", dest="end", help="last day, YYYY-MM-DD (inclusive)")
    parser.add_argument("--url", default=DEFAULT_URL, help=f"the running webserver (default {DEFAULT_URL}, `make dev`)")
    parser.add_argument("--layers", default=",".join(LAYERS), help="comma-separated layers (default: all)")
    parser.add_argument("--wait", action="store_true", help="wait until the backfill is done, showing progress")
    parser.add_argument("--cancel", nargs="?", const="running", metavar="BACKFILL_ID",
                        help="cancel a backfill and terminate its runs (default: every running backfill)")
    args = parser.parse_args(argv)
    layers = tuple(args.layers.split(","))
    try:
        if args.cancel:
            return _cancel(args.url, args.cancel)
        if bool(args.start) != bool(args.end):
            parser.error("give both --from and --to, or neither (then: what landing holds that is not materialized)")
        if args.start:
            backfill_id = launch_backfill(args.url, args.start, args.end, layers)
        else:
            plan = _missing_plan(args.url, layers)
            if not plan:
                print("nothing to backfill: every landing day of every source is materialized")
                return 0
            print("backfilling what landing holds that is not materialized yet:\n" + _describe(plan))
            backfill_id = launch_plan(args.url, plan, "landing days not materialized yet")
    except ClientError as exc:
        print(f"error: {exc}")
        return 2
    print(f"backfill {backfill_id} launched: {args.url}/runs/b/{backfill_id}   (stop it: rat backfill --cancel {backfill_id})")
    if not args.wait:
        return 0
    status = wait_for_backfill(args.url, backfill_id, interval=5,
                               report=lambda p: print(f"[{time.strftime('%H:%M:%S')}] {p.line()}", flush=True))
    failed = [r["runId"] for r in status["runs"] if r["status"] != "SUCCESS"]
    print(f"backfill {backfill_id}: {status['status']}, {len(status['runs'])} runs" + (f", not successful: {failed}" if failed else ""))
    return 0 if status["status"] == "COMPLETED_SUCCESS" or (status["status"].startswith("COMPLETED") and not failed) else 1


def _missing_plan(url: str, layers: tuple[str, ...]) -> dict[tuple[str, ...], tuple[str, str] | None]:
    from ratatouille_assets.ingest.sources import load_sources_file
    from ratatouille_assets.settings import get_settings

    settings = get_settings()
    start = load_sources_file(settings.sources_file).start
    yesterday = (dt.date.today() - dt.timedelta(days=1)).isoformat()
    return plan_missing(landing_days(settings), materialized(url, layers), (start, yesterday))


def _cancel(url: str, which: str) -> int:
    ids = [b["id"] for b in running_backfills(url)] if which == "running" else [which]
    if not ids:
        print("no backfill is running")
        return 0
    for backfill_id in ids:
        status = cancel_backfill(url, backfill_id)
        runs = status["runs"]
        print(f"backfill {backfill_id}: {status['status']}; {sum(r['status'] == 'SUCCESS' for r in runs)} runs had "
              f"succeeded, {sum(r['status'] == 'CANCELED' for r in runs)} canceled", file=sys.stdout)
    return 0
