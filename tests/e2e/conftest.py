"""Fixtures for tests against a running ``make dev``: a small demo lakehouse behind the real UI."""

from __future__ import annotations

from collections.abc import Iterator

import dagster as dg
import pytest

from ratatouille_assets.demo import ensure_dagster_home, run_pipeline
from ratatouille_assets.ingest.generator import SampleSpec, generate
from ratatouille_assets.settings import get_settings
from tests.conftest import use_home
from tests.e2e.dagster_dev import DagsterDev

DEMO = SampleSpec(days=3, rows_per_day=300)
DEMO_DAYS = [DEMO.day(i).isoformat() for i in range(DEMO.days)]


@pytest.fixture(scope="module")
def dagster_dev_demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DagsterDev]:
    """``make demo`` on :data:`DEMO` (so the UI has runs, materializations and checks), then ``make dev``.

    The lakehouse environment stays set while the module's tests run, so ``get_settings()`` in a
    test points at the same catalog and warehouse as the server.
    """
    with pytest.MonkeyPatch.context() as mp:
        home = tmp_path_factory.mktemp("e2e")
        settings = use_home(mp, home)
        ensure_dagster_home(settings)  # the project's dagster.yaml, as `make demo` and `make dev` use
        generate(DEMO, settings.landing)
        with dg.DagsterInstance.get() as instance:
            report = run_pipeline(DEMO_DAYS, instance=instance)
        assert report.checks_failed == 0, "the demo pipeline failed its checks: the UI would show a partial graph"
        with DagsterDev(home, log_name="dagster-dev-demo") as dev:
            yield dev
    get_settings.cache_clear()
