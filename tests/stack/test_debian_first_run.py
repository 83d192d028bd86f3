"""The README's first run on a stock Debian 12, for real: in a podman container of
localhost/debian-stock:bookworm (tests/stack/stock-image.sh: debootstrapped bookworm with python3,
make, git and ca-certificates; no pip, no venv module, no uv), a fresh ``git clone`` of this
working tree and ``make demo``, exactly as the README says. The Makefile has to fetch uv itself
(stack/get-uv.py), uv has to build .venv on Debian's /usr/bin/python3.11, and the demo has to
print its summary with rows in every gold table.

Network: PyPI from inside the container, with the host's CA bundle (a TLS-intercepting proxy's CA
is in it) as SSL_CERT_FILE, and the host's proxy variables if any. The host's uv cache is mounted so
``uv sync`` links from it instead of downloading ~1 GB again (``make install`` on the host has
filled it); RATATOUILLE_FIRST_RUN_UV_CACHE= (empty) runs without it, as a machine that never saw
the project would (cold)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.project import working_tree_repo

pytestmark = pytest.mark.stack

ROOT = Path(__file__).resolve().parents[2]
IMAGE = os.environ.get("STOCK_IMAGE", "localhost/debian-stock:bookworm")
CA_BUNDLE = Path(os.environ.get("CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt"))
PROXY_VARS = ("http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY")
GOLD = ("dim_customers", "dim_products", "fct_order_lines", "kpi_daily_sales")

# In the container, as root in /root: prove the system is stock, then the README's two steps.
FIRST_RUN = r"""
set -euo pipefail
echo "python3: $(command -v python3) $(python3 -c 'import sys; print(sys.version.split()[0])')"
if python3 -m pip --version >/dev/null 2>&1; then echo "STOCK-CHECK: pip is installed"; exit 97; fi
if command -v uv >/dev/null 2>&1; then echo "STOCK-CHECK: uv is on PATH"; exit 97; fi
git clone -q /src ratatouille
cd ratatouille
make demo
echo "--- after make demo"
cat .venv/pyvenv.cfg
echo "managed pythons: $(ls ~/.local/share/uv/python 2>/dev/null | tr '\n' ' ')"
"""


def host_uv_cache() -> Path | None:
    """The uv cache to lend the container: RATATOUILLE_FIRST_RUN_UV_CACHE if set (empty: none),
    else the cache of the host's uv (on PATH, or the one `make uv` fetched)."""
    if "RATATOUILLE_FIRST_RUN_UV_CACHE" in os.environ:
        value = os.environ["RATATOUILLE_FIRST_RUN_UV_CACHE"]
        return Path(value) if value else None
    uv = shutil.which("uv") or str(ROOT / ".ratatouille" / "tools" / "uv")
    try:
        out = subprocess.run([uv, "cache", "dir"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return Path(out) if out and Path(out).is_dir() else None


@pytest.fixture(scope="module")
def stock_image():
    if shutil.which("podman") is None:
        pytest.fail("podman missing: run `make stack-test`, which installs it")
    if not os.environ.get("CONTAINERS_CONF"):
        pytest.fail("CONTAINERS_CONF is not set: run `make stack-test` (it writes and selects containers.conf)")
    # `make stack-images` has built it already; otherwise this builds it (debootstrap, ~45 s).
    built = subprocess.run([str(ROOT / "tests" / "stack" / "stock-image.sh")], env={**os.environ, "IMAGE": IMAGE},
                           capture_output=True, text=True, timeout=900)
    assert built.returncode == 0, f"stock-image.sh failed:\n{built.stdout}\n{built.stderr[-4000:]}"
    return IMAGE


def test_the_image_is_a_stock_debian_without_pip(stock_image):
    probe = subprocess.run(
        ["podman", "run", "--rm", stock_image, "bash", "-c",
         "cat /etc/debian_version; /usr/bin/python3 --version; /usr/bin/python3 -m pip --version;"
         " echo pip=$?; /usr/bin/python3 -c 'import ensurepip'; echo ensurepip=$?"],
        capture_output=True, text=True, timeout=120)
    out = probe.stdout + probe.stderr
    assert re.search(r"^12\.", out, re.MULTILINE), out
    assert "Python 3.11." in out, out
    assert "No module named pip" in out and "pip=1" in out, out
    assert "ensurepip=1" in out, out  # no python3-venv either


def test_make_demo_on_a_fresh_clone(stock_image, tmp_path):
    src = working_tree_repo(tmp_path / "src")
    cmd = ["podman", "run", "--rm", "-w", "/root", "-v", f"{src}:/src:ro"]
    if CA_BUNDLE.is_file():  # the host's trust, a TLS-intercepting proxy's CA included
        cmd += ["-v", f"{CA_BUNDLE}:/run/host-ca.crt:ro", "-e", "SSL_CERT_FILE=/run/host-ca.crt"]
    cmd += [f"--env={name}" for name in PROXY_VARS if os.environ.get(name)]
    cache = host_uv_cache()
    if cache is not None:
        cmd += ["-v", f"{cache}:/root/.cache/uv"]
    t0 = time.monotonic()
    run = subprocess.run([*cmd, stock_image, "bash", "-c", FIRST_RUN], capture_output=True, text=True,
                         timeout=1800)
    elapsed = time.monotonic() - t0
    out = run.stdout + run.stderr
    print(f"make demo on stock Debian: {elapsed:.0f} s (uv cache: {cache or 'none'})")
    assert run.returncode == 0, f"exit {run.returncode} after {elapsed:.0f} s:\n{out[-8000:]}"

    # uv came from stack/get-uv.py, and the venv is on Debian's interpreter (nothing downloaded).
    assert re.search(r"get-uv: uv \S+ -> /root/ratatouille/\.ratatouille/tools/uv", out), out[-8000:]
    assert "python3: /usr/bin/python3 3.11." in out, out[:2000]
    cfg = dict(re.findall(r"^(\w+) = (.*)$", out.split("--- after make demo", 1)[1], re.MULTILINE))
    assert cfg.get("home") == "/usr/bin" and cfg.get("version_info", "").startswith("3.11."), cfg
    assert re.search(r"^managed pythons: *$", out, re.MULTILINE), out[-2000:]

    # The demo's summary: every gold table has rows.
    assert "Tables (rows):" in out, out[-8000:]
    gold = re.search(r"^\s*gold\s+(.*)$", out.split("Tables (rows):", 1)[1], re.MULTILINE)
    assert gold, out[-4000:]
    rows = {name: int(count.replace(",", "")) for name, count in re.findall(r"(\w+) ([\d,]+)", gold[1])}
    assert set(rows) >= set(GOLD) and all(rows[name] > 0 for name in GOLD), gold[0]
