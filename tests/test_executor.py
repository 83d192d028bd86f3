"""The threaded in-process executor (``defs/executor.py``): real Dagster runs through it.

Jobs here are plain ops (no lakehouse), run with ``dg.execute_job`` on a test instance, which uses
the job's own executor (``execute_in_process`` would not). Concurrency is proven by a barrier two
steps must pass together, never by timing. The last tests pin the Dagster internals the executor
is built from.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
import signal
import sys
import threading
import time

import dagster as dg
import pytest
from dagster._core.errors import DagsterExecutionInterruptedError
from dagster._core.execution.plan import execute_plan
from dagster._core.execution.plan.active import ActiveExecution
from dagster._core.execution.plan.plan import ExecutionPlan

from ratatouille_assets.defs.executor import ThreadedExecutor, critical_path_order, in_step_code, threaded_executor
from ratatouille_assets.settings import get_settings

WAIT = 120  # seconds a step waits for its partner before the test fails (a condition, not a timing)

# Shared with the ops below; each test sets what it needs before its run.
STATE: dict = {}


def _log(name: str) -> None:
    with STATE["lock"]:
        STATE["order"].append(name)


@dg.op
def left() -> int:
    STATE["barrier"].wait(WAIT)  # passes only when `right` runs at the same time
    _log("left")
    return 1


@dg.op
def right() -> int:
    STATE["barrier"].wait(WAIT)
    _log("right")
    return 2


# A user's project may sit in a folder named "dagster": its code is still a step's own code.
_PROBE: dict = {}
exec(compile("import sys\ndef probe(check):\n    return check(sys._getframe())\n",
             os.path.join(os.sep, "home", "someone", "dagster", "project", "assets.py"), "exec"), _PROBE)


def _probe_in_a_dagster_folder() -> bool:
    return _PROBE["probe"](in_step_code)


@dg.op
def total(a: int, b: int) -> int:
    _log("total")
    STATE["in_step_code"] = in_step_code(sys._getframe())  # where an interrupt may be raised
    STATE["in_step_code_of_a_dagster_folder"] = _probe_in_a_dagster_folder()
    STATE["total"] = a + b
    return a + b


@dg.job(executor_def=threaded_executor(2))
def side_by_side():
    total(left(), right())


@dg.op
def broken() -> int:
    raise ValueError("this op fails")


@dg.op
def fine() -> int:
    _log("fine")
    return 2


@dg.op
def after_broken(a: int) -> int:
    _log("after_broken")
    return a


@dg.op
def after_both(a: int, b: int) -> int:
    _log("after_both")
    return a + b


def _one_fails_graph():
    x = broken()
    y = fine()
    after_broken(x)
    after_both(x, y)


@dg.job(executor_def=threaded_executor(2))
def one_fails():
    _one_fails_graph()


@dg.job(executor_def=dg.in_process_executor)
def one_fails_one_by_one():
    _one_fails_graph()


@dg.op(retry_policy=dg.RetryPolicy(max_retries=2))
def flaky() -> int:
    STATE["attempts"] += 1
    if STATE["attempts"] == 1:
        raise RuntimeError("first attempt fails")
    return 5


@dg.success_hook
def note_success(context: dg.HookContext):
    _log(f"hook:{context.op.name}")


@dg.job(executor_def=threaded_executor(2), hooks={note_success})
def retried():
    total(flaky(), fine())


@dg.op
def blocks() -> int:
    STATE["started"].set()
    deadline = time.monotonic() + WAIT
    while not STATE["release"].wait(0.05) and time.monotonic() < deadline:  # Python code, as a step runs
        pass
    STATE["blocks_returned"] = True
    return 1


@dg.op
def quick() -> int:
    return 1


@dg.job(executor_def=threaded_executor(2))
def interrupted():
    total(blocks(), quick())


def _dagster_frame():
    """A frame of Dagster's own code: a generator of ``plan/compute.py``, created, never run."""
    from dagster._core.execution.plan import compute

    return compute.gen_from_async_gen(None, None).gi_frame


def _fresh(**extra) -> None:
    STATE.clear()
    STATE.update(lock=threading.Lock(), order=[], **extra)


def _events(instance: dg.DagsterInstance, run_id: str, kind: dg.DagsterEventType) -> list:
    return [e for e in instance.all_logs(run_id, of_type=kind)]


def test_independent_steps_run_at_once_and_their_downstream_step_after_both():
    _fresh(barrier=threading.Barrier(2))
    with dg.instance_for_test() as instance:
        result = dg.execute_job(dg.reconstructable(side_by_side), instance=instance)
        assert result.success
        assert STATE["total"] == 3
        assert STATE["in_step_code"] is True and STATE["in_step_code_of_a_dagster_folder"] is True
        assert not in_step_code(sys._getframe())  # not a step's code: this test
        assert not in_step_code(_dagster_frame())  # Dagster's own code, even the file that calls a step's
        assert sorted(STATE["order"][:2]) == ["left", "right"] and STATE["order"][2] == "total"
        starts = [e.step_key for e in _events(instance, result.run_id, dg.DagsterEventType.STEP_START)]
        assert starts[-1] == "total" and sorted(starts[:2]) == ["left", "right"]
        engine = [e.message for e in _events(instance, result.run_id, dg.DagsterEventType.ENGINE_EVENT)]
        assert any("up to 2 at once on threads" in (m or "") for m in engine)


def test_a_failed_step_stops_what_needs_it_and_the_steps_beside_it_finish_as_in_dagsters_executor():
    seen = {}
    for job in (one_fails, one_fails_one_by_one):
        _fresh()
        with dg.instance_for_test() as instance:
            result = dg.execute_job(dg.reconstructable(job), instance=instance)
            assert not result.success
            assert STATE["order"] == ["fine"]  # neither downstream step ran
            assert instance.get_run_by_id(result.run_id).status == dg.DagsterRunStatus.FAILURE
            seen[job.name] = sorted(
                (e.step_key, e.dagster_event.event_type_value) for e in instance.all_logs(result.run_id)
                if e.dagster_event and e.step_key
            )
    assert ("broken", "STEP_FAILURE") in seen["one_fails"] and ("fine", "STEP_SUCCESS") in seen["one_fails"]
    assert not {k for k, _ in seen["one_fails"]} & {"after_broken", "after_both"}
    assert seen["one_fails"] == seen["one_fails_one_by_one"]


def test_a_step_retried_by_its_policy_runs_again_and_hooks_run_after_each_step():
    _fresh(attempts=0)
    with dg.instance_for_test() as instance:
        result = dg.execute_job(dg.reconstructable(retried), instance=instance)
        assert result.success
        assert STATE["attempts"] == 2 and STATE["total"] == 7
        retries = _events(instance, result.run_id, dg.DagsterEventType.STEP_UP_FOR_RETRY)
        assert [e.step_key for e in retries] == ["flaky"]
        hooks = sorted(n for n in STATE["order"] if n.startswith("hook:"))
        assert hooks == ["hook:fine", "hook:flaky", "hook:total"]
        assert STATE["order"].index("hook:total") > STATE["order"].index("total")


def test_an_interrupt_stops_the_steps_in_flight_starts_no_more_and_ends_the_run_canceled():
    _fresh(started=threading.Event(), release=threading.Event())

    def quick_done(run_id: str) -> bool:
        return any(e.step_key == "quick" for e in _events(instance, run_id, dg.DagsterEventType.STEP_SUCCESS))

    def interrupt() -> None:
        if STATE["started"].wait(WAIT):
            run = instance.get_runs(limit=1)[0]
            deadline = time.monotonic() + WAIT
            while not quick_done(run.run_id) and time.monotonic() < deadline:  # only `blocks` in flight
                time.sleep(0.02)
            instance.report_run_canceling(run)  # what terminating a run does before the signal
            os.kill(os.getpid(), signal.SIGINT)  # the launcher's termination

    with dg.instance_for_test() as instance:
        sender = threading.Thread(target=interrupt, daemon=True)
        sender.start()
        try:
            result = dg.execute_job(dg.reconstructable(interrupted), instance=instance, raise_on_error=False)
            # the step in flight was stopped, not left running: its thread is gone
            assert not [t for t in threading.enumerate() if t.name == "step blocks"]
        finally:
            STATE["release"].set()
            sender.join(WAIT)
        assert "blocks_returned" not in STATE
        run = instance.get_run_by_id(result.run_id)
        assert run.status == dg.DagsterRunStatus.CANCELED
        starts = {e.step_key for e in _events(instance, result.run_id, dg.DagsterEventType.STEP_START)}
        assert "total" not in starts and "blocks" in starts
        failures = _events(instance, result.run_id, dg.DagsterEventType.STEP_FAILURE)
        assert [e.step_key for e in failures] == ["blocks"]
        assert failures[0].dagster_event.step_failure_data.error.cls_name == "DagsterExecutionInterruptedError"
        engine = [e.message or "" for e in _events(instance, result.run_id, dg.DagsterEventType.ENGINE_EVENT)]
        assert any(m.startswith("Interrupted: no step starts any more") and m.endswith(": blocks") for m in engine), engine


def test_the_order_starts_the_longest_chain_then_what_is_furthest_along():
    # a -> c -> e -> f ; b -> e ; d -> f ; g alone
    deps = {"a": set(), "b": set(), "d": set(), "g": set(), "c": {"a"}, "e": {"c", "b"}, "f": {"e", "d"}}

    class Step:
        def __init__(self, key, priority=None):
            self.key = key
            self.tags = {"dagster/priority": str(priority)} if priority is not None else {}

    key = critical_path_order(deps)
    ready = [Step(k) for k in ("g", "d", "b", "a")]
    assert [s.key for s in sorted(ready, key=key)] == ["a", "b", "d", "g"]
    # after a: c (two steps after it, one before) goes before b (two after, none before)
    assert [s.key for s in sorted([Step("b"), Step("c")], key=key)] == ["c", "b"]
    # a priority tag still wins
    assert [s.key for s in sorted([Step("a"), Step("g", priority=5)], key=key)] == ["g", "a"]
    # a deep chain is walked without recursion
    chain = {f"s{i}": ({f"s{i - 1}"} if i else set()) for i in range(5000)}
    assert critical_path_order(chain)(Step("s0")) == (0, -4999, 0)


def test_the_setting_picks_the_executor():
    from ratatouille_assets.definitions import run_executor

    settings = get_settings()
    assert settings.step_threads == 2  # the default
    assert run_executor(settings).name == "in_process"
    assert run_executor(settings) is not dg.in_process_executor
    assert run_executor(dataclasses.replace(settings, step_threads=1)) is dg.in_process_executor
    with pytest.raises(ValueError):
        ThreadedExecutor(threads=0, retries=None)


def test_pins_the_dagster_internals_the_executor_uses():
    """The executor re-assembles Dagster's in-process loop; these are its parts."""
    assert list(inspect.signature(execute_plan.dagster_event_sequence_for_step).parameters)[:1] == ["step_context"]
    assert list(inspect.signature(execute_plan._trigger_hook).parameters) == ["step_context", "step_event_list"]
    assert list(inspect.signature(execute_plan._handle_compute_log_setup_error).parameters) == ["context", "exc_info"]
    assert list(inspect.signature(execute_plan._handle_compute_log_teardown_error).parameters) == ["context", "exc_info"]
    start = inspect.signature(ExecutionPlan.start).parameters
    assert {"retry_mode", "sort_key_fn", "max_concurrent", "instance_concurrency_context",
            "step_dependency_config"} <= set(start)
    for name in ("get_steps_to_execute", "handle_event", "verify_complete", "plan_events_iterator",
                 "concurrency_event_iterator", "sleep_til_ready", "check_for_interrupts", "mark_interrupted",
                 "get_known_state", "is_complete"):
        assert hasattr(ActiveExecution, name), name
    # The in-process loop this one mirrors: one capture for the process, hooks after each step.
    source = inspect.getsource(execute_plan.inner_plan_execution_iterator)
    for part in ("capture_logs(log_key)", "DagsterEvent.capture_logs(", "dagster_event_sequence_for_step(step_context)",
                 "active_execution.handle_event(dagster_event)", "active_execution.verify_complete(",
                 "active_execution.plan_events_iterator(", "_trigger_hook(step_context, step_event_list)"):
        assert part in source, part
    assert issubclass(DagsterExecutionInterruptedError, BaseException)
