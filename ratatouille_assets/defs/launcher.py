"""The embedded default's run launcher: runs start from a warm worker instead of a fresh interpreter.

Dagster's ``DefaultRunLauncher`` asks the code server to start a run, and the code server spawns a
new Python process for it, which imports Dagster, dbt, pyiceberg and Soda, builds the definitions
and parses the dbt project before the first step (~4 s of a small day's ~11 s run, ``make bench``).
This launcher keeps one warm worker (:mod:`ratatouille_assets.defs.warm`) per launching process
(the daemon's run queue, in practice) and has it fork each run: the same ``dagster api execute_run``
code, started with everything loaded.

- The worker starts on the first launch (that launch waits for it, as a run worker's imports
  were waited for before) and exits with the process that started it.
- A launch for code that changed since the worker loaded it (the worker compares
  :func:`~ratatouille_assets.defs.warm.code_fingerprint`) restarts the worker first.
- If the worker cannot be had, the run starts as a fresh ``dagster api execute_run`` process
  (``RATATOUILLE_WARM_RUNS=0`` always does that), and the run's event log says so.
- ``terminate`` interrupts the run process (SIGINT, as Dagster's own run workers are interrupted);
  run monitoring asks :meth:`check_run_worker_health`, so a run whose process died (OOM, kill -9)
  is marked failed instead of staying started.

Runs execute in the launching process's Python environment and host: this is for the embedded
default (``make dev``, one machine). The server stack keeps Dagster's launcher (runs in the code
location's container) and the chart a Kubernetes Job per run.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import dagster as dg
from dagster._core.launcher import CheckRunHealthResult, LaunchRunContext, RunLauncher, WorkerStatus
from dagster._grpc.types import ExecuteRunArgs
from dagster._serdes import ConfigurableClass, ConfigurableClassData, serialize_value

from ratatouille_assets.defs.warm import code_fingerprint, read_line
from ratatouille_assets.settings import get_settings

PID_TAG = "ratatouille/run-worker-pid"
HOST_TAG = "ratatouille/run-worker-host"
# How long a launch waits for a starting worker (imports and the dbt parse; slower on a loaded machine).
STARTUP_TIMEOUT_SECONDS = 300.0
# After the worker could not be had, runs start in fresh processes this long before it is tried again.
RETRY_AFTER_SECONDS = 300


class WarmRunLauncher(RunLauncher, ConfigurableClass):
    """Launch each run as a fork of a warm worker process (see the module's docstring)."""

    def __init__(self, inst_data: ConfigurableClassData | None = None):
        self._inst_data = inst_data
        self._warm = get_settings().warm_runs  # RATATOUILLE_WARM_RUNS: the one switch
        self._lock = threading.Lock()
        self._worker: subprocess.Popen | None = None
        self._socket = os.path.join(tempfile.gettempdir(), f"ratatouille-warm-{os.getpid()}-{id(self):x}.sock")
        self._cold: list[subprocess.Popen] = []
        self._retry_after = 0.0  # after a worker failed to start, runs start fresh until then
        super().__init__()

    @property
    def inst_data(self) -> ConfigurableClassData | None:
        return self._inst_data

    @classmethod
    def config_type(cls) -> dict:
        return {}

    @classmethod
    def from_config_value(cls, inst_data: ConfigurableClassData, config_value: dict) -> WarmRunLauncher:
        return cls(inst_data=inst_data, **config_value)

    def launch_run(self, context: LaunchRunContext) -> None:
        run = context.dagster_run
        input_json = serialize_value(ExecuteRunArgs(
            job_origin=run.job_code_origin, run_id=run.run_id, instance_ref=self._instance.get_ref(),
            set_exit_code_on_failure=True,
        ))
        how, pid = "a fresh process", None
        if self._warm and time.monotonic() >= self._retry_after:
            try:
                pid = self._fork(input_json)
                how = "a fork of the warm run worker"
            except (OSError, RuntimeError, ValueError) as exc:
                self._retry_after = time.monotonic() + RETRY_AFTER_SECONDS
                self._instance.report_engine_event(
                    f"The warm run worker is not available ({exc}); starting the run in a fresh process "
                    f"(the next {RETRY_AFTER_SECONDS // 60} minutes' runs too).", run, cls=self.__class__)
        if pid is None:
            pid = self._spawn(input_json)
        self._instance.add_run_tags(run.run_id, {PID_TAG: str(pid), HOST_TAG: socket.gethostname()})
        self._instance.report_engine_event(f"Run started in {how} (pid {pid}).", run, cls=self.__class__)

    def warm_up(self) -> None:
        """Start the warm worker now, so the next launch does not wait for it (no-op if disabled)."""
        if self._warm:
            with self._lock:
                self._ensure_worker()

    def _fork(self, input_json: str) -> int:
        fingerprint = code_fingerprint()
        with self._lock:
            for _ in range(2):  # a worker for older code answers "stale" and exits: start another once
                self._ensure_worker()
                reply = self._ask({"input_json": input_json, "fingerprint": fingerprint})
                if "pid" in reply:
                    return int(reply["pid"])
                self._stop_worker()
        raise RuntimeError("the warm worker kept answering that the code changed")

    def _ensure_worker(self) -> None:
        if self._worker is not None and self._worker.poll() is None and os.path.exists(self._socket):
            return
        self._stop_worker()
        try:
            os.unlink(self._socket)  # left by a worker that was killed: not the new one's
        except FileNotFoundError:
            pass
        self._worker = subprocess.Popen(
            [sys.executable, "-m", "ratatouille_assets.defs.warm", "--socket", self._socket],
            stdin=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
        while not os.path.exists(self._socket):
            if self._worker.poll() is not None:
                raise RuntimeError(f"the warm worker exited while starting (exit code {self._worker.returncode})")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the warm worker did not start within {STARTUP_TIMEOUT_SECONDS:.0f} s")
            time.sleep(0.05)

    def _ask(self, request: dict) -> dict:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(60)
            conn.connect(self._socket)
            conn.sendall(json.dumps(request).encode() + b"\n")
            data = read_line(conn)
        if not data:
            raise RuntimeError("the warm worker closed the connection without an answer")
        return json.loads(data)

    def _stop_worker(self) -> None:
        worker, self._worker = self._worker, None
        if worker is not None and worker.poll() is None:
            worker.terminate()
            try:
                worker.wait(10)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()

    def _spawn(self, input_json: str) -> int:
        """A fresh ``dagster api execute_run`` process, as Dagster's launchers start one."""
        self._cold = [p for p in self._cold if p.poll() is None]
        # As ExecuteRunArgs.get_command_args, with this interpreter (its `dagster` may not be on PATH).
        process = subprocess.Popen([sys.executable, "-m", "dagster", "api", "execute_run", input_json],
                                   stdin=subprocess.DEVNULL)
        self._cold.append(process)
        return process.pid

    def terminate(self, run_id: str) -> bool:
        run = self._instance.get_run_by_id(run_id)
        if not run or run.is_finished:
            return False
        self._instance.report_run_canceling(run)
        pid = _pid_of(run)
        if pid is None or not _alive(pid):
            return False
        os.kill(pid, signal.SIGINT)  # Dagster's interrupt: the run stops at the next step boundary, canceled
        return True

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: dg.DagsterRun) -> CheckRunHealthResult:
        pid = _pid_of(run)
        if pid is None:
            return CheckRunHealthResult(WorkerStatus.UNKNOWN, "no run worker pid recorded")
        if run.tags.get(HOST_TAG) not in (None, socket.gethostname()):
            return CheckRunHealthResult(WorkerStatus.UNKNOWN, f"the run worker is on {run.tags[HOST_TAG]}")
        if _alive(pid):
            return CheckRunHealthResult(WorkerStatus.RUNNING, run_worker_id=str(pid))
        return CheckRunHealthResult(WorkerStatus.FAILED, f"the run worker process (pid {pid}) is gone", run_worker_id=str(pid))

    def dispose(self) -> None:
        with self._lock:
            self._stop_worker()


def _pid_of(run: dg.DagsterRun) -> int | None:
    value = run.tags.get(PID_TAG)
    return int(value) if value and value.isdigit() else None


def _alive(pid: int) -> bool:
    """The process exists and has not exited (a zombie waiting to be reaped has)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError, ProcessLookupError):
        return False
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    return state not in ("Z", "X")
