"""The Iceberg SQL catalog, configured from settings.

On SQLite (the embedded default) the catalog gets WAL journaling and a busy timeout so that
concurrent runs wait for each other instead of failing with ``database is locked``. Two processes
opening a new catalog at the same instant both find its tables missing and both create them; the
one that loses that race opens the catalog again (its tables then exist).
"""

from __future__ import annotations

import os
import sqlite3
import time

from pyiceberg.catalog import Catalog
from pyiceberg.catalog.sql import IcebergTables, SqlCatalog
from sqlalchemy import event, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from ratatouille_assets.lakehouse.pyiceberg_adapter import SqlCatalog as CommittingSqlCatalog
from ratatouille_assets.settings import Settings, get_settings

SQLITE_BUSY_TIMEOUT_MS = 30_000
# Opening a catalog whose tables another process is creating at that moment: tries, and the pause between.
_OPEN_ATTEMPTS, _OPEN_PAUSE_S = 5, 0.2


def catalog_properties(settings: Settings) -> dict[str, str]:
    """pyiceberg properties for the catalog and its FileIO (secrets included: never log these)."""
    # A local warehouse is a plain absolute path, not a file:// URI: pyiceberg opens a file URI by
    # its path as written, undecoded, so Path.as_uri() put "/srv/my lake" in "/srv/my%20lake"
    # (tables created that way keep their location, and still read and write).
    props = {"uri": settings.catalog_uri.reveal(), "warehouse": settings.warehouse}
    if settings.is_s3:
        if settings.s3_endpoint:
            props["s3.endpoint"] = settings.s3_endpoint
            props["s3.path-style-access"] = "true"
        if settings.s3_region:
            props["s3.region"] = settings.s3_region
        if settings.s3_access_key_id:
            props["s3.access-key-id"] = settings.s3_access_key_id.reveal()
            props["s3.secret-access-key"] = settings.s3_secret_access_key.reveal()
    return props


def _tune_sqlite(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
    # WAL is a property of the database file: set once, by the first connection. Setting it again
    # is no change but takes a lock, and SQLite answers "database is locked" at once (no busy
    # wait) when another process holds one: two runs starting together failed on it.
    (mode,) = cursor.execute("PRAGMA journal_mode").fetchone()
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    while str(mode).lower() != "wal":
        try:
            cursor.execute("PRAGMA journal_mode = WAL")  # an in-memory database stays "memory"
            break
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    cursor.close()


def sqlite_path(settings: Settings) -> str:
    """The file of a SQLite catalog URI, decoded as SQLAlchemy opens it."""
    return make_url(settings.catalog_uri.reveal()).database or ""


def load_catalog(settings: Settings | None = None) -> Catalog:
    """Open the catalog (creating its tables on first use)."""
    settings = settings or get_settings()
    if settings.catalog_uri.startswith("sqlite:"):
        db_path = sqlite_path(settings)
        os.makedirs(os.path.dirname(db_path) or ".", exist_ok=True)
    if not settings.is_s3:
        os.makedirs(settings.warehouse, exist_ok=True)
    catalog = _open(settings)
    if catalog.engine.dialect.name == "sqlite":
        event.listen(catalog.engine, "connect", _tune_sqlite)
        catalog.engine.dispose()  # drop the connection opened during init, untuned
    return catalog


def _open(settings: Settings) -> SqlCatalog:
    for attempt in range(_OPEN_ATTEMPTS):
        try:
            # pyiceberg's SQL catalog, its commits without a deep copy of the whole metadata.
            return CommittingSqlCatalog(settings.catalog_name, **catalog_properties(settings))
        except DBAPIError as exc:
            # SQLite: "table iceberg_tables already exists"; Postgres: a duplicate table or type.
            created_meanwhile = "already exists" in str(exc.orig) or "duplicate" in str(exc.orig).lower()
            if not created_meanwhile or attempt == _OPEN_ATTEMPTS - 1:
                raise
            time.sleep(_OPEN_PAUSE_S)
    raise AssertionError("unreachable")


def table_locations(catalog: Catalog) -> dict[tuple[str, str], str]:
    """``{(namespace, table): current metadata location}`` for every table of the catalog.

    On the SQL catalog this is one query (loading each table would read and parse every
    metadata file: ~0.1 s a table, paid by every dbt invocation and every scan).
    """
    if isinstance(catalog, SqlCatalog):
        with Session(catalog.engine) as session:
            rows = session.execute(
                select(IcebergTables.table_namespace, IcebergTables.table_name, IcebergTables.metadata_location)
                .where(IcebergTables.catalog_name == catalog.name)
            ).all()
        return {(ns, name): location for ns, name, location in rows if location}
    return {
        (namespace, identifier[-1]): catalog.load_table(identifier).metadata_location
        for (namespace,) in catalog.list_namespaces()
        for identifier in catalog.list_tables(namespace)
    }
