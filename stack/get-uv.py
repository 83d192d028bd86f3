#!/usr/bin/env python3
"""Fetch a pinned uv binary from PyPI without pip: what `make uv` runs when uv is not on PATH.

    python3 stack/get-uv.py DEST [--version X.Y.Z] [--index https://pypi.org]

Standard library only, so it runs on a stock Debian/Ubuntu python3 (no pip, no venv module,
PEP 668 "externally managed"). It reads the release's file list from PyPI's JSON API, picks the
wheel for this machine (glibc: manylinux, else musllinux; x86_64 or aarch64 Linux, or macOS),
checks the wheel's sha256 against PyPI's, and writes the wheel's ``uv-<version>.data/scripts/uv``
to DEST. Nothing is installed into any Python. Proxies (https_proxy/no_proxy) and a private CA
(SSL_CERT_FILE / SSL_CERT_DIR) work through urllib's defaults.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile

# The uv the project is developed with (the Dockerfile's UV_VERSION is the same).
UV_VERSION = "0.13.9"
ARCHES = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64"}
TIMEOUT = 60


def log(msg: str) -> None:
    print(f"get-uv: {msg}", file=sys.stderr, flush=True)


def urlopen(url: str):
    """urllib with a few retries on network errors (not on HTTP errors such as 404)."""
    for attempt in range(4):
        try:
            return urllib.request.urlopen(urllib.request.Request(url, headers={"User-Agent": "ratatouille-get-uv"}),
                                          timeout=TIMEOUT)
        except urllib.error.HTTPError:
            raise
        except (urllib.error.URLError, OSError) as exc:
            if attempt == 3:
                raise SystemExit(f"get-uv: cannot reach {url}: {exc}") from exc
            log(f"{url}: {exc}; retrying")
            time.sleep(2 * (attempt + 1))
    raise AssertionError("unreachable")


def release_files(index: str, version: str) -> tuple[str, list[dict]]:
    """(the URL the list came from, its files): /pypi/uv/<version>/json, else the project's JSON
    (some PyPI mirrors serve only /pypi/<name>/json)."""
    url = f"{index}/pypi/uv/{version}/json"
    try:
        with urlopen(url) as response:
            return url, json.load(response)["urls"]
    except urllib.error.HTTPError as exc:
        if exc.code != 404:
            raise SystemExit(f"get-uv: {url}: HTTP {exc.code}") from exc
    url = f"{index}/pypi/uv/json"
    try:
        with urlopen(url) as response:
            releases = json.load(response)["releases"]
    except urllib.error.HTTPError as exc:
        raise SystemExit(f"get-uv: {url}: HTTP {exc.code}") from exc
    if version not in releases:
        raise SystemExit(f"get-uv: uv {version} is not on {index}")
    return url, releases[version]


def platform_tags(filename: str) -> list[str]:
    # name-version-python-abi-platform.whl; the platform part may be several tags joined by dots.
    return filename[: -len(".whl")].split("-")[-1].split(".")


def pick_wheel(files: list[dict]) -> dict:
    """The best wheel for this machine, as pip would rank them: the newest compatible manylinux
    tag on glibc, musllinux otherwise (or when no manylinux wheel fits)."""
    system = platform.system()
    arch = ARCHES.get(platform.machine().lower())
    if arch is None or system not in ("Linux", "Darwin"):
        raise SystemExit(f"get-uv: no uv wheel chosen for {system}/{platform.machine()}: install uv yourself "
                         "(https://docs.astral.sh/uv/getting-started/installation/) and put it on PATH")
    libc, libc_version = platform.libc_ver()
    glibc = tuple(int(x) for x in libc_version.split(".")[:2]) if libc == "glibc" and libc_version else None
    legacy = {"manylinux1": (2, 5), "manylinux2010": (2, 12), "manylinux2014": (2, 17)}
    mac_arch = {"x86_64": "x86_64", "aarch64": "arm64"}[arch]
    best, best_rank = None, None
    for f in files:
        if f.get("packagetype") != "bdist_wheel" or f.get("yanked"):
            continue
        for tag in platform_tags(f["filename"]):
            rank = None
            if system == "Darwin":
                if re.fullmatch(rf"macosx_\d+_\d+_({mac_arch}|universal2)", tag):
                    rank = (0, 0, 0)
            elif m := re.fullmatch(rf"manylinux_(\d+)_(\d+)_{arch}", tag):
                need = (int(m[1]), int(m[2]))
                rank = (2, *need) if glibc and need <= glibc else None
            elif m := re.fullmatch(rf"(manylinux1|manylinux2010|manylinux2014)_{arch}", tag):
                need = legacy[m[1]]
                rank = (2, *need) if glibc and need <= glibc else None
            elif re.fullmatch(rf"musllinux_\d+_\d+_{arch}", tag):
                rank = (1, 0, 0)  # statically linked: runs on glibc too, the fallback
            if rank is not None and (best_rank is None or rank > best_rank):
                best, best_rank = f, rank
    if best is None:
        raise SystemExit(f"get-uv: no uv wheel for {system} {arch} (libc {libc or '?'} {libc_version})")
    return best


def download(url: str, sha256: str, into: str) -> str:
    path = os.path.join(into, "uv.whl")
    digest = hashlib.sha256()
    with urlopen(url) as response, open(path, "wb") as out:
        while chunk := response.read(1 << 20):
            digest.update(chunk)
            out.write(chunk)
    if digest.hexdigest() != sha256:
        raise SystemExit(f"get-uv: sha256 mismatch for {url}: got {digest.hexdigest()}, PyPI says {sha256}")
    return path


def installed_version(path: str) -> str | None:
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return out.split()[1] if out.startswith("uv ") else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dest", help="where to write the uv binary, e.g. .ratatouille/tools/uv")
    parser.add_argument("--version", default=UV_VERSION, help=f"uv version (default {UV_VERSION})")
    parser.add_argument("--index", default=os.environ.get("RATATOUILLE_PYPI", "https://pypi.org"),
                        help="PyPI (with its JSON API); default $RATATOUILLE_PYPI or https://pypi.org")
    args = parser.parse_args()
    dest = os.path.abspath(args.dest)
    index = args.index.rstrip("/")

    if installed_version(dest) == args.version:
        log(f"uv {args.version} already at {dest}")
        return 0
    source, files = release_files(index, args.version)
    wheel = pick_wheel(files)
    url = urllib.parse.urljoin(source, wheel["url"])  # mirrors may list relative URLs
    log(f"downloading {wheel['filename']} ({wheel['size'] / 1e6:.1f} MB)")
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    with tempfile.TemporaryDirectory(dir=os.path.dirname(dest), prefix=".get-uv-") as tmp:
        whl = download(url, wheel["digests"]["sha256"], tmp)
        member = f"uv-{args.version}.data/scripts/uv"
        with zipfile.ZipFile(whl) as zf:
            try:
                info = zf.getinfo(member)
            except KeyError:
                raise SystemExit(f"get-uv: {wheel['filename']} has no {member}") from None
            binary = os.path.join(tmp, "uv")
            with zf.open(info) as src, open(binary, "wb") as out:
                while chunk := src.read(1 << 20):
                    out.write(chunk)
        os.chmod(binary, 0o755)
        if installed_version(binary) != args.version:
            raise SystemExit(f"get-uv: {member} from {wheel['filename']} does not run here")
        os.replace(binary, dest)
    log(f"uv {args.version} -> {dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
