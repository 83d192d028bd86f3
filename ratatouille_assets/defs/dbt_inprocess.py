"""Run ``dbt build`` inside the Dagster run process instead of a ``dbt`` subprocess.

Why: a ``dbt`` subprocess pays the Python and dbt imports (~4.5 s on 2 cores) and a full parse
(~2 s: the ``--vars`` window changes on every run, which defeats dbt's partial parsing) on
every invocation. That was most of a one-day run's wall time (``make bench``). In-process, dbt
is imported once per run worker and the project is parsed once per worker and manifest version;
each invocation gets the parsed manifest and only compiles and executes.

Events are translated to Dagster events by dagster-dbt itself (``DbtCoreCliEventMessage``), as
for the CLI: the same materializations, dbt tests as asset checks, the same subsetting.
"""

from __future__ import annotations

import dataclasses
import queue
import re
import shutil
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import dagster as dg
from dagster_dbt import DagsterDbtTranslator, DbtProject
from dagster_dbt.asset_utils import (
    get_manifest_and_translator_from_dbt_assets,
    get_updated_cli_invocation_params_for_context,
)
from dagster_dbt.core.dbt_cli_event import DbtCoreCliEventMessage

_LOCK = threading.Lock()  # dbt keeps global state (flags, adapters): one invocation at a time
_MANIFESTS: dict[tuple[str, str, int], Any] = {}
_DONE = object()


def _fresh_duckdb_environment() -> None:
    """Drop dbt-duckdb's process-wide environment (its DuckDB database and our plugin instance).

    dbt-duckdb keeps it in a class attribute until the process exits, so a second invocation in
    the same process would reuse views registered for the first one (stale snapshots, or another
    catalog altogether). Every invocation starts from the catalog as it is now, as a subprocess did.
    """
    from dbt.adapters.duckdb.connections import DuckDBConnectionManager

    with DuckDBConnectionManager._LOCK:
        env, DuckDBConnectionManager._ENV = DuckDBConnectionManager._ENV, None
    if env is not None:
        env.close()


def _base_args(project_dir: str, profiles_dir: str, target_path: Path) -> list[str]:
    return [
        "--project-dir", project_dir,
        "--profiles-dir", profiles_dir,
        "--target-path", str(target_path),
        "--log-path", str(target_path),
        "--no-send-anonymous-usage-stats",
    ]


def _parsed_manifest(project: DbtProject, target_root: Path) -> Any:
    """The project's parsed dbt ``Manifest``, parsed once per process and manifest.json version."""
    from dbt.cli.main import dbtRunner

    manifest_json = Path(project.manifest_path)
    key = (str(project.project_dir), str(project.profiles_dir), manifest_json.stat().st_mtime_ns)
    if key not in _MANIFESTS:
        target = target_root / "inprocess-parse"
        result = dbtRunner().invoke(["parse", "--quiet", *_base_args(str(project.project_dir), str(project.profiles_dir), target)])
        if not result.success:
            raise RuntimeError(f"dbt parse failed in {project.project_dir}: {result.exception}")
        _MANIFESTS.clear()
        _MANIFESTS[key] = result.result
    return _MANIFESTS[key]


def warm(project_dir: str | Path, profiles_dir: str | Path) -> None:
    """Parse the project now (imports dbt and its adapter too), for the runs this process forks."""
    from dbt.adapters.factory import reset_adapters

    project = DbtProject(project_dir=project_dir, profiles_dir=profiles_dir)
    with _LOCK:
        _parsed_manifest(project, Path(project.project_dir) / "target")
        _fresh_duckdb_environment()
        # The parse registered an adapter holding a multiprocessing lock (a semaphore forked
        # processes would share); each invocation registers its own anyway (dbt resets them first).
        reset_adapters()


@dataclasses.dataclass
class InProcessInvocation:
    """One ``dbt build`` run in this process; ``stream()`` yields Dagster events as dbt emits them."""

    context: dg.AssetExecutionContext
    project: DbtProject
    args: list[str]
    target_path: Path
    manifest: dict
    translator: DagsterDbtTranslator
    success: bool = False
    error: BaseException | None = None
    failures: list[str] = dataclasses.field(default_factory=list)

    def stream(self) -> Iterator[Any]:
        from dbt.cli.main import dbtRunner
        from dbt_common.events.functions import msg_to_dict

        events: queue.Queue = queue.Queue()
        parsed = None

        def run() -> None:
            try:
                runner = dbtRunner(manifest=parsed, callbacks=[lambda msg: events.put(msg_to_dict(msg))])
                result = runner.invoke(self.args)
                self.success = bool(result.success)
                self.error = result.exception
                self.failures = _failures(result.result)
            except BaseException as exc:  # noqa: BLE001 - reported by the step, never lost
                self.error = exc
            finally:
                events.put(_DONE)

        with _LOCK:
            parsed = _parsed_manifest(self.project, self.target_path.parent)
            _fresh_duckdb_environment()
            worker = threading.Thread(target=run, name="dbt", daemon=True)
            worker.start()
            while (raw := events.get()) is not _DONE:
                if not raw.get("data", {}).get("node_info", {}).get("unique_id"):
                    continue
                event = DbtCoreCliEventMessage(raw_event=raw, event_history_metadata={})
                if not event.is_result_event:
                    continue
                yield from event.to_default_asset_events(
                    manifest=self.manifest, dagster_dbt_translator=self.translator, context=self.context,
                    target_path=self.target_path, project=self.project,
                )
            worker.join()
            _fresh_duckdb_environment()

    def is_successful(self) -> bool:
        return self.success and self.error is None


def _failures(execution: Any) -> list[str]:
    """What each failed node said (a model's error names its file and the fix), for the step's failure."""
    out = []
    for result in getattr(execution, "results", None) or []:
        status = str(getattr(result, "status", ""))
        if status.lower().endswith(("error", "fail")) and getattr(result, "message", None):
            node = getattr(result, "node", None)
            name = getattr(node, "unique_id", "?") if node is not None else "?"
            out.append(f"{name}: {result.message}")
    return out


# Each dbt invocation writes its own target folder (run results, logs, the audits and writes the
# step reads back; ~1 MB). The newest TARGETS_KEPT are kept (a failed run's dbt.log, linked from
# its metadata, stays readable), older ones go once nothing wrote to them for TARGETS_IDLE_SECONDS.
TARGETS_KEPT = 50
TARGETS_IDLE_SECONDS = 3600
_TARGET_NAME = re.compile(r"^.+-[0-9a-f]{7}-[0-9a-f]{7}$")


def prune_targets(target_root: Path, keep: int = TARGETS_KEPT, idle_seconds: float = TARGETS_IDLE_SECONDS) -> int:
    """Delete invocation folders beyond the newest ``keep`` that have been idle ``idle_seconds``; how many."""
    def last_write(folder: Path) -> float:
        log = folder / "dbt.log"
        return max(folder.stat().st_mtime, log.stat().st_mtime if log.exists() else 0.0)

    try:
        folders = [p for p in target_root.iterdir() if p.is_dir() and _TARGET_NAME.match(p.name)]
    except FileNotFoundError:
        return 0
    dated = []
    for folder in folders:
        try:
            dated.append((last_write(folder), folder))
        except FileNotFoundError:  # pruned by another run meanwhile
            continue
    dated.sort(reverse=True)
    now, removed = time.time(), 0
    for written, folder in dated[keep:]:
        if now - written >= idle_seconds:
            shutil.rmtree(folder, ignore_errors=True)
            removed += 1
    return removed


def dbt_build(context: dg.AssetExecutionContext, extra_args: Sequence[str] = ()) -> InProcessInvocation:
    """``dbt build`` of the context's selected models (Dagster subsetting, like ``DbtCliResource.cli``)."""
    manifest, translator, project = get_manifest_and_translator_from_dbt_assets([context.assets_def])
    if project is None:
        raise RuntimeError(f"{context.op.name}: the dbt assets carry no DbtProject; build them with project=")
    params = get_updated_cli_invocation_params_for_context(
        context=context, manifest=manifest, dagster_dbt_translator=translator
    )
    project_dir = str(params.dbt_project.project_dir if params.dbt_project else project.project_dir)
    run = context.run.run_id
    prune_targets(Path(project.project_dir) / "target")
    target_path = Path(project.project_dir) / "target" / f"{context.op_execution_context.op.name}-{run[:7]}-{uuid.uuid4().hex[:7]}"
    args = ["build", *params.selection_args, *extra_args]
    if params.indirect_selection and "--indirect-selection" not in extra_args:
        args += ["--indirect-selection", params.indirect_selection]
    args += _base_args(project_dir, str(project.profiles_dir), target_path)
    print(f"dbt (in-process): {' '.join(args)}", file=sys.stderr, flush=True)
    return InProcessInvocation(
        context=context, project=project, args=args, target_path=target_path,
        manifest=params.manifest, translator=params.dagster_dbt_translator,
    )
