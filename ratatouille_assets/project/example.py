"""The example shop: what it is made of, and ``rat example remove`` / ``rat example restore``.

The shop is an example, not part of the platform. It lives in folders of its own and in marked
blocks of two shared files:

- ``dbt_project/models/example/`` (its silver and gold models), ``dbt_project/macros/example/``,
  ``soda/example/`` (its checks);
- the block between ``# >>> example shop`` and ``# <<< example shop`` in ``sources.yml`` (its five
  sources) and in ``dbt_project/dbt_project.yml`` (its accepted currencies).

``remove`` deletes exactly those. ``restore`` takes them back from git: from HEAD when the removal
is not committed, else from the commit before the one that removed them. (The sample data
generator, ``rat generate``, is platform code and stays.)
"""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
from pathlib import Path

FOLDERS = ("dbt_project/models/example", "dbt_project/macros/example", "soda/example")
MARKED_FILES = ("sources.yml", "dbt_project/dbt_project.yml")
BEGIN, END = "# >>> example shop", "# <<< example shop"


class ExampleError(RuntimeError):
    """The example cannot be removed or restored; the message says why and what to do."""


@dataclasses.dataclass(frozen=True)
class Change:
    path: str
    what: str

    def __str__(self) -> str:
        return f"{self.what:<9} {self.path}"


def _block(lines: list[str]) -> tuple[int, int] | None:
    """(first, last) line index of the marked block, markers included."""
    begin = next((i for i, line in enumerate(lines) if line.strip().startswith(BEGIN)), None)
    if begin is None:
        return None
    end = next((i for i in range(begin, len(lines)) if lines[i].strip().startswith(END)), None)
    if end is None:
        raise ExampleError(f"'{BEGIN}' has no matching '{END}' line")
    return begin, end


def is_present(root: Path) -> bool:
    return any((root / f).exists() for f in FOLDERS) or any(
        _block((root / f).read_text().splitlines()) for f in MARKED_FILES if (root / f).exists()
    )


def remove(root: Path) -> list[Change]:
    """Delete the example's folders and marked blocks under ``root``; what was removed."""
    changes = []
    for folder in FOLDERS:
        if (root / folder).exists():
            shutil.rmtree(root / folder)
            changes.append(Change(folder + "/", "deleted"))
    for name in MARKED_FILES:
        path = root / name
        if not path.exists():
            continue
        lines = path.read_text().splitlines(keepends=True)
        try:
            block = _block(lines)
        except ExampleError as exc:
            raise ExampleError(f"{path}: {exc}") from None
        if block:
            path.write_text("".join(lines[: block[0]] + lines[block[1] + 1:]))
            changes.append(Change(name, f"-{block[1] - block[0] + 1} lines"))
    return changes


def _git(root: Path, *args: str) -> str:
    try:
        result = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)
    except FileNotFoundError:
        raise ExampleError("git is not installed: restore needs the project's git history") from None
    if result.returncode != 0:
        raise ExampleError(f"git {' '.join(args)}: {result.stderr.strip()}")
    return result.stdout


def _source_commit(root: Path) -> str:
    """The newest commit that has the example: HEAD, or the parent of the commit that removed it."""
    try:
        _git(root, "rev-parse", "--git-dir")
    except ExampleError:
        raise ExampleError(f"{root} is not a git checkout: restore takes the example from its git history "
                           "(clone the repository to get it back)") from None
    if _git(root, "ls-tree", "HEAD", "--", FOLDERS[0]).strip():
        return "HEAD"
    removal = _git(root, "log", "-1", "--format=%H", "--diff-filter=D", "--", FOLDERS[0]).strip()
    if not removal:
        raise ExampleError("the git history has no example shop to restore")
    return removal + "^"


def restore(root: Path) -> list[Change]:
    """Bring the example's folders and marked blocks back under ``root`` from git."""
    if is_present(root):
        raise ExampleError(f"the example shop is (partly) present under {root}: `rat example remove` first, "
                           "or restore single files with git")
    commit = _source_commit(root)
    changes = []
    for folder in FOLDERS:
        files = _git(root, "ls-tree", "-r", "--name-only", commit, "--", folder).split()
        for name in files:
            target = root / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(subprocess.run(["git", "show", f"{commit}:{name}"], cwd=root, capture_output=True,
                                              check=True).stdout)
        if files:
            changes.append(Change(folder + "/", f"{len(files)} files"))
    for name in MARKED_FILES:
        old = _git(root, "show", f"{commit}:{name}").splitlines(keepends=True)
        block = _block(old)
        if block is None:
            continue
        anchor = old[block[0] - 1] if block[0] else None  # the line the block followed (e.g. "sources:")
        path = root / name
        lines = path.read_text().splitlines(keepends=True)
        at = next((i + 1 for i, line in enumerate(lines) if line == anchor), None) if anchor else 0
        if at is None:
            raise ExampleError(f"{path}: cannot find the line {anchor.strip()!r} the example block goes after; "
                               f"add the block from `git show {commit}:{name}` by hand")
        path.write_text("".join(lines[:at] + old[block[0]:block[1] + 1] + lines[at:]))
        changes.append(Change(name, f"+{block[1] - block[0] + 1} lines"))
    return changes


def main(argv: list[str] | None = None) -> int:
    import argparse

    from ratatouille_assets.settings import project_root

    parser = argparse.ArgumentParser(prog="rat example", description="remove or restore the example shop")
    parser.add_argument("action", choices=("remove", "restore"))
    args = parser.parse_args(argv)
    root = project_root()
    try:
        changes = remove(root) if args.action == "remove" else restore(root)
    except ExampleError as exc:
        print(f"error: {exc}")
        return 2
    for change in changes:
        print(f"  {change}")
    if not changes:
        print("  nothing to do: the example shop is not there")
    elif args.action == "remove":
        print("The example shop is removed (its tables stay in the warehouse until you drop them; "
              "`rat example restore` brings the files back).")
    else:
        print("The example shop is back: `make demo` loads its sample data.")
    return 0
