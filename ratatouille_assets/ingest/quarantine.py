"""Set bad landing files aside, with the reason, so the good files of the same day still load.

A quarantined file is a *copy* under ``<quarantine root>/<source>/<day>/`` (a reference
source's: ``<quarantine root>/<source>/``) next to a
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

from ratatouille_assets.lakehouse import s3

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


def bad_file_message(file: str, *, source: str, day: str | None, reason: str, detail: str, action: str) -> str:
    """The one wording of a bad file, shared by the quarantine sidecar and the ``fail`` error."""
    where = f"source '{source}', day {day}" if day else f"reference source '{source}'"
    return f"{file} ({reason}, {where}): {detail}. {action}"


def safe_name(path: str) -> str:
    """The file's name without directories, reduced to ``[A-Za-z0-9._-]`` and not hidden."""
    name = _UNSAFE_CHARS.sub("_", PurePosixPath(path.replace("\\", "/")).name)
    return "_" + name[1:] if name.startswith(".") else name


def quarantine_file(
    src_path: str,
    *,
    quarantine_root: str,
    source: str,
    day: str | None,
    file: str,
    reason: str,
    detail: str,
    action: str,
    run_id: str,
    s3_client=None,
) -> QuarantinedFile:
    """Copy ``src_path`` (``file`` relative to landing) into the quarantine and write its sidecar.

    Either side may be on S3 (copied with ``s3_client``, default: the configured one;
    server-side when both are).
    """
    name = safe_name(file)
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
    text = json.dumps(sidecar, indent=2) + "\n"
    copy = reason != UNSAFE_PATH
    if s3.is_s3(quarantine_root):
        target = _to_bucket(src_path, quarantine_root, source, day, name, text, copy, s3_client or s3.client())
    elif s3.is_s3(src_path):
        client = s3_client or s3.client()
        target = _to_folder(quarantine_root, source, day, name, text, copy and (lambda tmp: s3.copy(client, src_path, str(tmp))))
    else:
        target = _to_folder(quarantine_root, source, day, name, text, copy and (lambda tmp: shutil.copyfile(src_path, tmp)))
    return QuarantinedFile(file=file, reason=reason, message=message, target=target)


def _to_folder(root: str, source: str, day: str | None, name: str, sidecar: str, fill_copy: Callable[[Path], object] | bool) -> str | None:
    """The copy (``fill_copy`` writes it to a temporary path; False: no copy), then the sidecar."""
    folder = Path(root) / source / (day or "")
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / name if fill_copy else None
    if target is not None:
        _replace(target, fill_copy)
    _replace(folder / (name + SIDECAR_SUFFIX), lambda tmp: tmp.write_text(sidecar))
    return str(target) if target else None


def _to_bucket(src_path: str, root: str, source: str, day: str | None, name: str, sidecar: str, copy: bool, s3_client) -> str | None:
    """The copy first, then the sidecar: each object appears whole (one PUT or server-side copy)."""
    parts = (source, day) if day else (source,)
    target = s3.join(root, *parts, name) if copy else None
    if target is not None:
        s3.copy(s3_client, src_path, target)
    s3.put_bytes(s3_client, s3.join(root, *parts, name + SIDECAR_SUFFIX), sidecar.encode(), "application/json")
    return target


def _replace(target: Path, fill: Callable[[Path], object]) -> None:
    """Write through a temporary file so a reader never sees half a copy, even when two runs overlap."""
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        fill(tmp)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
