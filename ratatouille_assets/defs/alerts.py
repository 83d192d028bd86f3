"""Run-failure alerts: a JSON-lines record under the lakehouse home, and an optional webhook.

The webhook URL comes from the environment only (RATATOUILLE_ALERT_WEBHOOK_URL) and is never
logged: it often embeds a token.
"""

import datetime as dt
import json
import os
import time
import urllib.error
import urllib.request

from ratatouille_assets.settings import Settings

WEBHOOK_ENV = "RATATOUILLE_ALERT_WEBHOOK_URL"


def failures_log(settings: Settings) -> str:
    return os.path.join(str(settings.home), "alerts", "run_failures.jsonl")


def post_json(url: str, payload: dict, *, attempts: int = 3, timeout: float = 10.0) -> int:
    """POST ``payload``; retried on network errors and 5xx with a short backoff. Returns the status."""
    body = json.dumps(payload).encode()
    last: Exception | None = None
    for attempt in range(attempts):
        request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"}, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.status
        except urllib.error.HTTPError as exc:
            if exc.code < 500:
                return exc.code
            last = exc
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            last = exc
        time.sleep(0.5 * 2**attempt)
    raise ConnectionError(f"webhook unreachable after {attempts} attempts: {type(last).__name__}")


def record_failure(
    settings: Settings, *, run_id: str, job: str, partition: str | None, message: str, steps: list[str]
) -> str:
    """Append the failure to the alerts log and post it to the webhook; returns a line for the sensor log."""
    payload = {
        "event": "run_failed",
        "run_id": run_id,
        "job": job,
        "partition": partition,
        "failed_steps": steps,
        "message": message[:2000],
        "at": dt.datetime.now(dt.UTC).isoformat(),
    }
    path = failures_log(settings)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps(payload) + "\n")
    url = os.environ.get(WEBHOOK_ENV)
    if not url:
        return f"recorded failure of run {run_id} ({WEBHOOK_ENV} not set: no webhook)"
    try:
        status = post_json(url, payload)
    except ConnectionError as exc:
        return f"recorded failure of run {run_id}; webhook failed: {exc}"
    return f"recorded failure of run {run_id}; webhook answered {status}"
