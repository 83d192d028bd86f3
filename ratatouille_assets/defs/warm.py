"""The warm run worker: one process with the code location loaded that forks a process per run.

Why: a run of the embedded default started as a fresh interpreter (Dagster's code server spawns
one per run) and paid, before its first step, Python's imports of Dagster, dbt, pyiceberg and
Soda (~2.5 s on 2 cores), building the definitions, and dbt's parse of the project (~1 s): most of
a small day's run. This process does all of that once, then forks: the run starts with the
modules imported, the definitions built and the dbt project parsed (copy-on-write memory).

It never opens what a fork may not share: no Dagster instance or storage connection, no DuckDB
database (checked before it serves), no thread besides its own. A run process is a child of this
one, in the same process group as the launcher (Ctrl-C on ``dagster dev`` interrupts runs as it
does Dagster's own run workers), and executes the run exactly as ``dagster api execute_run``
does: it calls that command's own function with the same arguments.

The worker knows which code it loaded (:func:`code_fingerprint`: the package, sources.yml, the dbt
project and its manifest, the Soda files); a launch for other code gets the answer ``stale`` and
the worker exits, so the launcher starts a fresh one: an edited model never runs old code.

Protocol, on a Unix socket: one JSON line ``{"input_json": <ExecuteRunArgs>, "fingerprint": ...}``
in, one line ``{"pid": N}`` or ``{"stale": true}`` out. ``python -m ratatouille_assets.defs.warm
--socket PATH`` (started by :class:`ratatouille_assets.defs.launcher.WarmRunLauncher`).

This module and the launcher are the only users of Dagster's ``dagster api execute_run`` command
function and its argument type (private); ``tests/test_launcher.py`` pins them.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path

from ratatouille_assets.settings import Settings, get_settings

# The worker exits when the process that started it is gone (checked this often, in seconds).
PARENT_CHECK_SECONDS = 1.0
_DBT_SKIPPED = {"target", "logs", "dbt_packages", ".user.yml"}
# Threads that restart themselves in a forked child (os.register_at_fork): OpenTelemetry's batch
# processors, which Soda's telemetry starts on import.
_FORK_AWARE_THREADS = ("OtelBatch",)


def code_fingerprint(settings: Settings | None = None) -> str:
    """A hash of what a run's code is made of: every file of the package, sources.yml, the dbt
    project (its manifest included, not its other build output) and the Soda files, by path,
    size and modification time. About a few hundred stat calls."""
    settings = settings or get_settings()
    package = Path(__file__).resolve().parent.parent
    entries: list[str] = []

    def add(path: Path) -> None:
        try:
            st = path.stat()
        except FileNotFoundError:
            entries.append(f"{path}:missing")
            return
        entries.append(f"{path}:{st.st_size}:{st.st_mtime_ns}")

    def walk(root: Path, skipped: set[str] = frozenset(), suffixes: tuple[str, ...] = ()) -> None:
        if not root.is_dir():
            add(root)
            return
        for folder, dirs, files in os.walk(root):
            dirs[:] = sorted(d for d in dirs if d not in skipped and d != "__pycache__")
            for name in sorted(files):
                if name not in skipped and (not suffixes or name.endswith(suffixes)):
                    add(Path(folder) / name)

    walk(package, suffixes=(".py",))
    add(settings.sources_file)
    walk(settings.dbt_project_dir, skipped=_DBT_SKIPPED)
    add(settings.dbt_project_dir / "target" / "manifest.json")
    walk(settings.soda_dir)
    return hashlib.sha256("\n".join(entries).encode()).hexdigest()


def warm_up(settings: Settings) -> str:
    """Import and build everything a run needs, parse the dbt project; the code's fingerprint.

    The dbt project is brought up to date first (generated sources, ``dbt parse`` if stale), then
    the fingerprint is taken, then the code is loaded: a fingerprint taken before the parse named a
    missing or older manifest, so the first launch after a fresh clone or a model edit found the
    worker stale and waited for a new one (5 s). Code edited after the fingerprint makes the next
    launch restart the worker, as before."""
    from ratatouille_assets.ingest.sources import load_sources_file
    from ratatouille_assets.project import manifest as dbt_manifest

    dbt_manifest.prepare(load_sources_file(settings.sources_file), settings.dbt_project_dir)
    fingerprint = code_fingerprint(settings)
    from dagster._cli.api import execute_run_command  # noqa: F401 - what a run calls

    from ratatouille_assets import definitions
    from ratatouille_assets.defs import dbt_inprocess
    from ratatouille_assets.lakehouse import duck

    _preload_modules()
    definitions.prebuild()
    dbt_inprocess.warm(settings.dbt_project_dir, settings.dbt_project_dir)  # as defs/dbt.py's DbtProject
    if duck.open_databases():
        raise RuntimeError("the warm worker opened a DuckDB database while loading: a fork may not share it")
    others = [t.name for t in threading.enumerate()
              if t is not threading.main_thread() and not t.name.startswith(_FORK_AWARE_THREADS)]
    if others:
        raise RuntimeError(f"the warm worker started threads while loading ({', '.join(others)}): a fork would lose them")
    return fingerprint


# Modules a run imports late (py-spy of a forked run): dbt's build task, the SodaCL parser, agate.
_LATE_IMPORTS = ("dbt.task.build", "dbt_common.clients.agate_helper", "soda.sodacl.sodacl_parser", "upath",
                 "dagster._core.storage.base_storage")


def _preload_modules() -> None:
    """Import what a run would import on its way: the modules above and the classes of the Dagster
    instance (storage, launcher, compute logs) named in DAGSTER_HOME's dagster.yaml. Nothing is
    instantiated: no storage is opened here."""
    import importlib

    from dagster._core.instance.ref import InstanceRef

    for name in _LATE_IMPORTS:
        importlib.import_module(name)
    home = os.environ.get("DAGSTER_HOME")
    if home:
        for value in InstanceRef.from_dir(home):
            if module := getattr(value, "module_name", None):
                importlib.import_module(module)


def run_in_child(input_json: str) -> int:
    """In the forked process: the run, as ``dagster api execute_run <input_json>`` executes it."""
    from dagster._cli.api import execute_run_command

    try:
        execute_run_command.callback(input_json=input_json, compressed_input_json=None)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1
    except BaseException:  # noqa: BLE001 - reported by Dagster in the run's event log already
        import traceback

        traceback.print_exc()
        return 1
    finally:
        _release_semaphores()
    return 0


def _release_semaphores() -> None:
    """dbt's adapter holds multiprocessing locks (named semaphores); the run process ends with
    os._exit (never the worker's exit handlers), so drop them here, which unlinks them."""
    from dbt.adapters.factory import reset_adapters

    reset_adapters()
    gc.collect()


def serve(path: str, fingerprint: str) -> None:
    parent = os.getppid()
    signal.signal(signal.SIGCHLD, _reap)
    signal.signal(signal.SIGTERM, _exit)  # the launcher stops it
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    for stale in (path, path + ".tmp"):  # left by a worker that was killed
        if os.path.exists(stale):
            os.unlink(stale)
    listener.bind(path + ".tmp")
    os.rename(path + ".tmp", path)  # the socket appears once it accepts: the launcher waits for it
    listener.listen(16)
    listener.settimeout(PARENT_CHECK_SECONDS)
    # Everything loaded so far lives as long as the worker: out of the collector's sight, so a run's
    # garbage collections neither walk it nor write to its pages (which would copy them).
    gc.collect()
    gc.freeze()
    try:
        while os.getppid() == parent:
            try:
                conn, _ = listener.accept()
            except (TimeoutError, InterruptedError):
                continue
            with conn:
                conn.settimeout(30)
                request = json.loads(read_line(conn))
                if request.get("fingerprint") != fingerprint:
                    conn.sendall(b'{"stale": true}\n')
                    return
                pid = os.fork()
                if pid == 0:  # the run's process
                    listener.close()
                    conn.close()
                    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                    signal.signal(signal.SIGTERM, signal.SIG_DFL)
                    code = 1
                    try:
                        code = run_in_child(request["input_json"])
                    finally:
                        sys.stdout.flush()
                        sys.stderr.flush()
                        os._exit(code)
                conn.sendall(json.dumps({"pid": pid}).encode() + b"\n")
    finally:
        listener.close()
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


def read_line(conn: socket.socket) -> bytes:
    """One line of the protocol (empty if the other side closed first)."""
    data = b""
    while not data.endswith(b"\n"):
        chunk = conn.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def _exit(*_) -> None:
    """End the worker at once: it holds nothing to flush or close (no storage, no DuckDB, no run),
    and the interpreter's own exit would wait up to 30 s on Soda's telemetry thread."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _reap(*_) -> None:
    """Collect finished run processes (no zombies)."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m ratatouille_assets.defs.warm")
    parser.add_argument("--socket", required=True, help="the Unix socket to serve launches on")
    args = parser.parse_args(argv)
    try:
        started = time.perf_counter()
        fingerprint = warm_up(get_settings())
        print(f"ratatouille: warm run worker ready in {time.perf_counter() - started:.1f}s (pid {os.getpid()}, "
              f"for pid {os.getppid()})", file=sys.stderr, flush=True)
        serve(args.socket, fingerprint)
    except KeyboardInterrupt:  # Ctrl-C on `dagster dev` reaches the whole process group
        pass
    _exit()


if __name__ == "__main__":
    main()
