"""The dbt manifest the definitions load: generated sources synced, ``dbt parse`` run when stale.

``python -m ratatouille_assets.project.manifest`` is what ``make manifest`` (and the image build)
runs; the definitions call :func:`prepare` on every load, so an edited model or source shows up
on reload in ``dagster dev``. A built image has an up-to-date manifest and never parses.
"""

from __future__ import annotations

import contextlib
import fcntl
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from ratatouille_assets.ingest.sources import SourcesFile, load_sources_file
from ratatouille_assets.project import dbt_sources

_PROJECT_FOLDERS = ("models", "macros", "tests", "seeds", "snapshots")
_MISSING_SOURCE = re.compile(r"(\S+) '([^']+)' \(([^)]+)\) depends on a source named '([^']+)' which was not found")


class DbtProjectError(RuntimeError):
    """The dbt project cannot be parsed; the message names the files involved."""


def dbt_executable() -> str:
    """The dbt of this interpreter's environment, even when the venv is not on PATH."""
    beside = Path(sys.executable).parent / "dbt"
    return str(beside) if beside.exists() else "dbt"


def manifest_path(project_dir: Path) -> Path:
    return Path(project_dir) / "target" / "manifest.json"


def manifest_is_stale(project_dir: Path, profiles_dir: Path) -> bool:
    manifest = manifest_path(project_dir)
    if not manifest.exists():
        return True
    built = manifest.stat().st_mtime
    root = Path(project_dir)
    files = [root / "dbt_project.yml", Path(profiles_dir) / "profiles.yml"]
    for folder in _PROJECT_FOLDERS:
        files += [p for p in (root / folder).rglob("*") if p.is_file()]
    return any(p.exists() and p.stat().st_mtime > built for p in files)


def parse(project_dir: Path, profiles_dir: Path, sources_file: Path | None = None) -> None:
    result = subprocess.run(
        [dbt_executable(), "parse", "--quiet", "--profiles-dir", str(profiles_dir)],
        cwd=project_dir, capture_output=True, text=True,
    )
    if result.returncode == 0:
        return
    output = (result.stdout + result.stderr).strip()
    missing = _MISSING_SOURCE.search(output)
    if missing and sources_file is not None:
        kind, _node, path, source = missing.groups()
        namespace, _, name = source.partition(".")
        raise DbtProjectError(
            f"{Path(project_dir) / path} reads source('{namespace}', '{name}'), but {sources_file} declares no "
            f"source '{name}' (the dbt sources are generated from it: {dbt_sources.generated_path(project_dir)}). "
            f"Declare '{name}' in {sources_file.name}, or remove the reference from the {kind.lower()}."
        )
    raise DbtProjectError(f"dbt parse failed in {project_dir}:\n{output}")


def prepare(sources: SourcesFile, project_dir: Path, profiles_dir: Path | None = None) -> Path:
    """Sync the generated dbt sources with ``sources`` and re-parse if anything changed; the manifest path.

    One process at a time per project: run workers, `rat materialize` and the code server all load
    the definitions, and two of them parsing at once wrote ``manifest.json`` over each other while a
    third read it (``JSONDecodeError: Extra data``). The lock is an advisory ``flock`` on a file in
    ``target/``; where that cannot be created (a read-only image, which never parses) there is none."""
    profiles_dir = Path(profiles_dir or project_dir)
    with _project_lock(Path(project_dir)):
        dbt_sources.sync(sources, project_dir)
        if manifest_is_stale(project_dir, profiles_dir):
            parse(project_dir, profiles_dir, sources.path)
    return manifest_path(project_dir)


@contextlib.contextmanager
def _project_lock(project_dir: Path) -> Iterator[None]:
    try:
        (project_dir / "target").mkdir(exist_ok=True)
        handle = open(project_dir / "target" / ".prepare.lock", "a")  # noqa: SIM115 (closed below)
    except OSError:
        yield
        return
    try:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield
    finally:
        handle.close()  # releases the lock


def main(argv: list[str] | None = None) -> int:
    from ratatouille_assets.settings import get_settings

    settings = get_settings()
    try:
        path = prepare(load_sources_file(settings.sources_file), settings.dbt_project_dir)
    except (DbtProjectError, dbt_sources.SourcesMismatchError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"dbt manifest: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
