"""``make dev`` as a test fixture: the real webserver, daemon and code server on one lakehouse home.

Tests that need the UI or the GraphQL API start :class:`DagsterDev` the way a user starts it (through
``python -m ratatouille_assets.devserver``), wait until the ``ratatouille`` code location has
loaded, and stop it with SIGINT the way Ctrl-C does. Everything it starts lives in one process
group, so stopping can check that nothing is left behind. The server's output goes to
``test-artifacts/`` for when a test fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, Self, TypeVar

from ratatouille_assets.demo import PROJECT_ROOT

ARTIFACTS = PROJECT_ROOT / "test-artifacts"
T = TypeVar("T")

WORKSPACE_QUERY = """
{
  workspaceOrError {
    __typename
    ... on PythonError { message }
    ... on Workspace {
      locationEntries {
        name
        loadStatus
        locationOrLoadError { __typename ... on PythonError { message stack } }
      }
    }
  }
}
"""


class GraphQLError(RuntimeError):
    """The webserver answered, with ``errors`` instead of (or beside) ``data``."""


def free_port() -> int:
    """A port nothing listens on now: the kernel's pick for port 0 (free again once closed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def process_group_members(pgid: int) -> list[str]:
    """Live (non-zombie) processes in ``pgid``, as ``"pid command"``: what a stop left behind."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
            cmdline = (stat.parent / "cmdline").read_bytes()
        except OSError:  # exited while we looked
            continue
        # "pid (comm) state ppid pgrp ...": comm may contain spaces and parentheses.
        state, _ppid, pgrp = text[text.rindex(")") + 2:].split()[:3]
        if int(pgrp) == pgid and state != "Z":
            command = cmdline.replace(b"\0", b" ").decode(errors="replace")
            members.append(f"{stat.parent.name} {command[:200]}")
    return members


class DagsterDev:
    """``dagster dev`` on ``home`` (RATATOUILLE_HOME; DAGSTER_HOME is ``home/dagster``).

    ``start()`` returns once the code location is loaded; ``stop()`` (also on leaving a ``with``
    block) interrupts it like Ctrl-C and asserts that no process of it survives.
    """

    def __init__(self, home: Path, *, location: str = "ratatouille", log_name: str = "dagster-dev") -> None:
        self.home = home
        self.location = location
        self.host = "127.0.0.1"
        self.port = free_port()
        self.log_path = ARTIFACTS / f"{log_name}.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def env(self) -> dict[str, str]:
        """The test suite's lakehouse settings (small DuckDB limits: CI has two cores)."""
        return {
            **os.environ,
            "RATATOUILLE_HOME": str(self.home),
            "DAGSTER_HOME": str(self.home / "dagster"),
            "RATATOUILLE_DUCKDB_THREADS": "2",
            "RATATOUILLE_DUCKDB_MEMORY_LIMIT": "2GB",
            # The daily maintenance schedule would add a run if a test crossed its hour.
            "RATATOUILLE_MAINTENANCE_ENABLED": "false",
        }

    def start(self, timeout: float = 120) -> Self:
        """Start the server in its own process group; wait until the code location has loaded."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "ratatouille_assets.devserver", "--host", self.host, "--port", str(self.port)],
                cwd=PROJECT_ROOT, env=self.env(), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                process_group=0,
            )
        try:
            self.wait_for(self._location_loaded, timeout=timeout, interval=1,
                          what=f"code location {self.location!r} to load on {self.url}")
        except BaseException:
            self.stop()
            raise
        return self

    def _location_loaded(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/server_info", timeout=5):
                pass
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False  # the webserver is not listening yet
        workspace = self.graphql(WORKSPACE_QUERY)["workspaceOrError"]
        if workspace["__typename"] == "PythonError":
            raise GraphQLError(f"workspace failed to load: {workspace['message']}")
        entry = next((e for e in workspace["locationEntries"] if e["name"] == self.location), None)
        if entry is None or entry["loadStatus"] != "LOADED":
            return False
        loaded = entry["locationOrLoadError"]
        if loaded and loaded["__typename"] == "PythonError":
            raise GraphQLError(f"code location {self.location!r} failed to load:\n{loaded['message']}\n{''.join(loaded['stack'])}")
        return True

    def graphql(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        """POST to ``/graphql``; the ``data``, or :class:`GraphQLError` if the answer carries errors."""
        request = urllib.request.Request(
            f"{self.url}/graphql",
            data=json.dumps({"query": query, "variables": variables or {}}).encode(),
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                body = json.load(response)
        except urllib.error.HTTPError as e:  # a query error is a 400 with the errors in the body
            raise GraphQLError(f"HTTP {e.code} from /graphql: {e.read().decode(errors='replace')[:2000]}") from e
        if body.get("errors"):
            raise GraphQLError(json.dumps(body["errors"], indent=2))
        return body["data"]

    def wait_for(self, predicate: Callable[[], T], timeout: float = 30, interval: float = 0.5, what: str = "") -> T:
        """Poll ``predicate`` until it returns something truthy, and return that.

        Fails early, with the end of the server log, if the server exits meanwhile: a crashed
        server would otherwise look like a slow one until the timeout.
        """
        deadline = time.monotonic() + timeout
        while True:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"dagster dev exited with {self.process.returncode} while waiting for "
                                   f"{what or predicate}; log {self.log_path}:\n{self.log_tail()}")
            if result := predicate():
                return result
            if time.monotonic() > deadline:
                raise TimeoutError(f"gave up after {timeout:.0f}s waiting for {what or predicate}; "
                                   f"log {self.log_path}:\n{self.log_tail()}")
            time.sleep(interval)

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, timeout: float = 150) -> None:
        """SIGINT the whole group (what Ctrl-C does), SIGKILL it after ``timeout``; assert it is gone."""
        if self.process is None:
            return
        process, self.process = self.process, None
        pgid = process.pid  # process_group=0: the group is named after the server's pid
        with contextlib.suppress(ProcessLookupError):  # already gone (it crashed): still reap and check
            os.killpg(pgid, signal.SIGINT)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(pgid, signal.SIGKILL)
            process.wait()
            raise AssertionError(f"dagster dev ignored SIGINT for {timeout:.0f}s and was killed; log {self.log_path}")
        # dagster.yaml makes it wait for its code servers; their own children (the gRPC server, a
        # multiprocessing resource tracker) follow them. A child that outlives the code server's
        # heartbeat timeout (45 s, after which it exits on its own) is a leak: kill and report it.
        deadline = time.monotonic() + 60
        while (survivors := process_group_members(pgid)) and time.monotonic() < deadline:
            time.sleep(0.2)
        if survivors:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
            raise AssertionError("processes survived dagster dev's shutdown (killed now):\n" + "\n".join(survivors))

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
