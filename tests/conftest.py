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
