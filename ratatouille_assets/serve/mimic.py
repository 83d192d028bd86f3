"""Every use of pg-mimic beyond its documented API, in one place (pinned: pg-mimic==0.1.3).

The server uses pg-mimic's public API where that serves: ``PgServer``, ``BaseSession``,
``Statement``/``Portal``/``StaticStatement``, ``ResultColumn``, ``PgError``, the SCRAM plugin and
``IdentityProvider``. Four things it needs are not in that API, so they are taken from pg-mimic's
internals here, and tests/test_serve.py pins each one's behaviour with a real client:

- TLS: ``PgServer._negotiate_startup`` answers every SSLRequest with 'N'. :class:`TlsPgServer`
  overrides it to answer 'S' and upgrade the stream (``StreamWriter.start_tls``), and to refuse a
  client that does not ask for TLS when the server has a certificate.
- Who connected: the connection pg-mimic hands to ``Session.init`` (its ``Connection``, not
  exported) carries the user and database of the startup message, and the peer's address.
- The transaction status clients read in ReadyForQuery (``Connection.tx_status``): BEGIN, COMMIT,
  ROLLBACK and ROLLBACK TO SAVEPOINT set it, as a PostgreSQL server would.
- Failed logins: pg-mimic's SCRAM plugin logs each one as a warning with a traceback
  (``pg_mimic.auth``); the traceback says nothing an operator needs and is dropped.

An upgrade of pg-mimic must come with a look at this module; :func:`check_version` refuses to
start on another version.
"""

from __future__ import annotations

import logging
import ssl

import pg_mimic
from pg_mimic import PgServer, messages

PINNED_VERSION = "0.1.3"
IDLE, IN_TRANSACTION, FAILED = b"I", b"T", b"E"


def check_version() -> None:
    if pg_mimic.__version__ != PINNED_VERSION:
        raise RuntimeError(f"pg-mimic {pg_mimic.__version__} is installed, but rat serve is written against "
                           f"{PINNED_VERSION} (ratatouille_assets/serve/mimic.py uses its internals): "
                           "install the locked version (uv sync)")


class TlsPgServer(PgServer):
    """A PgServer that speaks TLS when given an SSL context, and then only TLS."""

    def __init__(self, *args, tls: ssl.SSLContext | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.tls = tls

    async def _negotiate_startup(self, stream):
        if self.tls is None:
            return await super()._negotiate_startup(stream)
        encrypted = False
        code, payload = await stream.read_startup_packet()
        while code in (messages.SSL_REQUEST_CODE, messages.GSSENC_REQUEST_CODE):
            if code == messages.SSL_REQUEST_CODE and not encrypted:
                stream.write(b"S")
                await stream.drain()
                await stream.writer.start_tls(self.tls)
                encrypted = True
            else:
                stream.write(b"N")
                await stream.drain()
            code, payload = await stream.read_startup_packet()
        if code == messages.CANCEL_REQUEST_CODE:
            # libpq sends a cancel over a connection of its own, unencrypted before PostgreSQL 17.
            pid, secret = messages.parse_cancel_request(payload)
            self.cancel(pid, secret)
            await stream.close()
            return None
        if not encrypted:
            stream.write(messages.make_error_response({
                "S": "FATAL", "V": "FATAL", "C": "28000",
                "M": "this server accepts TLS connections only: connect with sslmode=require"}))
            await stream.drain()
            return None
        return messages.parse_startup_message(payload)


def user_of(connection) -> str:
    return connection.username


def database_of(connection) -> str:
    return connection.database


def peer_of(connection) -> str:
    peer = connection.stream.writer.get_extra_info("peername")
    return f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)


def transaction_status(connection) -> bytes:
    return connection.tx_status


def set_transaction_status(connection, status: bytes) -> None:
    connection.tx_status = status


class _NoTraceback(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.exc_info = None
        record.exc_text = None
        return True


_NO_TRACEBACK = _NoTraceback()


def quiet_failed_logins() -> None:
    logger = logging.getLogger("pg_mimic.auth")
    if _NO_TRACEBACK not in logger.filters:
        logger.addFilter(_NO_TRACEBACK)
