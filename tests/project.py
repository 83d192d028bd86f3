"""A throwaway project of the tests' own: sources.yml, dbt models and Soda files that are not the
sample shop, on the platform's dbt skeleton (dbt_project.yml, profiles, macros, generic tests).

The settings point at it (RATATOUILLE_SOURCES_FILE, _DBT_PROJECT_DIR, _SODA_DIR); everything
else (catalog, warehouse, landing) is the test's own home, as :func:`tests.conftest.use_home` sets.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import textwrap
from pathlib import Path

import pytest

from ratatouille_assets.settings import get_settings

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_BLOCK = ("# >>> example shop", "# <<< example shop")


def _example_sources() -> str:
    """The example shop's sources, as sources.yml has them (between its markers)."""
    lines = (ROOT / "sources.yml").read_text().splitlines()
    begin = next(i for i, line in enumerate(lines) if line.strip() == EXAMPLE_BLOCK[0] or line.strip().startswith(EXAMPLE_BLOCK[0]))
    end = next(i for i, line in enumerate(lines) if line.strip().startswith(EXAMPLE_BLOCK[1]))
    return "\n".join(lines[begin:end + 1]) + "\n"


def make_project(
    root: Path,
    mp: pytest.MonkeyPatch,
    *,
    sources: str,
    models: dict[str, str] | None = None,
    soda: dict[str, str] | None = None,
    start: str = "2024-01-01",
    with_example: bool = False,
) -> Path:
    """Write a project under ``root`` and point the settings at it.

    ``sources`` is the body of the ``sources:`` mapping (YAML, dedented); ``models`` and ``soda``
    map paths relative to ``models/`` and ``soda/`` to their text. ``with_example`` keeps the
    sample shop beside them (its models, checks and sources), as a user who has not removed it.
    """
    dbt = root / "dbt_project"
    ignore = shutil.ignore_patterns("target", "logs", "_sources.generated.yml", *([] if with_example else ["example"]))
    shutil.copytree(ROOT / "dbt_project", dbt, ignore=ignore)
    if not with_example:
        (dbt / "models").mkdir(exist_ok=True)
    for path, text in (models or {}).items():
        target = dbt / "models" / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(textwrap.dedent(text).lstrip())
    soda_dir = root / "soda"
    if with_example:
        shutil.copytree(ROOT / "soda", soda_dir)
    soda_dir.mkdir(exist_ok=True)
    for path, text in (soda or {}).items():
        target = soda_dir / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(textwrap.dedent(text).lstrip())
    body = textwrap.indent(textwrap.dedent(sources).strip("\n"), "  ")
    example = _example_sources() if with_example else ""
    (root / "sources.yml").write_text(f"partitions:\n  start: {start}\n\nsources:\n{example}{body}\n")
    mp.setenv("RATATOUILLE_SOURCES_FILE", str(root / "sources.yml"))
    mp.setenv("RATATOUILLE_DBT_PROJECT_DIR", str(dbt))
    mp.setenv("RATATOUILLE_SODA_DIR", str(soda_dir))
    get_settings.cache_clear()
    return root


def write_csv(path: Path, header: str, rows: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def _git(cwd: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "test", "GIT_AUTHOR_EMAIL": "test@localhost",
           "GIT_COMMITTER_NAME": "test", "GIT_COMMITTER_EMAIL": "test@localhost"}
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout


def working_tree_repo(dest: Path) -> Path:
    """A one-commit repository of this working tree as a push would publish it: tracked files and
    new files that are not ignored, with uncommitted edits (so a test checks what is about to be
    committed, not the last commit). .venv, .ratatouille and the other ignored paths stay out."""
    listed = _git(ROOT, "ls-files", "-z", "--cached", "--others", "--exclude-standard").split("\0")
    for rel in filter(None, listed):
        src = ROOT / rel
        if not src.is_symlink() and not src.is_file():
            continue  # deleted in the working tree
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, target, follow_symlinks=False)
    _git(dest, "init", "-q", "-b", "main")
    _git(dest, "add", "-A")
    _git(dest, "commit", "-q", "-m", "working tree under test")
    return dest
