"""``make dev``: ``dagster dev`` on this project's workspace, stoppable with Ctrl-C or ``kill -INT``.

``dagster dev`` ignores SIGTERM and relies on SIGINT to shut down its webserver, daemon and code
server. A process started in the background by a non-interactive shell (``make ... &``, a test
fixture, CI) inherits SIGINT as *ignored*, and Python keeps an ignored SIGINT ignored: such a
``dagster dev`` can then only be SIGKILLed, which leaves its children behind. This wrapper sets up
DAGSTER_HOME, restores the default SIGINT handler and replaces itself (``os.execv``, same pid) with
``dagster dev``, which installs its own handler on top of the default one.

    python -m ratatouille_assets.devserver [--host 127.0.0.1] [--port 3000]
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

from ratatouille_assets.demo import PROJECT_ROOT, ensure_dagster_home
from ratatouille_assets.settings import get_settings


def command(host: str, port: int) -> list[str]:
    """``dagster dev`` from the same environment as this interpreter, on the project workspace."""
    dagster = Path(sys.executable).parent / "dagster"
    return [str(dagster), "dev", "-w", str(PROJECT_ROOT / "workspace.yaml"), "-h", host, "-p", str(port)]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m ratatouille_assets.devserver",
                                     description="dagster dev on the project workspace")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=3000)
    args = parser.parse_args(argv)

    ensure_dagster_home(get_settings())
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    cmd = command(args.host, args.port)
    os.execv(cmd[0], cmd)


if __name__ == "__main__":
    main()
