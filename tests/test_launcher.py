"""The embedded default's run launcher (ratatouille_assets/defs/launcher.py, defs/warm.py): runs
forked from a warm worker execute as Dagster's own run workers do; edited code gets a new worker;
a run whose process died is reported; RATATOUILLE_WARM_RUNS=0 starts a fresh process. Pins the
private Dagster API the worker calls."""

from __future__ import annotations

import csv
import inspect
import os
import shutil
import signal
import time
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq
import pytest
from dagster._cli.api import execute_run_command
from dagster._core.definitions.reconstruct import ReconstructableRepository
from dagster._core.instance.ref import InstanceRef
from dagster._core.launcher import LaunchRunContext, WorkerStatus
from dagster._grpc.types import ExecuteRunArgs

from ratatouille_assets.defs import warm
from ratatouille_assets.defs.launcher import PID_TAG, WarmRunLauncher
from ratatouille_assets.demo import PROJECT_ROOT, ensure_dagster_home
from ratatouille_assets.ingest.generator import SampleSpec, generate
from ratatouille_assets.lakehouse import duck
from ratatouille_assets.lakehouse.catalog import load_catalog
from ratatouille_assets.settings import get_settings
from tests.conftest import use_home

DAY = "2024-01-01"


def test_the_private_dagster_api_it_calls_is_still_there(settings):
    # The run process calls `dagster api execute_run`'s own function with the launcher's arguments.
    assert list(inspect.signature(execute_run_command.callback).parameters) == ["input_json", "compressed_input_json"]
    assert "_execute_run_command_body(" in inspect.getsource(execute_run_command.callback)
    assert list(ExecuteRunArgs.__new__.__code__.co_varnames[1:5]) == [
        "job_origin", "run_id", "instance_ref", "set_exit_code_on_failure"]
    # The worker imports the instance's classes by the module names dagster.yaml gives.
    ref = InstanceRef.from_dir(str(ensure_dagster_home(settings)))
    assert "ratatouille_assets.defs.storage" in {getattr(v, "module_name", None) for v in ref}


def test_the_code_fingerprint_changes_with_any_file_a_run_is_made_of(settings, tmp_path, monkeypatch):
    soda = tmp_path / "soda"
    shutil.copytree(PROJECT_ROOT / "soda", soda)
    monkeypatch.setenv("RATATOUILLE_SODA_DIR", str(soda))
    get_settings.cache_clear()
    before = warm.code_fingerprint(get_settings())
    assert warm.code_fingerprint(get_settings()) == before
    (soda / "new_checks.yml").write_text("checks for x:\n  - row_count > 0\n")
    assert warm.code_fingerprint(get_settings()) != before


def test_the_code_fingerprint_ignores_what_dbt_writes_into_the_project(settings, tmp_path, monkeypatch):
    # dbt's build output and its anonymous user id (.user.yml, written by the first `dbt` a user
    # runs by hand) are not code: a worker must not turn stale over them.
    project = tmp_path / "dbt_project"
    shutil.copytree(PROJECT_ROOT / "dbt_project", project, ignore=shutil.ignore_patterns("target", "logs", ".user.yml"))
    monkeypatch.setenv("RATATOUILLE_DBT_PROJECT_DIR", str(project))
    get_settings.cache_clear()
    before = warm.code_fingerprint(get_settings())
    (project / ".user.yml").write_text("id: 5d9e1c1e-0000-0000-0000-000000000000\n")
    (project / "logs").mkdir()
    (project / "logs" / "dbt.log").write_text("a log line\n")
    (project / "target" / "dbt_daily-abc").mkdir(parents=True)
    (project / "target" / "dbt_daily-abc" / "run_results.json").write_text("{}")
    assert warm.code_fingerprint(get_settings()) == before
    (project / "models" / "new_model.sql").write_text("select 1 as x\n")
    assert warm.code_fingerprint(get_settings()) != before


@pytest.fixture
def lakehouse(tmp_path, monkeypatch):
    """A home with one landing day of sample data, the project's dagster.yaml, the Soda files copied
    (a test edits them), and an instance whose launcher is the warm one."""
    settings = use_home(monkeypatch, tmp_path / "rt")
    soda = tmp_path / "soda"
    shutil.copytree(PROJECT_ROOT / "soda", soda)
    monkeypatch.setenv("RATATOUILLE_SODA_DIR", str(soda))
    get_settings.cache_clear()
    settings = get_settings()
    ensure_dagster_home(settings)
    generate(SampleSpec(days=1, rows_per_day=200), settings.landing)
    with dg.DagsterInstance.get() as instance:
        assert isinstance(instance.run_launcher, WarmRunLauncher)
        yield settings, instance
        instance.run_launcher.dispose()
    get_settings.cache_clear()


def _new_run(instance: dg.DagsterInstance) -> dg.DagsterRun:
    """The day's all_layers run, created as the daemon's queue would hand it to the launcher."""
    repository = ReconstructableRepository.for_module("ratatouille_assets.definitions", "defs", str(PROJECT_ROOT))
    recon = repository.get_reconstructable_job("all_layers")
    return instance.create_run_for_job(job_def=recon.get_definition(), tags={"dagster/partition": DAY},
                                       job_code_origin=recon.get_python_origin())


def _launch(instance: dg.DagsterInstance) -> dg.DagsterRun:
    run = _new_run(instance)
    instance.launch_run(run.run_id, None)
    return instance.get_run_by_id(run.run_id)


def _finished(instance: dg.DagsterInstance, run_id: str, timeout: float = 600) -> dg.DagsterRun:
    deadline = time.monotonic() + timeout
    while not (run := instance.get_run_by_id(run_id)).is_finished:
        assert time.monotonic() < deadline, f"run {run_id} still {run.status} after {timeout:.0f} s"
        time.sleep(0.2)
    return run


def _engine_messages(instance: dg.DagsterInstance, run_id: str) -> list[str]:
    return [e.message for e in instance.all_logs(run_id) if e.dagster_event and e.dagster_event.is_engine_event]


def _landing_rows(folder: Path) -> int:
    """Rows of a day's landing files, read without DuckDB."""
    total = 0
    for path in sorted(folder.iterdir()):
        if path.suffix == ".csv":
            with path.open(newline="") as f:
                total += sum(1 for _ in csv.DictReader(f))
        elif path.suffix == ".jsonl":
            total += sum(1 for line in path.read_text().splitlines() if line.strip())
        elif path.suffix == ".parquet":
            total += pq.read_metadata(path).num_rows
    return total


def _bronze_rows(settings, source: str) -> int:
    location = load_catalog(settings).load_table(f"bronze.{source}").metadata_location
    return duck.connect(settings).execute(
        f"SELECT count(*) FROM iceberg_scan('{location}') "
        f"WHERE _landing_date = DATE '{DAY}'").fetchone()[0]


@pytest.mark.slow
def test_runs_fork_from_one_warm_worker_and_edited_code_gets_a_new_one(lakehouse):
    settings, instance = lakehouse
    first = _finished(instance, _launch(instance).run_id)
    assert first.status == dg.DagsterRunStatus.SUCCESS
    assert any("a fork of the warm run worker" in m for m in _engine_messages(instance, first.run_id))
    worker = instance.run_launcher._worker
    # The forked run did the day's work: every landing row is in bronze, counted without the platform.
    for source in ("orders", "order_items", "customers"):
        assert _bronze_rows(settings, source) == _landing_rows(Path(settings.landing) / source / DAY), source

    second = _finished(instance, _launch(instance).run_id)
    assert second.status == dg.DagsterRunStatus.SUCCESS
    assert instance.run_launcher._worker is worker and worker.poll() is None  # the same warm worker
    assert first.tags[PID_TAG] != second.tags[PID_TAG]  # a process per run

    (settings.soda_dir / "README.txt").write_text("an edit the worker did not load\n")
    third = _finished(instance, _launch(instance).run_id)
    assert third.status == dg.DagsterRunStatus.SUCCESS
    assert any("a fork of the warm run worker" in m for m in _engine_messages(instance, third.run_id))
    assert instance.run_launcher._worker is not worker  # the stale worker exited, a new one loaded the edit
    worker.wait(30)
    assert worker.returncode is not None


@pytest.mark.slow
def test_a_worker_that_parsed_the_dbt_project_is_not_stale_for_the_first_run(lakehouse, tmp_path, monkeypatch):
    """A fresh clone has no manifest: the worker parses the project while it warms up, and its
    fingerprint must name the manifest it parsed, or the first launch restarts it (5 s)."""
    settings, instance = lakehouse
    project = tmp_path / "dbt_project"
    shutil.copytree(settings.dbt_project_dir, project, ignore=shutil.ignore_patterns("target", "logs"))
    monkeypatch.setenv("RATATOUILLE_DBT_PROJECT_DIR", str(project))
    get_settings.cache_clear()
    assert not (project / "target" / "manifest.json").exists()
    instance.run_launcher.warm_up()
    worker = instance.run_launcher._worker
    run = _finished(instance, _launch(instance).run_id)
    assert run.status == dg.DagsterRunStatus.SUCCESS
    assert (project / "target" / "manifest.json").exists()
    assert instance.run_launcher._worker is worker and worker.poll() is None  # not restarted as stale


@pytest.mark.slow
def test_a_run_whose_process_was_killed_is_reported_failed_by_the_health_check(lakehouse):
    _, instance = lakehouse
    run = _launch(instance)
    pid = int(run.tags[PID_TAG])
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 60
    while (health := instance.run_launcher.check_run_worker_health(run)).status == WorkerStatus.RUNNING:
        assert time.monotonic() < deadline, "the killed run process still looks alive"
        time.sleep(0.1)
    assert health.status == WorkerStatus.FAILED and str(pid) in health.msg


@pytest.mark.slow
def test_warm_runs_off_starts_a_fresh_process(lakehouse, monkeypatch):
    settings, instance = lakehouse
    monkeypatch.setenv("RATATOUILLE_WARM_RUNS", "off")
    get_settings.cache_clear()
    launcher = WarmRunLauncher()
    launcher.register_instance(instance)
    run = _new_run(instance)
    launcher.launch_run(LaunchRunContext(dagster_run=run, workspace=None))
    done = _finished(instance, run.run_id)
    assert done.status == dg.DagsterRunStatus.SUCCESS
    assert any("a fresh process" in m for m in _engine_messages(instance, run.run_id))
    assert launcher._worker is None
    assert _bronze_rows(settings, "orders") == _landing_rows(Path(settings.landing) / "orders" / DAY)


def test_dbt_target_folders_do_not_pile_up(tmp_path):
    from ratatouille_assets.defs.dbt_inprocess import prune_targets

    old = time.time() - 7200
    names = [f"dbt_daily-{i:07x}-abcdef{i % 10}" for i in range(60)]
    for i, name in enumerate(names):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "dbt.log").write_text("log\n")
        stamp = old + i  # names[59] is the newest
        os.utime(folder / "dbt.log", (stamp, stamp))
        os.utime(folder, (stamp, stamp))
    busy = tmp_path / names[0]  # the oldest folder, but its run is still writing its log
    (busy / "dbt.log").write_text("still running\n")
    (tmp_path / "inprocess-parse").mkdir()  # the process's parse: never an invocation folder
    (tmp_path / "manifest.json").write_text("{}")

    # The newest 50 by last write are the busy one and names[11:]; names[1:11] are older and idle.
    assert prune_targets(tmp_path, keep=50) == 10
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted([*names[11:], names[0], "inprocess-parse", "manifest.json"])
    # Beyond the newest 50 but written within the hour: kept.
    assert prune_targets(tmp_path, keep=5, idle_seconds=24 * 3600) == 0
    assert prune_targets(tmp_path, keep=50) == 0
