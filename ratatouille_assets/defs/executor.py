"""The run's steps a few at a time on threads of the run process (``RATATOUILLE_STEP_THREADS``).

Why: Dagster's in-process executor runs a run's steps one after another. At 1M order lines a day
the unpartitioned dbt models (dimensions, ~1.3 s of mostly Python) wait behind the two big bronze
loads (~1.3 s in which DuckDB and the Parquet encoders, which run without the GIL, leave ~0.6 of
the two cores idle). Side by side on two threads the one-day run takes ~0.6 s less (BENCHMARKS.md).
Processes would not: a step's process costs its own instance and resources, and two bronze loads
side by side each take twice as long (measured, dropped).

What stays as in the in-process executor: one process, one compute-log capture for it, resources
built once, the same events, retries, hooks, pools and skips (Dagster's ``ActiveExecution`` drives
the plan, exactly as it does for the in-process and multiprocess executors). What differs:

- Which ready step goes first: the one with the longest chain of steps after it, then the one
  furthest from the sources (so the dimensions start as soon as their sources are loaded, while
  the big loads go on beside them); ``dagster/priority`` still comes before both.
- An interrupt (the launcher's termination, SIGINT) reaches only the main thread, which waits for
  the steps. The executor starts no further step and raises the interrupt inside each step in
  flight (``interrupt_thread``), as a SIGINT does inside a step of the in-process executor: each
  fails as interrupted, at its next Python instruction (a DuckDB query first returns), and the
  run ends CANCELED. A step that has not stopped after ``INTERRUPT_GRACE_SECONDS`` is left to the
  run process's exit, like a killed process's step (every write is one atomic commit, so a step
  cut off commits all of its table or nothing).
- A step that raises out of Dagster's own error handling (a framework error, never a failing
  asset: that is a STEP_FAILURE event) ends the run once the steps beside it have finished.

Step code must be thread-safe beside other steps: connections per step (``duck.session`` gives a
cursor each), dbt one invocation at a time (``dbt_inprocess``), pyiceberg's shared evaluators
serialized (``lakehouse/pyiceberg_adapter``).

Dagster has no public API for an executor of its own: this module uses the in-process executor's
private building blocks (``execute_plan``'s step event sequence, hooks and compute-log helpers,
``ExecuteRunWithPlanIterable``, ``PlanExecutionContextManager``). ``tests/test_executor.py`` pins
them and runs plans with failures, retries, skips and interrupts through it.
"""

from __future__ import annotations

import ctypes
import itertools
import os
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack

import dagster as dg
import dagster_shared
from dagster._core.definitions.executor_definition import IN_PROC_CONFIG
from dagster._core.errors import DagsterExecutionInterruptedError
from dagster._core.events import DagsterEvent, EngineEventData
from dagster._core.execution.api import ExecuteRunWithPlanIterable
from dagster._core.execution.compute_logs import create_compute_log_file_key
from dagster._core.execution.context.system import PlanExecutionContext, PlanOrchestrationContext
from dagster._core.execution.context_creation_job import PlanExecutionContextManager
from dagster._core.execution.plan import compute as dagster_compute
from dagster._core.execution.plan.execute_plan import (
    _handle_compute_log_setup_error,
    _handle_compute_log_teardown_error,
    _trigger_hook,
    dagster_event_sequence_for_step,
)
from dagster._core.execution.plan.instance_concurrency_context import InstanceConcurrencyContext
from dagster._core.execution.plan.plan import ExecutionPlan
from dagster._core.execution.plan.step import ExecutionStep
from dagster._core.execution.retries import RetryMode
from dagster._core.execution.step_dependency_config import StepDependencyConfig
from dagster._core.executor.base import Executor
from dagster._core.storage.tags import PRIORITY_TAG

# How long the main thread waits for a step's event before it looks at interrupts, retries whose
# delay has passed and pool slots that freed up.
POLL_SECONDS = 0.1
# After an interrupt, how long the steps in flight get to stop before the run ends without them.
INTERRUPT_GRACE_SECONDS = 30.0


# The file whose frames call a step's own code, and the folders of Dagster's own code (the
# installed packages' paths, so a user's project in a folder named "dagster" is still user code).
_COMPUTE = os.path.abspath(dagster_compute.__file__)
_DAGSTER = tuple(os.path.dirname(os.path.abspath(m.__file__)) + os.sep for m in (dg, dagster_shared))


def in_step_code(frame) -> bool:
    """Whether a thread whose innermost frame is ``frame`` runs a step's own code (its compute
    function and what that calls, Dagster's logging excepted): where Dagster lets a SIGINT raise
    inside a step of the main thread, and nowhere else (not while it records the step's events)."""
    if frame is None or os.path.abspath(frame.f_code.co_filename).startswith(_DAGSTER):
        return False
    while frame is not None:
        if os.path.abspath(frame.f_code.co_filename) == _COMPUTE:
            return True
        frame = frame.f_back
    return False


def interrupt_thread(thread: threading.Thread) -> bool:
    """Raise DagsterExecutionInterruptedError in ``thread`` at its next Python instruction (CPython's
    ``PyThreadState_SetAsyncExc``) if it runs its step's own code now; a thread inside a C call (a
    DuckDB query) sees it when the call returns. Called with the GIL held, so the thread has not
    moved between the look at its frames and the call. False if it was not interrupted (it records
    events, or has ended): the caller asks again a moment later."""
    if thread.ident is None or not thread.is_alive() or not in_step_code(sys._current_frames().get(thread.ident)):
        return False
    done = ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(thread.ident), ctypes.py_object(DagsterExecutionInterruptedError))
    return done == 1


def critical_path_order(deps: Mapping[str, set[str]]) -> Callable[[ExecutionStep], tuple[int, int, int]]:
    """A sort key for ready steps: ``dagster/priority`` first (higher first), then the longest chain
    of steps after the step, then the longest chain before it. ``deps``: step key -> the keys of
    the steps it waits for (the plan's executable steps)."""
    after_of: dict[str, set[str]] = {key: set() for key in deps}
    for key, upstream in deps.items():
        for up in upstream:
            after_of.setdefault(up, set()).add(key)
    memo_after: dict[str, int] = {}
    memo_before: dict[str, int] = {}

    def chain(key: str, edges: Mapping[str, set[str]], memo: dict[str, int]) -> int:
        # iterative depth-first walk: a plan may be thousands of steps deep
        stack = [(key, iter(sorted(edges.get(key, ()))))]
        while stack:
            node, children = stack[-1]
            child = next((c for c in children if c not in memo), None)
            if child is not None:
                stack.append((child, iter(sorted(edges.get(child, ())))))
                continue
            memo[node] = max((1 + memo[c] for c in edges.get(node, ()) if c in memo), default=0)
            stack.pop()
        return memo[key]

    def key(step: ExecutionStep) -> tuple[int, int, int]:
        try:
            priority = int(step.tags.get(PRIORITY_TAG, 0))
        except ValueError:
            priority = 0
        if step.key not in deps:
            return (-priority, 0, 0)
        return (-priority, -chain(step.key, after_of, memo_after), -chain(step.key, deps, memo_before))

    return key


def _threaded_plan_iterator(threads: int) -> Callable[..., Iterator[DagsterEvent]]:
    def iterator(job_context: PlanExecutionContext, execution_plan: ExecutionPlan) -> Iterator[DagsterEvent]:
        with InstanceConcurrencyContext(job_context.instance, job_context.dagster_run) as concurrency:
            yield from _execute(job_context, execution_plan, concurrency, threads)

    return iterator


def _execute(
    job_context: PlanExecutionContext,
    execution_plan: ExecutionPlan,
    concurrency: InstanceConcurrencyContext,
    threads: int,
) -> Iterator[DagsterEvent]:
    """Dagster's ``inner_plan_execution_iterator`` with up to ``threads`` steps in flight."""
    compute_log_manager = job_context.instance.compute_log_manager
    step_keys = [step.key for step in execution_plan.get_steps_to_execute_in_topo_order()]
    with execution_plan.start(
        retry_mode=job_context.retry_mode,
        sort_key_fn=critical_path_order(execution_plan.get_executable_step_deps()),
        max_concurrent=threads,
        instance_concurrency_context=concurrency,
        step_dependency_config=job_context.step_dependency_config,
    ) as active:
        with ExitStack() as capture_stack:
            # one capture for the whole process, as the in-process executor does
            log_key = compute_log_manager.build_log_key_for_run(job_context.run_id, create_compute_log_file_key())
            try:
                log_context = capture_stack.enter_context(compute_log_manager.capture_logs(log_key))
                yield DagsterEvent.capture_logs(job_context, step_keys, log_key, log_context)
            except Exception:
                yield from _handle_compute_log_setup_error(job_context, sys.exc_info())

            inbox: queue.Queue = queue.Queue()
            # one entry per step started (a retried step starts again before its first thread ended)
            running: dict[int, tuple[str, object, list[DagsterEvent], threading.Thread]] = {}
            started = itertools.count()
            broken: BaseException | None = None
            interrupted_at: float | None = None
            stopped: set[int] = set()  # the launches an interrupt was raised in

            def work(launch: int, step_context) -> None:
                try:
                    for event in dagster_event_sequence_for_step(step_context):
                        inbox.put((launch, event))
                    inbox.put((launch, None))
                except BaseException as exc:  # noqa: BLE001 - re-raised by the main thread
                    inbox.put((launch, exc))

            # A step's STEP_SUCCESS completes it for the plan before its thread has ended: the loop
            # also waits for the threads, whose end runs the step's hooks.
            while running or not active.is_complete:
                if interrupted_at is None and active.check_for_interrupts():
                    interrupted_at = time.monotonic()
                    active.mark_interrupted()
                    in_flight = sorted(key for key, _, _, _ in running.values())
                    yield DagsterEvent.engine_event(
                        job_context,
                        f"Interrupted: no step starts any more; stopping the steps in flight: {', '.join(in_flight) or 'none'}",
                        EngineEventData.interrupted(in_flight),
                    )
                if interrupted_at is not None:
                    for launch, (_, _, _, thread) in running.items():
                        if launch not in stopped and interrupt_thread(thread):
                            stopped.add(launch)
                if interrupted_at is not None and (not running or time.monotonic() - interrupted_at > INTERRUPT_GRACE_SECONDS):
                    raise DagsterExecutionInterruptedError()
                if broken is None and interrupted_at is None and not active.is_complete:
                    for step in active.get_steps_to_execute():
                        step_context = job_context.for_step(step, active.get_known_state())
                        launch = next(started)
                        thread = threading.Thread(target=work, args=(launch, step_context),
                                                  name=f"step {step.key}", daemon=True)
                        running[launch] = (step.key, step_context, [], thread)
                        thread.start()
                    yield from active.concurrency_event_iterator(job_context)
                if not running:
                    if broken is not None:
                        raise broken
                    active.sleep_til_ready()
                    continue
                try:
                    launch, item = inbox.get(timeout=POLL_SECONDS)
                except queue.Empty:
                    continue
                if launch not in running:  # an interrupt that reached a thread after its step ended
                    continue
                step_key, step_context, step_events, _ = running[launch]
                if isinstance(item, DagsterEvent):
                    step_events.append(item)
                    yield item
                    active.handle_event(item)
                    continue
                del running[launch]
                if item is not None:  # the step's thread raised: finish the others, then raise it
                    if interrupted_at is None:
                        broken = broken or item
                    continue
                if all(key != step_key for key, _, _, _ in running.values()):  # not the retry beside it
                    active.verify_complete(job_context, step_key)
                for event in active.plan_events_iterator(job_context):  # skips after a failure
                    step_events.append(event)
                    yield event
                yield from _trigger_hook(step_context, step_events)

            try:
                capture_stack.close()
            except Exception:
                yield from _handle_compute_log_teardown_error(job_context, sys.exc_info())


class ThreadedExecutor(Executor):
    """Steps of a run in this process, up to ``threads`` at once (see the module's docstring)."""

    def __init__(self, threads: int, retries: RetryMode,
                 step_dependency_config: StepDependencyConfig = StepDependencyConfig.default()):
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        self.threads = threads
        self._retries = retries
        self._step_dependency_config = step_dependency_config

    @property
    def retries(self) -> RetryMode:
        return self._retries

    @property
    def step_dependency_config(self) -> StepDependencyConfig:
        return self._step_dependency_config

    def execute(self, plan_context: PlanOrchestrationContext, execution_plan: ExecutionPlan) -> Iterator[DagsterEvent]:
        keys = execution_plan.step_keys_to_execute
        yield DagsterEvent.engine_event(
            plan_context,
            f"Executing steps in process (pid: {os.getpid()}), up to {self.threads} at once on threads",
            event_specific_data=EngineEventData.in_process(os.getpid(), keys),
        )
        yield from iter(ExecuteRunWithPlanIterable(
            execution_plan=plan_context.execution_plan,
            iterator=_threaded_plan_iterator(self.threads),
            execution_context_manager=PlanExecutionContextManager(
                job=plan_context.job,
                retry_mode=plan_context.retry_mode,
                execution_plan=plan_context.execution_plan,
                run_config=plan_context.run_config,
                dagster_run=plan_context.dagster_run,
                instance=plan_context.instance,
                raise_on_error=plan_context.raise_on_error,
                output_capture=plan_context.output_capture,
                step_dependency_config=self.step_dependency_config,
            ),
        ))
        yield DagsterEvent.engine_event(
            plan_context, f"Finished steps in process (pid: {os.getpid()})",
            event_specific_data=EngineEventData.in_process(os.getpid(), keys),
        )


def threaded_executor(threads: int) -> dg.ExecutorDefinition:
    """An executor named ``in_process`` (run config written for Dagster's, ``execution: in_process:
    {retries: ...}``, still applies) that runs up to ``threads`` steps at once."""

    @dg.executor(name="in_process", config_schema=IN_PROC_CONFIG)
    def in_process(init_context: dg.InitExecutorContext) -> ThreadedExecutor:
        config = init_context.executor_config
        return ThreadedExecutor(
            threads=threads,
            retries=RetryMode.from_config(config["retries"]),
            step_dependency_config=StepDependencyConfig.from_config(config.get("step_dependency_config")),
        )

    return in_process
