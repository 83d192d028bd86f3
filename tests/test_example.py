"""``rat example remove`` / ``restore`` on a git copy of this repository: exactly the example shop's
folders and marked blocks go, and come back byte for byte from git, next to the user's own sources."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest
import yaml

from ratatouille_assets.ingest.sources import load_sources_file
from ratatouille_assets.project.example import FOLDERS, MARKED_FILES, ExampleError, remove, restore
from tests.project import working_tree_repo

SHOP = {"orders", "order_items", "customers", "products", "fx_rates"}
MARKER = "example shop"
USER_SOURCE = """\
  loans:
    description: the user's own source, added after the example was removed
    format: jsonl
    primary_key: [loan_id]
    columns:
      loan_id: varchar
      loaned_at: timestamp
"""


def git(root: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "test", "GIT_AUTHOR_EMAIL": "test@localhost",
           "GIT_COMMITTER_NAME": "test", "GIT_COMMITTER_EMAIL": "test@localhost"}
    return subprocess.run(["git", *args], cwd=root, env=env, check=True, capture_output=True, text=True).stdout


def digest(root: Path, under: str = "") -> dict[str, str]:
    """sha256 of every file under ``root/under`` (the .git folder aside)."""
    base = root / under
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(base.rglob("*")) if p.is_file() and ".git" not in p.relative_to(root).parts}


@pytest.fixture
def repo(tmp_path) -> Path:
    """A one-commit git repository of this working tree."""
    return working_tree_repo(tmp_path / "repo")


def changed(root: Path) -> set[str]:
    """Paths git sees as changed (deleted folders collapse to their files)."""
    return {line[3:] for line in git(root, "status", "--porcelain", "--untracked-files=all").splitlines()}


def test_remove_deletes_exactly_the_example_folders_and_marked_blocks(repo):
    shop_files = {n for n in git(repo, "ls-files").split() if any(n.startswith(f + "/") for f in FOLDERS)}
    assert shop_files, "the repository has no example shop to remove"

    changes = remove(repo)
    assert {c.path for c in changes} == {f + "/" for f in FOLDERS} | set(MARKED_FILES)
    for folder in FOLDERS:
        assert not (repo / folder).exists()
    assert changed(repo) == shop_files | set(MARKED_FILES)  # nothing else touched

    sources_text = (repo / "sources.yml").read_text()
    dbt_text = (repo / "dbt_project/dbt_project.yml").read_text()
    assert MARKER not in sources_text and MARKER not in dbt_text
    assert not [name for name in SHOP if f"\n  {name}:" in sources_text]
    parsed = load_sources_file(repo / "sources.yml")
    assert parsed.sources == {} and parsed.start == "2024-01-01"  # partitions.start stays
    dbt_project = yaml.safe_load(dbt_text)
    assert "accepted_currencies" not in dbt_project["vars"] and dbt_project["vars"]["reporting_currency"] == "USD"

    assert remove(repo) == []  # a second remove has nothing to do


def test_restore_of_an_uncommitted_removal_gives_back_the_same_bytes(repo):
    before = digest(repo)
    remove(repo)
    assert digest(repo) != before
    changes = restore(repo)
    assert {c.path for c in changes} == {f + "/" for f in FOLDERS} | set(MARKED_FILES)
    assert digest(repo) == before
    assert changed(repo) == set()


def test_restore_after_a_committed_removal_keeps_the_users_new_source(repo):
    folders = {f: digest(repo, f) for f in FOLDERS}
    dbt_yml = (repo / "dbt_project/dbt_project.yml").read_bytes()
    remove(repo)
    git(repo, "commit", "-q", "-am", "remove the example shop")
    sources = repo / "sources.yml"
    assert sources.read_text().endswith("sources:\n")
    sources.write_text(sources.read_text() + USER_SOURCE)
    assert set(load_sources_file(sources).sources) == {"loans"}

    restore(repo)
    assert {f: digest(repo, f) for f in FOLDERS} == folders
    assert (repo / "dbt_project/dbt_project.yml").read_bytes() == dbt_yml
    text = sources.read_text()
    assert USER_SOURCE in text and text.count(f"# >>> {MARKER}") == 1
    parsed = load_sources_file(sources)
    assert set(parsed.sources) == SHOP | {"loans"}
    assert parsed.sources["loans"].primary_key == ("loan_id",) and parsed.sources["orders"].event_time == "order_ts"


def test_restore_refuses_when_the_example_is_there(repo):
    with pytest.raises(ExampleError, match=r"rat example remove` first"):
        restore(repo)
    # Partly there counts too: one folder left behind is not overwritten.
    remove(repo)
    (repo / FOLDERS[2] / "bronze").mkdir(parents=True)
    with pytest.raises(ExampleError, match="remove` first"):
        restore(repo)


@pytest.mark.slow
def test_the_definitions_lose_the_shop_with_remove_and_get_it_back_with_restore(repo, settings, monkeypatch):
    import dagster as dg

    from ratatouille_assets.definitions import build_definitions
    from ratatouille_assets.settings import get_settings

    monkeypatch.setenv("RATATOUILLE_SOURCES_FILE", str(repo / "sources.yml"))
    monkeypatch.setenv("RATATOUILLE_DBT_PROJECT_DIR", str(repo / "dbt_project"))
    monkeypatch.setenv("RATATOUILLE_SODA_DIR", str(repo / "soda"))
    shop = {dg.AssetKey(["bronze", "orders"]), dg.AssetKey(["gold", "kpi_daily_sales"])}

    def keys() -> set[dg.AssetKey]:
        get_settings.cache_clear()
        defs = build_definitions()
        defs.get_repository_def()  # what loading the code location does: every job, schedule and sensor resolves
        return set(defs.resolve_asset_graph().get_all_asset_keys())

    assert shop <= keys()
    remove(repo)
    without = keys()
    assert not shop & without
    assert not [k for k in without if k.path[0] in ("bronze", "silver", "gold")]
    restore(repo)
    assert shop <= keys()
