"""The lakehouse from Python: a notebook, a script, a test.

    from ratatouille_assets import rat

    rat.tables()                                        # ['bronze.orders', ..., 'gold.kpi_daily_sales']
    rat.sql("SELECT * FROM gold.kpi_daily_sales WHERE order_date >= DATE '2024-01-01'").df()
    rat.read("silver.orders", as_of="2026-12-01T08:00:00").arrow()
    rat.schema("gold.kpi_daily_sales"); rat.history("silver.orders")
    rat.materialize(["silver.orders"], partition="2024-01-05")   # through the running webserver

``rat`` works on the platform's own settings (``RATATOUILLE_*``: the local default, or S3 and
PostgreSQL), resolved at its first use. Every table is a DuckDB view ``<layer>.<table>`` over
``iceberg_scan`` of its current snapshot, so filters on partition columns prune files and nothing
is copied. The DuckDB database, its extensions and the views are made once per process; each
later call asks the catalog (one query) which tables changed and re-points just those views, so a
query sees the newest snapshot of every table without reopening anything. Results are DuckDB
relations: ``.fetchall()``, ``.show()``, ``.to_arrow_table()``, ``.arrow()`` (a record batch
reader), and ``.df()`` or ``.pl()`` where pandas or polars is installed.

In dev mode (``RATATOUILLE_BRANCH``), tables are read on that data branch where they have it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import threading
from collections.abc import Iterable, Mapping

import duckdb

from ratatouille_assets.settings import Settings, get_settings


class RatError(Exception):
    """What the SDK was asked cannot be done; the message says why and what to do."""


class NotFoundError(RatError):
    """A table, or a point in a table's past, that is not there."""


class Lakehouse:
    """The lakehouse of one set of settings (``rat`` is the one of the environment's settings)."""

    def __init__(self, settings: Settings | None = None) -> None:
        self._given = settings
        self._settings: Settings | None = None
        self._catalog = None
        self._conn: duckdb.DuckDBPyConnection | None = None
        self._views: dict[str, str] = {}  # "<layer>.<table>" -> the metadata location its view reads
        self._lock = threading.Lock()

    # --- reading ----------------------------------------------------------------------------------

    def tables(self) -> list[str]:
        """Every table, ``<layer>.<table>``, sorted."""
        with self._lock:
            return sorted(self._refresh())

    def sql(self, query: str, *, as_of: str | Mapping[str, str] | None = None,
            branch: str | None = None) -> duckdb.DuckDBPyRelation:
        """``query`` over every table (``bronze.x``, ``silver.y``, ``gold.z``) as a DuckDB relation.

        ``as_of``: read the tables as they were (a timestamp for every table, a snapshot id, a tag
        or branch name, or ``{table: point}``), as ``rat query --as-of``; ``branch``: read each
        table on that data branch where it has one (main elsewhere). Either opens a connection of
        its own for the query (~0.2 s); without them the process's connection serves.
        """
        if as_of is not None or branch is not None:
            conn = self._pinned(as_of, branch)
        else:
            with self._lock:
                self._refresh()
                conn = self._connection().cursor()
            conn.execute("SET TimeZone = 'UTC'")
        try:
            relation = conn.sql(query)
        except duckdb.Error as exc:
            raise RatError(f"{exc}") from None
        if relation is None:
            raise RatError("the statement returned no rows to read (rat.sql reads; the lakehouse is written by runs)")
        return relation

    def read(self, table: str, *, as_of: str | None = None, branch: str | None = None,
             where: str | None = None) -> duckdb.DuckDBPyRelation:
        """Table ``<layer>.<table>`` as a relation (``where``: a SQL condition, e.g. on its partition
        column, which prunes files); ``as_of`` and ``branch`` as for :meth:`sql`, for this table only."""
        name = self._known(table)
        layer, _, short = name.partition(".")
        query = f"SELECT * FROM {_ident(layer)}.{_ident(short)}" + (f" WHERE {where}" if where else "")
        return self.sql(query, as_of={name: as_of} if as_of is not None else None, branch=branch)

    def schema(self, table: str) -> duckdb.DuckDBPyRelation:
        """The columns of ``table`` as DuckDB reads them: name, type, nullable (one row each)."""
        name = self._known(table)
        layer, _, short = name.partition(".")
        return self.sql(f"SELECT column_name, column_type, \"null\" = 'YES' AS nullable "
                        f"FROM (DESCRIBE {_ident(layer)}.{_ident(short)})")

    def history(self, table: str, *, day: dt.date | str | None = None, run_id: str | None = None,
                limit: int | None = None) -> duckdb.DuckDBPyRelation:
        """The table's commits, newest first (as ``rat history``): time, operation, run, window,
        rows and files added and removed, total rows, the branches and tags on it, a note."""
        import pyarrow as pa

        from ratatouille_assets.lakehouse.timetravel import history

        name = self._known(table)
        if isinstance(day, str):
            day = dt.date.fromisoformat(day)
        entries = history(self.catalog.load_table(name), day=day, run_id=run_id)
        rows = [dict(dataclasses.asdict(e), refs=list(e.refs)) for e in entries[:limit]]
        data = pa.Table.from_pylist(rows, schema=_history_schema())
        with self._lock:
            conn = self._connection().cursor()
        return conn.from_arrow(data)

    # --- running ----------------------------------------------------------------------------------

    def materialize(self, assets: Iterable[str], partition: str | tuple[str, str] | None = None, *,
                    url: str | None = None) -> str:
        """Launch ``assets`` (``<layer>.<table>``) on the running Dagster webserver, as the UI's
        Materialize does: a backfill the daemon runs, over ``partition`` (a day, or a (first, last)
        range) for daily assets. Returns the backfill id (the UI shows it under Runs > Backfills).

        Through the webserver (``url``, default ``RATATOUILLE_WEBSERVER_URL`` or
        http://127.0.0.1:3000) and not in this process: the run is then the instance's, with its
        run queue, pools, checks and UI, exactly as if launched there.
        """
        import os

        from ratatouille_assets import client

        url = url or os.environ.get("RATATOUILLE_WEBSERVER_URL") or client.DEFAULT_URL
        keys = [tuple(self._asset(a)) for a in assets]
        if not keys:
            raise RatError("materialize: name at least one asset, e.g. rat.materialize(['silver.orders'], partition='2024-01-05')")
        days = (partition, partition) if isinstance(partition, str) else partition
        try:
            partitioned = {tuple(path): flag for path, flag in client.layer_assets(url)}
            unknown = [".".join(k) for k in keys if k not in partitioned]
            if unknown:
                raise RatError(f"no asset {', '.join(unknown)} in the code location at {url}")
            daily = [".".join(k) for k in keys if partitioned[k]]
            if daily and days is None:
                raise RatError(f"{', '.join(daily)} {'is' if len(daily) == 1 else 'are'} daily: give partition='YYYY-MM-DD' "
                               "or partition=('first', 'last')")
            plan = {key: days if partitioned[key] else None for key in keys}
            return client.launch_plan(url, plan, title="rat.materialize", start=days[0] if days else None)
        except client.ClientError as exc:
            raise RatError(f"{exc}") from None
        except OSError as exc:
            raise RatError(f"no Dagster webserver answers at {url} ({exc}): start it (make dev, docker compose up) "
                           "or pass url=") from None

    # --- the process's connection -----------------------------------------------------------------

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = self._given or get_settings()
        return self._settings

    @property
    def catalog(self):
        if self._catalog is None:
            from ratatouille_assets.lakehouse.catalog import load_catalog

            self._catalog = load_catalog(self.settings)
        return self._catalog

    def close(self) -> None:
        """Close the connection (the next call opens a new one)."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
            self._conn, self._views = None, {}

    def _connection(self) -> duckdb.DuckDBPyConnection:
        if self._conn is None:
            from ratatouille_assets.lakehouse import duck

            self._conn = duck.connect(self.settings)
        return self._conn

    def _refresh(self) -> dict[str, str]:
        """Re-point the views of the tables whose metadata changed since the last call, add new
        tables, drop removed ones (one catalog query when nothing changed). Call with the lock."""
        from ratatouille_assets.lakehouse import duck
        from ratatouille_assets.lakehouse.catalog import table_locations

        conn = self._connection()
        now = {f"{ns}.{name}": location for (ns, name), location in table_locations(self.catalog).items()}
        branch = self.settings.branch
        for name, location in now.items():
            if self._views.get(name) == location:
                continue
            layer, _, short = name.partition(".")
            snapshot_id = None
            if branch != "main":
                from ratatouille_assets.lakehouse.branches import branch_head

                location, snapshot_id = branch_head(self.catalog.load_table(name), branch)
            duck.point_view(conn, layer, short, location, snapshot_id)
            self._views[name] = now[name]
        for name in set(self._views) - set(now):
            layer, _, short = name.partition(".")
            conn.execute(f"DROP VIEW IF EXISTS {_ident(layer)}.{_ident(short)}")
            del self._views[name]
        return dict(self._views)

    def _pinned(self, as_of, branch: str | None) -> duckdb.DuckDBPyConnection:
        """A connection of its own with every view as of ``as_of`` on ``branch``."""
        from ratatouille_assets.lakehouse import duck
        from ratatouille_assets.lakehouse.errors import LakehouseError
        from ratatouille_assets.lakehouse.timetravel import register_views

        conn = duck.connect(self.settings)
        try:
            register_views(conn, self.catalog, dict(as_of) if isinstance(as_of, Mapping) else as_of,
                           branch=branch or self.settings.branch)
        except (LakehouseError, ValueError) as exc:
            conn.close()
            raise NotFoundError(f"{exc}") from None
        return conn

    def _known(self, table: str) -> str:
        with self._lock:
            names = self._refresh()
        if table not in names:
            raise NotFoundError(f"{table}: no such table (tables: {', '.join(sorted(names)) or 'none yet'})")
        return table

    def _asset(self, name: str) -> list[str]:
        from ratatouille_assets.layers import LAYERS

        layer, _, table = name.partition(".")
        if layer not in LAYERS or not table:
            raise RatError(f"{name!r}: name an asset as <layer>.<table>, a layer being one of {', '.join(LAYERS)}")
        return [layer, table]


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _history_schema():
    import pyarrow as pa

    return pa.schema([
        ("snapshot_id", pa.int64()), ("parent_id", pa.int64()), ("committed_at", pa.timestamp("us", tz="UTC")),
        ("operation", pa.string()), ("run_id", pa.string()), ("partition", pa.string()), ("window", pa.string()),
        ("added_rows", pa.int64()), ("removed_rows", pa.int64()), ("added_files", pa.int64()),
        ("removed_files", pa.int64()), ("total_rows", pa.int64()), ("refs", pa.list_(pa.string())),
        ("on_main", pa.bool_()), ("note", pa.string()),
    ])


rat = Lakehouse()
