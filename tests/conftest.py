"""Shared fixtures: every test gets its own lakehouse home (catalog, warehouse, landing)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ratatouille_assets.settings import Settings, get_settings


def use_home(mp: pytest.MonkeyPatch, home: Path) -> Settings:
    mp.setenv("RATATOUILLE_HOME", str(home))
    mp.setenv("DAGSTER_HOME", str(home / "dagster"))
    mp.setenv("RATATOUILLE_DUCKDB_THREADS", "2")
    mp.setenv("RATATOUILLE_DUCKDB_MEMORY_LIMIT", "2GB")
    (home / "dagster").mkdir(parents=True, exist_ok=True)
    get_settings.cache_clear()
    return get_settings()


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    yield use_home(monkeypatch, tmp_path / "rt")
    get_settings.cache_clear()


# The S3 (moto over HTTP) and PostgreSQL servers, one of each per test module that asks.
@pytest.fixture(scope="module")
def s3_srv():
    from tests.services import s3_server

    with s3_server() as server:
        yield server


@pytest.fixture(scope="module")
def pg():
    from tests.services import postgres_server

    with postgres_server() as server:
        yield server


def use_backend(request: pytest.FixtureRequest, mp: pytest.MonkeyPatch, home: Path, name: str) -> Settings:
    """For a fixture parametrized "local" | "s3": the local default under ``home``, or the warehouse
    and landing on S3 over HTTP and the catalog on PostgreSQL (bucket and database ``name``)."""
    if request.param == "s3":
        from tests.test_s3_postgres import use_server

        return use_server(mp, home, request.getfixturevalue("s3_srv"), request.getfixturevalue("pg"), name)
    return use_home(mp, home)
