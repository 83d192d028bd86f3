"""Wall time and peak memory (PSS) of a command and every process it starts."""

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


def _pss(pid: int) -> int | None:
    """Proportional set size: resident memory with each shared page split between its sharers."""
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as f:
            for line in f:
                if line.startswith(b"Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _tree(root: int) -> dict[int, int]:
    """``{pid: rss_bytes}`` of ``root`` and all its descendants."""
    procs = _processes()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in procs.items():
        children.setdefault(ppid, []).append(pid)
    out, stack = {}, [root]
    while stack:
        pid = stack.pop()
        if pid in procs:
            out[pid] = procs[pid][1]
        stack.extend(children.get(pid, ()))
    return out


# The tree's memory is its RSS sum less the pages counted more than once (a forked run shares
# pages with the warm worker it came from). That double count is measured from PSS, which costs
# the kernel a page-table walk (~35 ms for a 2 GB process, holding its memory lock), so only
# every PSS_EVERY_S; the RSS sum, cheap, every sample. Also at once when the tree's processes
# change or its RSS sum grew by PSS_AFTER_GROWTH since the last walk: a double count measured
# while a fork was still copying its parent's page tables is too small, and the pages the child
# then maps would count twice until the next walk (a 400 MB parent and its reading child once
# measured 636 MB).
PSS_EVERY_S = 1.0
PSS_AFTER_GROWTH = 64 * 1024 * 1024


def run(
    cmd: list[str], env: dict[str, str] | None = None, *, rss_limit_bytes: int | None = None,
    timeout_s: float | None = None, interval_s: float = 0.05, cwd: str | None = None,
) -> Measured:
    """Run ``cmd``; sample the tree's memory every ``interval_s`` (RSS, less what PSS says is counted
    twice); kill it if it passes ``rss_limit_bytes``."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    peak, over = 0, False
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak, over
        shared, measured_at, measured_rss, measured_pids = 0, float("-inf"), 0, frozenset()
        while not stop.is_set():
            tree = _tree(proc.pid)
            rss = sum(tree.values())
            if len(tree) > 1 and (time.monotonic() - measured_at >= PSS_EVERY_S or tree.keys() != measured_pids
                                  or rss - measured_rss >= PSS_AFTER_GROWTH):
                pss = sum(p if (p := _pss(pid)) is not None else r for pid, r in tree.items())
                shared, measured_at = max(0, rss - pss), time.monotonic()
                measured_rss, measured_pids = rss, frozenset(tree)
            memory = rss - shared
            peak = max(peak, memory)
            if rss_limit_bytes and memory > rss_limit_bytes and not over:
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
