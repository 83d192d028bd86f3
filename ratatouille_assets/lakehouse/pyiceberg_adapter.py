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

``tests/test_pyiceberg_adapter.py`` pins what all of this relies on.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterator

import pyarrow as pa
from pyiceberg.io import FileIO
from pyiceberg.io.pyarrow import _dataframe_to_data_files, bin_pack_arrow_table, pyarrow_to_schema, write_file
from pyiceberg.manifest import DataFile
from pyiceberg.partitioning import PartitionFieldValue, PartitionKey
from pyiceberg.table import DOWNCAST_NS_TIMESTAMP_TO_US_ON_WRITE, Table, TableProperties, WriteTask
from pyiceberg.table import Transaction as _Transaction
from pyiceberg.table.metadata import TableMetadata
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
            computed = self._computed = (base, updates, super().table_metadata)
        return computed[2]


def transaction(table: Table) -> Transaction:
    """``table.transaction()``, as :class:`Transaction`."""
    return Transaction(table)
