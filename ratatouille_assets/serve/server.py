"""``rat serve``: the lakehouse over the PostgreSQL protocol, read-only, for BI tools.

Superset (SQLAlchemy's postgresql dialect), Metabase and DBeaver (pgjdbc), Grafana, psql and
psycopg connect with their PostgreSQL driver and query every table as ``<layer>.<table>``. One
user (``RATATOUILLE_SQL_USER``) logs in with SCRAM-SHA-256 and ``RATATOUILLE_SQL_PASSWORD``; any
other name is refused like a wrong password. The server listens on ``RATATOUILLE_SQL_HOST``
(loopback by default) and ``RATATOUILLE_SQL_PORT`` (5433), over TLS only when
``RATATOUILLE_SQL_TLS_CERT`` and ``RATATOUILLE_SQL_TLS_KEY`` are set. SIGINT (Ctrl-C) and SIGTERM
stop it: it stops listening, interrupts running queries and closes every connection.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import signal
import ssl
import sys

from pg_mimic import IdentityProvider, ScramSha256AuthPlugin

from ratatouille_assets.serve import mimic
from ratatouille_assets.serve.engine import Engine
from ratatouille_assets.serve.session import SERVER_VERSION, LakehouseSession, Limits
from ratatouille_assets.settings import ENV_PREFIX, Settings, get_settings

log = logging.getLogger("ratatouille.serve")


class ServeError(Exception):
    """The server cannot start; the message says why and what to set."""


class OneUser(IdentityProvider):
    """The configured user's password, and for any other name a random one no client can know.

    pg-mimic's own ``SimpleIdentityProvider`` accepts a user it does not know, and its SCRAM
    plugin takes a missing password for the empty one: either would let a stranger in.
    """

    def __init__(self, user: str, password: str) -> None:
        self.user = user
        self.password = password

    async def get_password(self, username: str) -> str:
        if username == self.user:
            return self.password
        return secrets.token_urlsafe(32)


def tls_context(settings: Settings) -> ssl.SSLContext | None:
    if settings.sql_tls_cert is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(settings.sql_tls_cert, settings.sql_tls_key)
    except (OSError, ssl.SSLError) as exc:
        raise ServeError(f"cannot load the TLS certificate {settings.sql_tls_cert} and key {settings.sql_tls_key} "
                         f"({ENV_PREFIX}SQL_TLS_CERT, {ENV_PREFIX}SQL_TLS_KEY): {exc}") from None
    return context


def build_server(settings: Settings, engine: Engine) -> mimic.TlsPgServer:
    """The protocol server: a :class:`LakehouseSession` per connection, SCRAM for the one user."""
    if not settings.sql_password:
        raise ServeError(f"{ENV_PREFIX}SQL_PASSWORD is not set: rat serve needs a password for its user "
                         f"{settings.sql_user!r} ({ENV_PREFIX}SQL_USER)")
    try:
        mimic.check_version()
    except RuntimeError as exc:
        raise ServeError(str(exc)) from None
    mimic.quiet_failed_logins()
    limits = Limits(timeout_seconds=float(settings.sql_statement_timeout_seconds), row_limit=settings.sql_row_limit)
    return mimic.TlsPgServer(
        lambda: LakehouseSession(engine, limits),
        auth_plugin_factory=lambda username: ScramSha256AuthPlugin(),
        identity_provider=OneUser(settings.sql_user, settings.sql_password.reveal()),
        server_version=SERVER_VERSION,
        tls=tls_context(settings),
    )


async def serve(settings: Settings) -> None:
    """Serve until SIGINT or SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    engine = Engine(settings)
    try:
        server = build_server(settings, engine)
        try:
            engine.open()
        except Exception as exc:
            first_line = (str(exc).strip().splitlines() or [""])[0]
            raise ServeError(f"cannot read the lakehouse: {type(exc).__name__}: {first_line}") from None
        try:
            await server.start_server(settings.sql_host, settings.sql_port)
        except OSError as exc:
            raise ServeError(f"cannot listen on {settings.sql_host}:{settings.sql_port}: {exc.strerror or exc}") from None
        print(f"rat serve: listening on {address(settings)} "
              f"({'TLS only' if settings.sql_tls_cert else 'no TLS'}); Ctrl-C stops", flush=True)
        await stop.wait()
        await shut_down(server, engine)
    finally:
        engine.close()
    print("rat serve: stopped", flush=True)


async def shut_down(server: mimic.TlsPgServer, engine: Engine) -> None:
    """Stop new statements, interrupt the running ones and wait until their clients have the
    answer, then close every connection. In that order: pg-mimic, closing a connection whose
    statement still runs, neither interrupts it nor ends cleanly."""
    log.info("stopping: %d statements running", len(engine.running))
    engine.accepting = False
    while engine.running:
        for cursor in list(engine.running):
            cursor.interrupt()
        await asyncio.sleep(0.05)
    server.close()
    await server.wait_closed()


def address(settings: Settings) -> str:
    """How a client reaches the server (the password is not part of it)."""
    return f"postgresql://{settings.sql_user}@{settings.sql_host}:{settings.sql_port}/lakehouse"


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    # pg-mimic parses every simple query with sqlglot to split it, and sqlglot warns about each
    # statement it cannot parse (SHOW, SET...), which DuckDB and the session handle fine.
    logging.getLogger("sqlglot").setLevel(logging.ERROR)
    try:
        asyncio.run(serve(get_settings()))
    except (ServeError, ValueError) as exc:  # ValueError: a RATATOUILLE_* setting that is not valid
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
