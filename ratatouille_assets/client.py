"""A small client for a running Ratatouille webserver (its GraphQL API), for the CLI and tests.

``rat backfill`` launches the same asset backfill the UI's "Materialize…" dialog does: the
daemon runs it with each asset's backfill policy (bronze in parallel batches, dbt in one run).
"""

from __future__ import annotations

import json
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
    ... on PartitionBackfill { id status numCancelable runs(limit: 1000) { runId status } }
    ... on PythonError { message }
  }
}
"""


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
    params = {
        "partitionsByAssets": [
            {"assetKey": {"path": path}, "partitions": {"range": {"start": start, "end": end}} if partitioned else None}
            for path, partitioned in selection
        ],
        "title": title or f"{start}..{end} ({', '.join(layers)})",
    }
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


def backfill_status(url: str, backfill_id: str) -> dict[str, Any]:
    result = graphql(url, _STATUS, {"id": backfill_id})["partitionBackfillOrError"]
    if result["__typename"] != "PartitionBackfill":
        raise ClientError(result.get("message", result["__typename"]))
    return result


def wait_for_backfill(url: str, backfill_id: str, timeout: float = 1800, interval: float = 3) -> dict[str, Any]:
    """Poll until the backfill leaves REQUESTED (COMPLETED, FAILED, CANCELED...)."""
    deadline = time.monotonic() + timeout
    while True:
        status = backfill_status(url, backfill_id)
        if status["status"] not in ("REQUESTED", "CANCELING"):
            return status
        if time.monotonic() > deadline:
            raise TimeoutError(f"backfill {backfill_id} still {status['status']} after {timeout:.0f}s")
        time.sleep(interval)


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="rat backfill", description="backfill days through bronze -> silver -> gold")
    parser.add_argument("--from", dest="start", required=True, help="first day, YYYY-MM-DD")
    parser.add_argument("--to", dest="end", required=True, help="last day, YYYY-MM-DD (inclusive)")
    parser.add_argument("--url", default=DEFAULT_URL, help=f"the running webserver (default {DEFAULT_URL}, `make dev`)")
    parser.add_argument("--layers", default=",".join(LAYERS), help="comma-separated layers (default: all)")
    parser.add_argument("--wait", action="store_true", help="wait until the backfill is done")
    args = parser.parse_args(argv)
    try:
        backfill_id = launch_backfill(args.url, args.start, args.end, tuple(args.layers.split(",")))
    except ClientError as exc:
        print(f"error: {exc}")
        return 2
    print(f"backfill {backfill_id} launched: {args.url}/runs/b/{backfill_id}")
    if not args.wait:
        return 0
    status = wait_for_backfill(args.url, backfill_id)
    failed = [r["runId"] for r in status["runs"] if r["status"] != "SUCCESS"]
    print(f"backfill {backfill_id}: {status['status']}, {len(status['runs'])} runs" + (f", not successful: {failed}" if failed else ""))
    return 0 if status["status"] == "COMPLETED_SUCCESS" or (status["status"].startswith("COMPLETED") and not failed) else 1
