"""Processes that race each other for real (spawned, not forked: each opens its own catalog)."""

from __future__ import annotations

import multiprocessing as mp
from collections.abc import Callable


def race(target: Callable, args_of: Callable[[int], tuple], processes: int, timeout: float = 300) -> dict:
    """Run ``target(*args_of(i), barrier, results)`` in ``processes`` spawned processes that meet at
    a shared barrier; every one must exit 0. Returns the ``(key, value)`` pairs they put on ``results``."""
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(processes), ctx.Queue()
    procs = [ctx.Process(target=target, args=(*args_of(i), barrier, results)) for i in range(processes)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=timeout)
        assert p.exitcode == 0, f"{p.name} exited {p.exitcode}"
    return dict(results.get(timeout=5) for _ in range(processes))
