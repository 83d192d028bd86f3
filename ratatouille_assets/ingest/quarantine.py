"""Set bad landing files aside, with the reason, so the good files of the same day still load.

A quarantined file is a *copy* under ``<quarantine root>/<source>/<day>/`` next to a
``<name>.reason.json`` sidecar: landing stays the untouched record of what was delivered, and
re-running a partition overwrites the same two files instead of piling up duplicates.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path, PurePosixPath

# A path that leaves the landing zone is never opened, not even to copy it: only the sidecar is written.
UNSAFE_PATH = "unsafe_path"
SIDECAR_SUFFIX = ".reason.json"
_UNSAFE_CHARS = re.compile(r"[^A-Za-z0-9._-]")


@dataclasses.dataclass(frozen=True)
class QuarantinedFile:
    """One file set aside: ``file`` relative to landing, ``target`` the copy (None if not copied)."""

    file: str
    reason: str
    message: str
    target: str | None


def bad_file_message(file: str, *, source: str, day: str, reason: str, detail: str, action: str) -> str:
    """The one wording of a bad file, shared by the quarantine sidecar and the ``fail`` error."""
    return f"{file} ({reason}, source '{source}', day {day}): {detail}. {action}"


def safe_name(path: str) -> str:
    """The file's name without directories, reduced to ``[A-Za-z0-9._-]`` and not hidden."""
    name = _UNSAFE_CHARS.sub("_", PurePosixPath(path.replace("\\", "/")).name)
    return "_" + name[1:] if name.startswith(".") else name


def quarantine_file(
    src_path: str,
    *,
    quarantine_root: str,
    source: str,
    day: str,
    file: str,
    reason: str,
    detail: str,
    action: str,
    run_id: str,
) -> QuarantinedFile:
    """Copy ``src_path`` (``file`` relative to landing) into the quarantine and write its sidecar."""
    if src_path.startswith("s3://") or quarantine_root.startswith("s3://"):
        raise NotImplementedError(
            f"{file}: quarantining to or from S3 is not supported yet; set on_bad_file: fail for source '{source}'"
        )
    folder = Path(quarantine_root) / source / day
    folder.mkdir(parents=True, exist_ok=True)
    name = safe_name(file)
    target = folder / name if reason != UNSAFE_PATH else None
    if target is not None:
        _replace(target, lambda tmp: shutil.copyfile(src_path, tmp))
    message = bad_file_message(file, source=source, day=day, reason=reason, detail=detail, action=action)
    sidecar = {
        "file": file,
        "source": source,
        "day": day,
        "reason": reason,
        "message": message,
        "run_id": run_id,
        "quarantined_at": dt.datetime.now(dt.UTC).isoformat(),
    }
    _replace(folder / (name + SIDECAR_SUFFIX), lambda tmp: tmp.write_text(json.dumps(sidecar, indent=2) + "\n"))
    return QuarantinedFile(file=file, reason=reason, message=message, target=str(target) if target else None)


def _replace(target: Path, fill: Callable[[Path], object]) -> None:
    """Write through a temporary file so a reader never sees half a copy, even when two runs overlap."""
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        fill(tmp)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
