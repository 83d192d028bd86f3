"""The one module that reaches into pyiceberg's internals: its private writer, and its transaction.

Data files without a commit. pyiceberg's public writes (``Table.append``, ``overwrite``) encode
and commit in one call. Our write path (``write.py``) writes a window's data files first, chunk by
chunk as the data streams in, and commits them all at once (or deletes them), so it needs the file
writer alone. pyiceberg has no public API for that; two functions here wrap the private one.

- :func:`start_write` hands one chunk of *known* partition value to pyiceberg's writer pool and
  returns at once: the caller computes its next chunk (DuckDB) while this one is encoded
  (Arrow's Parquet writer releases the GIL). pyiceberg's own entry point
  (``_dataframe_to_data_files``) would instead group and filter the chunk by partition, a full
  copy of it, although ``write.py`` has already cut it to one partition value.
- :func:`write_files` is that entry point, for data whose partitions are not known.

A transaction whose metadata is computed once per change. pyiceberg's ``Transaction.table_metadata``
applies the transaction's updates to a deep copy of the table's whole metadata (every snapshot,
schema and ref) each time it is read, and a commit reads it about 28 times: 60% of a small
write's time, growing with the table's history. :class:`Transaction` keeps the result until the
next update (the metadata models are frozen, so sharing it is safe).

Metadata updated without a deep copy. pyiceberg's ``update_table_metadata`` ends by deep-copying
the metadata it built (every snapshot, ref and schema, as pydantic models), although each step
before it already made new models and new containers for what it changed. A write computes it
once in its transaction and once more when the catalog commits: with a hundred snapshots (a daily
table under the default retention) the copies were 30% of a write. :func:`update_table_metadata`
is pyiceberg's function without that last copy, used by :class:`Transaction` and by the catalog's
commit (:class:`SqlCatalog`).

An overwrite whose manifest evaluators are safe to share between threads. pyiceberg's
``_OverwriteFiles._deleted_entries`` reads the parent's manifests in its thread pool and, from each
thread, asks one manifest evaluator per partition spec whether a manifest may hold the files to
delete; the evaluator keeps the manifest it is judging in an attribute
(``_ManifestEvalVisitor.partition_fields``), so a thread could judge its manifest by another's
partition summaries and skip it. The commit then failed with ``ValidationException: Missing required
files to delete`` (pyiceberg 0.12.0: a compaction racing a write, in CI). Every copy-on-write delete
(a window's rewrite), compaction and rollback goes through it. :class:`Transaction` hands out
:class:`UpdateSnapshot`, whose ``overwrite()`` is that class with each evaluator behind a lock
(:func:`serialized`); evaluating a summary is microseconds, the manifest reads stay parallel.

``tests/test_pyiceberg_adapter.py`` pins what all of this relies on.
"""

from __future__ import annotations

import itertools
import threading
import uuid
from datetime import datetime
from collections.abc import Callable, Iterator

import pyarrow as pa
from pyiceberg.catalog.sql import SqlCatalog as _SqlCatalog
from pyiceberg.io import FileIO
from pyiceberg.io.pyarrow import _dataframe_to_data_files, bin_pack_arrow_table, pyarrow_to_schema, write_file
from pyiceberg.manifest import DataFile
from pyiceberg.partitioning import PartitionFieldValue, PartitionKey
from pyiceberg.table import DOWNCAST_NS_TIMESTAMP_TO_US_ON_WRITE, StagedTable, Table, TableProperties, WriteTask
from pyiceberg.table import Transaction as _Transaction
from pyiceberg.table.locations import load_location_provider
from pyiceberg.table.metadata import TableMetadata, TableMetadataUtil
from pyiceberg.manifest import ManifestFile
from pyiceberg.table.snapshots import Operation
from pyiceberg.table.update.snapshot import ManageSnapshots
from pyiceberg.table.update.snapshot import UpdateSnapshot as _UpdateSnapshot
from pyiceberg.table.update.snapshot import _OverwriteFiles
from pyiceberg.table.update import (
    TableRequirement,
    TableUpdate,
    _apply_table_update,
    _TableMetadataUpdateContext,
    _update_table_metadata_log,
)
from pyiceberg.table.refs import MAIN_BRANCH
from pyiceberg.typedef import EMPTY_DICT, Identifier
from pyiceberg.utils.datetime import datetime_to_millis
from pyiceberg.utils.config import Config
from pyiceberg.utils.properties import property_as_int


class PendingFiles:
    """Data files being written in pyiceberg's pool; :meth:`result` waits for them."""

    def __init__(self, started: list[Iterator[DataFile]]) -> None:
        self._started = started

    def result(self) -> list[DataFile]:
        """The files, once written. Raises the first task's error; every other task still
        finishes, and the files of those that succeeded are in the error's ``written``."""
        files: list[DataFile] = []
        error: BaseException | None = None
        for one in self._started:
            try:
                files += one
            except BaseException as exc:  # noqa: BLE001 - re-raised below, after every task ended
                error = error or exc
        self._started = []
        if error is not None:
            error.written = files  # type: ignore[attr-defined]
            raise error
        return files


def start_write(
    metadata: TableMetadata,
    io: FileIO,
    data: pa.Table,
    partition: tuple,
    write_uuid: uuid.UUID,
    counter: itertools.count,
) -> PendingFiles:
    """Start writing ``data`` (already cast to the table's schema) as data files of the table's
    current spec, every row in the partition ``partition``: the transformed value of each of the
    spec's fields, in order (``()`` for an unpartitioned table)."""
    spec, schema = metadata.spec(), metadata.schema()
    if len(partition) != len(spec.fields):
        raise ValueError(f"partition {partition!r} does not match the table's spec {spec}")
    key = None
    if spec.fields:
        key = PartitionKey(
            field_values=[PartitionFieldValue(field=f, value=v) for f, v in zip(spec.fields, partition, strict=True)],
            partition_spec=spec,
            schema=schema,
        )
    task_schema = pyarrow_to_schema(
        data.schema,
        name_mapping=schema.name_mapping,
        downcast_ns_timestamp_to_us=Config().get_bool(DOWNCAST_NS_TIMESTAMP_TO_US_ON_WRITE) or False,
        format_version=metadata.format_version,
    )
    target = property_as_int(metadata.properties, TableProperties.WRITE_TARGET_FILE_SIZE_BYTES,
                             TableProperties.WRITE_TARGET_FILE_SIZE_BYTES_DEFAULT)
    # One pool task per file, each its own map: a failed file does not hide the others' results.
    return PendingFiles([
        write_file(io, metadata, iter([WriteTask(write_uuid=write_uuid, task_id=next(counter), record_batches=batches,
                                                 partition_key=key, schema=task_schema)]))
        for batches in bin_pack_arrow_table(data, target)
    ])


def write_files(metadata: TableMetadata, io: FileIO, data: pa.Table, write_uuid: uuid.UUID,
                counter: itertools.count) -> list[DataFile]:
    """Write ``data`` as data files of the table's current spec, split by partition (waits)."""
    return list(_dataframe_to_data_files(table_metadata=metadata, df=data, io=io, write_uuid=write_uuid, counter=counter))


class Transaction(_Transaction):
    """pyiceberg's transaction, its ``table_metadata`` computed once per update instead of per read."""

    _computed: tuple | None = None  # (the table's metadata, the updates, the result)

    @property
    def table_metadata(self) -> TableMetadata:
        base, updates = self._table.metadata, self._updates
        computed = self._computed
        if computed is None or computed[0] is not base or computed[1] is not updates:
            computed = self._computed = (base, updates, update_table_metadata(base, updates))
        return computed[2]

    def update_snapshot(self, snapshot_properties: dict[str, str] = EMPTY_DICT, branch: str | None = MAIN_BRANCH
                        ) -> UpdateSnapshot:
        """As pyiceberg's, with :class:`UpdateSnapshot` (its ``delete`` rewrites files through it too)."""
        return UpdateSnapshot(self, io=self._table.io, branch=branch, snapshot_properties=snapshot_properties)


def serialized(evaluate: Callable[[ManifestFile], bool]) -> Callable[[ManifestFile], bool]:
    """``evaluate``, one call at a time (pyiceberg's manifest evaluator keeps state between calls)."""
    lock = threading.Lock()

    def call(manifest: ManifestFile) -> bool:
        with lock:
            return evaluate(manifest)

    return call


class OverwriteFiles(_OverwriteFiles):
    """pyiceberg's overwrite, its manifest evaluators :func:`serialized` (see the module doc)."""

    def _build_manifest_evaluator(self, spec_id: int) -> Callable[[ManifestFile], bool]:
        return serialized(super()._build_manifest_evaluator(spec_id))


class UpdateSnapshot(_UpdateSnapshot):
    def overwrite(self, commit_uuid: uuid.UUID | None = None) -> OverwriteFiles:
        """``UpdateSnapshot.overwrite``, as :class:`OverwriteFiles`."""
        return OverwriteFiles(
            commit_uuid=commit_uuid,
            operation=Operation.OVERWRITE
            if self._transaction.table_metadata.snapshot_by_name(name=self._branch) is not None
            else Operation.APPEND,
            transaction=self._transaction,
            io=self._io,
            branch=self._branch,
            snapshot_properties=self._snapshot_properties,
        )


def transaction(table: Table) -> Transaction:
    """``table.transaction()``, as :class:`Transaction`."""
    return Transaction(table)


def manage_snapshots(table: Table) -> ManageSnapshots:
    """``table.manage_snapshots()`` (committed when its ``with`` block ends), on a :class:`Transaction`."""
    return ManageSnapshots(transaction=Transaction(table, autocommit=True))


def update_table_metadata(
    base_metadata: TableMetadata,
    updates: tuple[TableUpdate, ...],
    enforce_validation: bool = False,
    metadata_location: str | None = None,
) -> TableMetadata:
    """``pyiceberg.table.update.update_table_metadata`` without the deep copy it ends with."""
    context = _TableMetadataUpdateContext()
    new_metadata = base_metadata

    for update in updates:
        new_metadata = _apply_table_update(update, new_metadata, context)

    # Update last_updated_ms if it was not updated by update operations
    if context.has_changes():
        if metadata_location:
            new_metadata = _update_table_metadata_log(new_metadata, metadata_location, base_metadata.last_updated_ms)
        if base_metadata.last_updated_ms == new_metadata.last_updated_ms:
            new_metadata = new_metadata.model_copy(update={"last_updated_ms": datetime_to_millis(datetime.now().astimezone())})

    # Check correctness of partition spec, and sort order
    new_metadata.spec().check_compatible(new_metadata.schema())
    new_metadata.sort_order().check_compatible(new_metadata.schema())

    if enforce_validation:
        return TableMetadataUtil.parse_obj(new_metadata.model_dump())
    else:
        return new_metadata


class SqlCatalog(_SqlCatalog):
    """pyiceberg's SQL catalog, whose commits build the new metadata with :func:`update_table_metadata`."""

    def _update_and_stage_table(
        self,
        current_table: Table | None,
        table_identifier: Identifier,
        requirements: tuple[TableRequirement, ...],
        updates: tuple[TableUpdate, ...],
    ) -> StagedTable:
        for requirement in requirements:
            requirement.validate(current_table.metadata if current_table else None)

        updated_metadata = update_table_metadata(
            base_metadata=current_table.metadata if current_table else self._empty_table_metadata(),
            updates=updates,
            enforce_validation=current_table is None,
            metadata_location=current_table.metadata_location if current_table else None,
        )

        new_metadata_version = self._parse_metadata_version(current_table.metadata_location) + 1 if current_table else 0
        provider = load_location_provider(updated_metadata.location, updated_metadata.properties)
        new_metadata_location = provider.new_table_metadata_file_location(new_metadata_version)

        return StagedTable(
            identifier=table_identifier,
            metadata=updated_metadata,
            metadata_location=new_metadata_location,
            io=self._load_file_io(properties=updated_metadata.properties, location=new_metadata_location),
            catalog=self,
        )
