"""The rooms of ARCHITECTURE.md, kept without memory: storage, ingest, quality and the project
contracts never import Dagster, and nothing in the repository points outside it."""

from __future__ import annotations

import ast
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "ratatouille_assets"
NO_DAGSTER = ("lakehouse", "ingest", "quality", "project", "serve")
# Paths beside the repository that a clone does not have (spelled in parts, so this file is no hit).
OUTSIDE = ("/".join(("..", "shared")), "/".join(("shared", "DESIGN.md")))


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("room", NO_DAGSTER)
def test_a_room_below_the_definitions_never_imports_dagster(room):
    files = sorted((PACKAGE / room).rglob("*.py"))
    assert files
    offenders = {
        str(path.relative_to(ROOT)): sorted(m for m in imported_modules(path) if m.split(".")[0].startswith("dagster"))
        for path in files
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_nothing_in_the_repository_refers_to_files_outside_it():
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    hits = []
    for name in tracked:
        path = ROOT / name
        if not path.is_file() or path.suffix in (".lock", ".json"):
            continue
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue
        if any(needle in text for needle in OUTSIDE):
            hits.append(name)
    assert hits == []
