"""Dagster's SQLite storage with pooled event-log connections (the embedded default's storage).

Why: a backfill over years of days records two events per asset and day (planned, materialized),
and Dagster's SQLite event log opens a new SQLAlchemy engine for every statement: a new file
handle, a WAL checkpoint on close, and every INSERT compiled again (the compiled cache lives on
the engine). Measured on 365 days of one source: 18 ms an event, three quarters of a bronze run.
With one engine per database file and a small pool of open connections the same run's events
cost a third of that, and nothing else changes: same files, same schema, same locking (SQLite WAL,
one writer at a time, busy timeout).

A run over many partitions reports its materializations as one batch (Dagster batches them when
``DAGSTER_EVENT_BATCH_SIZE`` is set, which this storage sets for its process if it is not): Dagster's
Postgres storage writes such a batch in one statement, its SQLite storage one event at a time.
This one writes it in one transaction per database file, the same rows as one by one.

Within a batch, the asset's row in the index (last run, last materialization) is written once per
asset and kind of event, by the last event of that kind: the same final row as one update per
event, which for a run over 2,400 days was 2,400 serialized records per asset, all but one
overwritten at once.

A partitioned asset check's planned event becomes one row per partition in the check-executions
table; Dagster serializes the whole event again for each row and compiles one INSERT with all of
them. This one serializes it once and inserts the same rows as one executemany.

This module relies on private Dagster APIs (as does ``defs/partition_metadata.py``, for another
reason): ``SqliteEventLogStorage._connect``, the helpers the batch write shares with
``store_event``, and ``_store_asset_check_evaluation_planned``. ``tests/test_storage.py`` pins them
and compares what is stored with Dagster's own storage. The server stack uses Postgres and is
unaffected.
Configured in ``dagster.yaml``::

    storage:
      custom:
        module: ratatouille_assets.defs.storage
        class: PooledSqliteStorage
        config:
          base_dir: {env: DAGSTER_HOME}
"""

from __future__ import annotations

import collections
import os
import threading
from collections.abc import Sequence
from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as db
from dagster._core.events import DagsterEventType
from dagster._core.events.log import EventLogEntry
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus
from dagster._core.storage.event_log.schema import AssetCheckExecutionsTable, SqlEventLogStorageTable
from dagster._core.storage.event_log.sqlite.sqlite_event_log import SQLITE_BUSY_TIMEOUT_SECONDS, SqliteEventLogStorage
from dagster._core.storage.sqlite_storage import DagsterSqliteStorage, _event_logs_directory
from dagster._serdes import ConfigurableClassData, serialize_value
from sqlalchemy.pool import QueuePool

# Engines kept open at once: the index shard, and the run shards being written or read. An engine
# beyond that is disposed (its connections closed), so a webserver browsing many runs does not
# accumulate open files.
MAX_ENGINES = 16
# The asset events a batch write stores together (what SqliteEventLogStorage mirrors to its index).
_BATCHED = (DagsterEventType.ASSET_MATERIALIZATION, DagsterEventType.ASSET_MATERIALIZATION_PLANNED)
# Planned checks: a run reports one per check it will evaluate, in the same batch as its planned
# materializations.
_PLANNED_CHECK = DagsterEventType.ASSET_CHECK_EVALUATION_PLANNED
# Events Dagster buffers before a batch write (DAGSTER_EVENT_BATCH_SIZE), when not set otherwise.
EVENT_BATCH_SIZE = "1000"


def _no_fsync_per_commit(dbapi_connection, _record) -> None:  # noqa: ANN001 - SQLAlchemy's signature
    """``synchronous = NORMAL`` on an event-log connection (the files are in WAL mode).

    With SQLite's default (FULL) every commit waits for an fsync of the WAL: a third of the cost
    of each event a run stores (py-spy of a one-day run). With NORMAL the WAL is synced at
    checkpoints only: a process killed at any point (kill -9, OOM) loses nothing it committed and
    the file stays consistent; only a power loss or OS crash can undo the last commits, which
    Dagster's run monitoring then sees as a run that stopped reporting. The server stack keeps its
    event log on PostgreSQL.
    """
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA synchronous = NORMAL")
    cursor.close()


class PooledSqliteEventLogStorage(SqliteEventLogStorage):
    """``SqliteEventLogStorage`` whose shards each keep one engine with a pool of connections."""

    def __init__(self, base_dir: str, inst_data: ConfigurableClassData | None = None):
        super().__init__(base_dir, inst_data)
        self._engines: collections.OrderedDict[str, db.engine.Engine] = collections.OrderedDict()
        self._engines_lock = threading.Lock()
        self._has_check_table = False

    @classmethod
    def from_config_value(cls, inst_data, config_value):  # noqa: ANN001 - Dagster's signature
        return cls(inst_data=inst_data, **config_value)

    def _engine(self, shard: str) -> db.engine.Engine:
        with self._engines_lock:
            engine = self._engines.get(shard)
            if engine is not None:
                self._engines.move_to_end(shard)
                return engine
            engine = db.create_engine(
                self.conn_string_for_shard(shard),
                poolclass=QueuePool, pool_size=1, max_overflow=4,
                # The pool hands a connection to one thread at a time; Dagster's own lock serializes them.
                connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS, "check_same_thread": False},
            )
            db.event.listen(engine, "connect", _no_fsync_per_commit)
            self._engines[shard] = engine
            while len(self._engines) > MAX_ENGINES:
                _, old = self._engines.popitem(last=False)
                old.dispose()
            return engine

    @contextmanager
    def _connect(self, shard: str) -> Iterator[db.engine.Connection]:
        with self._db_lock:
            engine = self._engine(shard)
            if shard not in self._initialized_dbs:
                self._initdb(engine)
                self._initialized_dbs.add(shard)
            with engine.connect() as conn:
                with conn.begin():
                    yield conn

    @property
    def supports_asset_checks(self) -> bool:
        """Whether the index has the check-executions table. Dagster asks on every check event
        and answers with a new engine and connection each time (a run of the example stores about
        200 such events); once the table is there it stays, so a yes is kept."""
        if not self._has_check_table:
            self._has_check_table = SqliteEventLogStorage.supports_asset_checks.fget(self)
        return self._has_check_table

    def store_event_batch(self, events: Sequence[EventLogEntry]) -> None:
        """A batch's asset events (a run's partition materializations, the planned materializations
        and planned checks a run reports when it starts) in two transactions, its run shard and the
        index, instead of two or three per event; other events one by one, as Dagster's SQLite
        storage stores every event."""
        batched = [e for e in events if e.dagster_event_type in _BATCHED or e.dagster_event_type == _PLANNED_CHECK]
        if len({e.run_id for e in events}) != 1 or len(batched) < 2:
            return super().store_event_batch(events)
        # The rows prepare_insert_event_batch would put in one multi-VALUES statement, as one
        # executemany (SQLAlchemy batches it without compiling a statement the size of the batch),
        # the index's ids returned in the events' order.
        rows = [self._event_to_row(event) for event in batched]
        with self.run_connection(batched[0].run_id) as conn:
            conn.execute(SqlEventLogStorageTable.insert(), rows)
        with self.index_transaction() as conn:
            returning = SqlEventLogStorageTable.insert().returning(SqlEventLogStorageTable.c.id, sort_by_parameter_order=True)
            ids = [row[0] for row in conn.execute(returning, rows).fetchall()]
            if len(ids) != len(batched) or any(i is None for i in ids):
                raise RuntimeError(f"a batch write of {len(batched)} events returned {len(ids)} ids")
            assets = [(e, i) for e, i in zip(batched, ids) if e.dagster_event_type in _BATCHED]
            if assets:
                self._store_asset_event_tags(conn, [e for e, _ in assets], [i for _, i in assets])
            # The asset row keeps, per column, the value of the last event that sets it, and each
            # kind of event sets the same columns: the last event of each kind, in order, suffices.
            last = {(e.dagster_event.asset_key, e.dagster_event_type): n for n, (e, _) in enumerate(assets)}
            for n in sorted(last.values()):
                self._store_asset_event(conn, *assets[n])
            planned = [row for e, i in zip(batched, ids) if e.dagster_event_type == _PLANNED_CHECK
                       for row in self._planned_check_rows(e, i)]
            if planned:
                conn.execute(AssetCheckExecutionsTable.insert(), planned)
        stored = {id(event) for event in batched}
        for event in events:
            if id(event) not in stored:
                self.store_event(event)

    def _store_asset_check_evaluation_planned(self, event: EventLogEntry, event_id: int | None) -> None:
        """Dagster's rows for a planned check (one per partition of its subset, or one), the event
        serialized once and inserted with one executemany."""
        with self.index_connection() as conn:
            conn.execute(AssetCheckExecutionsTable.insert(), self._planned_check_rows(event, event_id))

    def _planned_check_rows(self, event: EventLogEntry, event_id: int | None) -> list[dict]:
        planned = event.dagster_event.event_specific_data
        keys = planned.partitions_subset.get_partition_keys() if planned.partitions_subset else [None]
        common = dict(
            asset_key=planned.asset_key.to_string(),
            check_name=planned.check_name,
            run_id=event.run_id,
            execution_status=AssetCheckExecutionRecordStatus.PLANNED.value,
            evaluation_event=serialize_value(event),
            evaluation_event_timestamp=self._event_insert_timestamp(event),
            evaluation_event_storage_id=event_id,
        )
        return [{**common, "partition": key} for key in keys]

    def _dispose_engines(self) -> None:
        with self._engines_lock:
            for engine in self._engines.values():
                engine.dispose()
            self._engines.clear()

    def wipe(self) -> None:
        self._dispose_engines()  # wipe deletes the run shards' files: no connection may outlive them
        super().wipe()

    def dispose(self) -> None:
        self._dispose_engines()
        super().dispose()


class PooledSqliteStorage(DagsterSqliteStorage):
    """The default SQLite storage (runs, schedules, event logs under ``base_dir``, same layout),
    with :class:`PooledSqliteEventLogStorage` as its event log."""

    def __init__(self, base_dir: str, inst_data: ConfigurableClassData | None = None):
        super().__init__(base_dir, inst_data)
        self._event_log_storage = PooledSqliteEventLogStorage(_event_logs_directory(base_dir))
        # Dagster reads this when it reports events; a process that uses this storage batches.
        os.environ.setdefault("DAGSTER_EVENT_BATCH_SIZE", EVENT_BATCH_SIZE)

    @classmethod
    def from_config_value(cls, inst_data, config_value):  # noqa: ANN001 - Dagster's signature
        return cls(inst_data=inst_data, **config_value)
