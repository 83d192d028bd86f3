"""A throwaway project of the tests' own: sources.yml, dbt models and Soda files that are not the
sample shop, on the platform's dbt skeleton (dbt_project.yml, profiles, macros, generic tests).

The settings point at it (RATATOUILLE_SOURCES_FILE, _DBT_PROJECT_DIR, _SODA_DIR); everything
else (catalog, warehouse, landing) is the test's own home, as :func:`tests.conftest.use_home` sets.
"""

from __future__ import annotations

import shutil
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
