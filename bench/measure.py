"""Wall time and peak resident memory of a command and every process it starts."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import threading
import time

PAGE = os.sysconf("SC_PAGE_SIZE")


@dataclasses.dataclass(frozen=True)
class Measured:
    seconds: float
    peak_rss_bytes: int
    returncode: int
    stdout: str
    stderr: str
    over_limit: bool = False

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.over_limit


def _processes() -> dict[int, tuple[int, int]]:
    """``{pid: (ppid, rss_bytes)}`` of every process (Linux /proc)."""
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue  # exited meanwhile
        out[int(entry)] = (int(fields[1]), int(fields[21]) * PAGE)
    return out


def tree_rss(root: int) -> int:
    """Resident memory of ``root`` and all its descendants, in bytes."""
    procs = _processes()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in procs.items():
        children.setdefault(ppid, []).append(pid)
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        if pid in procs:
            total += procs[pid][1]
        stack.extend(children.get(pid, ()))
    return total


def run(
    cmd: list[str], env: dict[str, str] | None = None, *, rss_limit_bytes: int | None = None,
    timeout_s: float | None = None, interval_s: float = 0.05, cwd: str | None = None,
) -> Measured:
    """Run ``cmd``; sample the tree's RSS every ``interval_s``; kill it if it passes ``rss_limit_bytes``."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    peak, over = 0, False
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak, over
        while not stop.is_set():
            rss = tree_rss(proc.pid)
            peak = max(peak, rss)
            if rss_limit_bytes and rss > rss_limit_bytes and not over:
                over = True
                os.killpg(proc.pid, signal.SIGKILL)
            stop.wait(interval_s)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        stdout, stderr = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
    finally:
        stop.set()
        sampler.join()
    return Measured(
        seconds=time.perf_counter() - start, peak_rss_bytes=peak, returncode=proc.returncode,
        stdout=stdout, stderr=stderr, over_limit=over,
    )


def elapsed_log():
    """A ``log(message)`` that prints each message after the seconds since this call."""
    started = time.perf_counter()

    def log(message: str) -> None:
        print(f"[{time.perf_counter() - started:6.0f}s] {message}", flush=True)

    return log


def save_results(out: os.PathLike, name: str, results: dict) -> os.PathLike:
    """``results`` as ``<out>/<date>-<host>-<name>.json`` (``name`` may carry a time of day)."""
    import datetime as dt
    import json
    import platform
    from pathlib import Path

    Path(out).mkdir(parents=True, exist_ok=True)
    path = Path(out) / f"{dt.date.today().isoformat()}-{platform.node()}-{name}.json"
    path.write_text(json.dumps(results, indent=2, default=str))
    return path
