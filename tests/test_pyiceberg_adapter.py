"""Pins the pyiceberg internals ``lakehouse/pyiceberg_adapter.py`` relies on (its private writer,
its transaction's state).

If a pyiceberg upgrade changes them, these fail before a write goes wrong: the files started for a
known partition must be the files pyiceberg's own entry point makes for the same rows (partition
record, spec, counts, bounds), readable after a plain fast append; the transaction's metadata must
be pyiceberg's own, recomputed after each update and only then; the metadata update and the
catalog's commit must be pyiceberg's code line for line, but for the deep copy left out.
"""

from __future__ import annotations

import datetime as dt
import itertools
import uuid

import pyarrow as pa
import pytest

import ast
import inspect
import textwrap

from ratatouille_assets.lakehouse.catalog import load_catalog
from pyiceberg.catalog import MetastoreCatalog as StockCatalog
from pyiceberg.table import Table
from pyiceberg.table import Transaction as StockTransaction
from pyiceberg.table import update as stock_update
from pyiceberg.table.update.snapshot import ManageSnapshots

from ratatouille_assets.lakehouse import pyiceberg_adapter
from ratatouille_assets.lakehouse.pyiceberg_adapter import start_write, transaction, write_files
from ratatouille_assets.lakehouse.write import _cast_to_table_schema, load_or_create, normalize_arrow


def events(day: dt.date, n: int, offset: int = 0) -> pa.Table:
    return normalize_arrow(pa.table({
        "id": pa.array(range(offset, offset + n), pa.int64()),
        "at": pa.array([dt.datetime.combine(day, dt.time(h % 24)) for h in range(n)], pa.timestamp("us")),
        "amount": pa.array([i * 0.5 for i in range(n)], pa.float64()),
        "label": [None if i % 7 == 0 else f"l{i}" for i in range(n)],
    }))


def comparable(data_file) -> tuple:
    return (data_file.record_count, data_file.file_format, tuple(data_file.partition), dict(data_file.lower_bounds),
            dict(data_file.upper_bounds), dict(data_file.null_value_counts), dict(data_file.value_counts))


@pytest.mark.parametrize("partition_column", ["at", None])
def test_started_files_are_pyicebergs_own(settings, partition_column):
    catalog = load_catalog(settings)
    day = dt.date(2024, 3, 5)
    data = events(day, 1000)
    table = load_or_create(catalog, "bronze.ev", data.schema, partition_column, "day")
    aligned = _cast_to_table_schema(table.schema(), data)
    partition = ((day - dt.date(1970, 1, 1)).days,) if partition_column else ()

    ours = start_write(table.metadata, table.io, aligned, partition, uuid.uuid4(), itertools.count()).result()
    theirs = write_files(table.metadata, table.io, aligned, uuid.uuid4(), itertools.count())

    assert len(ours) == len(theirs) == 1
    assert comparable(ours[0]) == comparable(theirs[0])
    with table.transaction() as tx, tx.update_snapshot().fast_append() as append:
        append.append_data_file(ours[0])
    back = catalog.load_table("bronze.ev").scan().to_arrow().sort_by("id")
    assert back.to_pylist() == aligned.to_pylist()
    if partition_column:
        assert catalog.load_table("bronze.ev").inspect.files().column("partition").to_pylist() == [{"at_day": day}]


def test_a_partition_that_does_not_fit_the_spec_is_refused(settings):
    catalog = load_catalog(settings)
    data = events(dt.date(2024, 3, 5), 10)
    table = load_or_create(catalog, "bronze.ev", data.schema, "at", "day")
    with pytest.raises(ValueError, match="does not match the table's spec"):
        start_write(table.metadata, table.io, data, (), uuid.uuid4(), itertools.count())


def test_a_failed_file_is_raised_after_the_others_are_written(settings):
    catalog = load_catalog(settings)
    data = events(dt.date(2024, 3, 5), 10)
    table = load_or_create(catalog, "bronze.ev", data.schema, None, "day")
    wrong = data.set_column(0, "id", pa.array([str(i) for i in range(10)]))  # not the table's type
    pending = start_write(table.metadata, table.io, wrong, (), uuid.uuid4(), itertools.count())
    with pytest.raises(Exception) as raised:
        pending.result()
    assert raised.value.written == []
    assert pending.result() == []  # nothing left to wait for


def _same(a, b) -> bool:
    return a.model_dump(exclude={"last_updated_ms"}) == b.model_dump(exclude={"last_updated_ms"})


def test_transaction_metadata_is_pyicebergs_own_computed_once_per_update(settings):
    catalog = load_catalog(settings)
    day = dt.date(2024, 3, 5)
    data = events(day, 10)
    table = load_or_create(catalog, "bronze.ev", data.schema, "at", "day")
    ours, stock = transaction(table), StockTransaction(table)
    first = ours.table_metadata
    assert ours.table_metadata is first  # read again: not recomputed
    assert _same(first, stock.table_metadata)

    for tx in (ours, stock):
        tx.set_properties({"owner": "pin"})
    second = ours.table_metadata
    assert second is not first and second.properties["owner"] == "pin"
    assert _same(second, stock.table_metadata)

    files = start_write(table.metadata, table.io, _cast_to_table_schema(table.schema(), data),
                        ((day - dt.date(1970, 1, 1)).days,), uuid.uuid4(), itertools.count()).result()
    with ours.update_snapshot().fast_append() as append:
        append.append_data_file(files[0])
    third = ours.table_metadata
    assert third is not second and len(third.snapshots) == 1
    ours.commit_transaction()
    committed = catalog.load_table("bronze.ev")
    assert committed.properties["owner"] == "pin"
    assert committed.scan().to_arrow().num_rows == 10


class _NoDeepCopy(ast.NodeTransformer):
    """pyiceberg's ``return new_metadata.model_copy(deep=True)`` as the adapter's ``return new_metadata``."""

    def visit_Return(self, node: ast.Return) -> ast.Return:
        value = node.value
        if (isinstance(value, ast.Call) and isinstance(value.func, ast.Attribute) and value.func.attr == "model_copy"
                and [(k.arg, getattr(k.value, "value", None)) for k in value.keywords] == [("deep", True)]):
            node.value = value.func.value
        return node


def _body(function, transform: ast.NodeTransformer | None = None) -> str:
    """The function's statements (its docstring left out), as a syntax tree dump."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(function))).body[0]
    body = tree.body[1:] if isinstance(tree.body[0], ast.Expr) and isinstance(tree.body[0].value, ast.Constant) else tree.body
    module = ast.Module(body=body, type_ignores=[])
    return ast.dump(transform.visit(module) if transform else module)


def test_the_metadata_update_and_the_commit_are_pyicebergs_without_the_deep_copy():
    # If a pyiceberg upgrade changes either function, this fails: copy the new version over.
    assert _body(pyiceberg_adapter.update_table_metadata) == _body(stock_update.update_table_metadata, _NoDeepCopy())
    assert _body(pyiceberg_adapter.update_table_metadata) != _body(stock_update.update_table_metadata)
    assert (_body(pyiceberg_adapter.SqlCatalog._update_and_stage_table)
            == _body(StockCatalog._update_and_stage_table))
    assert "update_table_metadata(" in inspect.getsource(StockCatalog._update_and_stage_table)


def test_commits_through_the_catalog_give_the_metadata_pyiceberg_gives(settings):
    catalog = load_catalog(settings)
    assert isinstance(catalog, pyiceberg_adapter.SqlCatalog)
    day = dt.date(2024, 3, 5)
    data = events(day, 10)
    table = load_or_create(catalog, "bronze.ev", data.schema, "at", "day")
    for n in range(3):  # a few snapshots, refs and properties: what the update carries over unchanged
        with transaction(table) as tx:
            tx.set_properties({"round": str(n)})
            files = start_write(table.metadata, table.io, _cast_to_table_schema(table.schema(), data),
                                ((day - dt.date(1970, 1, 1)).days,), uuid.uuid4(), itertools.count()).result()
            with tx.update_snapshot().fast_append() as append:
                append.append_data_file(files[0])
        table = catalog.load_table("bronze.ev")
    tx = StockTransaction(table)
    tx.set_properties({"round": "last"})
    ManageSnapshots(tx).create_tag(table.metadata.current_snapshot_id, "pinned").commit()
    base, updates = table.metadata, tx._updates
    ours = pyiceberg_adapter.update_table_metadata(base, updates, metadata_location=table.metadata_location)
    theirs = stock_update.update_table_metadata(base, updates, metadata_location=table.metadata_location)
    assert _same(ours, theirs) and ours.refs["pinned"].snapshot_id == base.current_snapshot_id
    assert base.properties["round"] == "2" and "pinned" not in base.refs  # the base is left as it was
    # What the catalog committed is what the metadata file holds, read back.
    tx.commit_transaction()
    written = catalog.load_table("bronze.ev")
    assert written.properties["round"] == "last" and len(written.metadata.snapshots) == 3
    assert written.scan().to_arrow().num_rows == 30


def test_manage_snapshots_is_pyicebergs_on_the_adapters_transaction(settings):
    # pyiceberg's Table.manage_snapshots, but for the transaction class it makes.
    assert "ManageSnapshots(transaction=Transaction(self, autocommit=True))" in inspect.getsource(Table.manage_snapshots)
    catalog = load_catalog(settings)
    day = dt.date(2024, 3, 5)
    data = events(day, 10)
    table = load_or_create(catalog, "bronze.ev", data.schema, "at", "day")
    with transaction(table) as tx:
        files = start_write(table.metadata, table.io, _cast_to_table_schema(table.schema(), data),
                            ((day - dt.date(1970, 1, 1)).days,), uuid.uuid4(), itertools.count()).result()
        with tx.update_snapshot().fast_append() as append:
            append.append_data_file(files[0])
    table = catalog.load_table("bronze.ev")
    head = table.metadata.current_snapshot_id
    managed = pyiceberg_adapter.manage_snapshots(table)
    assert isinstance(managed._transaction, pyiceberg_adapter.Transaction)
    with managed as snapshots:
        snapshots.create_branch(head, "audit-x").create_tag(head, "pinned")
    refs = catalog.load_table("bronze.ev").metadata.refs
    assert refs["audit-x"].snapshot_id == refs["pinned"].snapshot_id == head


def test_pyicebergs_overwrite_still_judges_manifests_with_one_shared_stateful_evaluator_per_thread_pool():
    # Why OverwriteFiles exists. When this fails, pyiceberg changed: check whether the evaluator is
    # now safe to share (or no longer shared between threads) and drop the adapter's overwrite.
    from pyiceberg.expressions.visitors import _ManifestEvalVisitor
    from pyiceberg.table.update.snapshot import _OverwriteFiles

    deleted = textwrap.dedent(inspect.getsource(_OverwriteFiles._deleted_entries))
    assert "executor.map(_get_entries" in deleted
    inside = deleted.split("def _get_entries", 1)[1].split("list_of_entries", 1)[0]
    assert "manifest_evaluators[manifest.partition_spec_id](manifest)" in inside
    assert "self.partition_fields = partitions" in inspect.getsource(_ManifestEvalVisitor.eval)
    # The adapter's overwrite is pyiceberg's UpdateSnapshot.overwrite, with its own class.
    from pyiceberg.table.update.snapshot import UpdateSnapshot as StockUpdateSnapshot

    class _OwnClass(ast.NodeTransformer):
        def visit_Name(self, node: ast.Name) -> ast.Name:
            return ast.Name(id="OverwriteFiles", ctx=node.ctx) if node.id == "_OverwriteFiles" else node

    assert (_body(pyiceberg_adapter.UpdateSnapshot.overwrite)
            == _body(StockUpdateSnapshot.overwrite, _OwnClass()))
    assert (_body(pyiceberg_adapter.Transaction.update_snapshot)
            == _body(StockTransaction.update_snapshot))
    # Transaction.delete's copy-on-write rewrites use the transaction's update_snapshot.
    assert "self.update_snapshot(" in inspect.getsource(StockTransaction.delete)


def test_a_manifest_is_judged_by_its_own_partition_summary_while_another_thread_judges_another():
    """Two threads, one evaluator: thread A is judging a February manifest when thread B starts on
    a January one. pyiceberg's evaluator then reads B's summary for A (and skips A's manifest, which
    holds the files to delete); the serialized one makes B wait."""
    import threading

    from pyiceberg.expressions import And, EqualTo, GreaterThanOrEqual
    from pyiceberg.expressions.visitors import manifest_evaluator
    from pyiceberg.manifest import ManifestFile, PartitionFieldSummary
    from pyiceberg.partitioning import PartitionField, PartitionSpec
    from pyiceberg.schema import Schema
    from pyiceberg.transforms import MonthTransform
    from pyiceberg.types import DateType, NestedField

    schema = Schema(NestedField(1, "day", DateType(), required=False))
    spec = PartitionSpec(PartitionField(source_id=1, field_id=1000, transform=MonthTransform(), name="day_month"))
    january, february = 648, 649  # months since 1970 of 2024-01 and 2024-02

    class Summaries(list):
        """A manifest's partition summaries that announce being read, and can hold the reader."""

        def __init__(self, month: int, reading: threading.Event, hold: threading.Event | None,
                     hold_s: float = 0.0) -> None:
            bound = month.to_bytes(4, "little", signed=True)
            super().__init__([PartitionFieldSummary.from_args(contains_null=False, contains_nan=False,
                                                              lower_bound=bound, upper_bound=bound)])
            self.reading, self.hold, self.hold_s = reading, hold, hold_s

        def __getitem__(self, index):
            self.reading.set()
            if self.hold is not None:
                self.hold.wait(self.hold_s)  # until B reads its own summary (never while A holds the lock)
            return super().__getitem__(index)

    def judge(evaluate, hold_s: float) -> tuple[bool, bool]:
        """A holds for B up to ``hold_s``: long where B can get in (it then returns at once, however
        loaded the machine), short where it cannot (the lock decides, not the wait)."""
        a_reading, b_reading = threading.Event(), threading.Event()
        feb = ManifestFile.from_args(manifest_path="feb.avro", partition_spec_id=0,
                                     partitions=Summaries(february, a_reading, b_reading, hold_s))
        jan = ManifestFile.from_args(manifest_path="jan.avro", partition_spec_id=0,
                                     partitions=Summaries(january, b_reading, None))
        out = {}
        a = threading.Thread(target=lambda: out.__setitem__("feb", evaluate(feb)))
        a.start()
        assert a_reading.wait(30)
        b = threading.Thread(target=lambda: out.__setitem__("jan", evaluate(jan)))
        b.start()
        a.join(hold_s + 30)
        b.join(hold_s + 30)
        return out["feb"], out["jan"]

    # Two reads of the summaries per manifest: thread A is held in the first, and reads the
    # evaluator's summaries again for the second.
    february_only = And(GreaterThanOrEqual("day_month", january), EqualTo("day_month", february))
    # pyiceberg's evaluator, shared: February's manifest is judged by January's summary.
    assert judge(manifest_evaluator(spec, schema, february_only), hold_s=60) == (False, False)
    # Serialized: each manifest by its own.
    assert judge(pyiceberg_adapter.serialized(manifest_evaluator(spec, schema, february_only)), hold_s=0.5) == (True, False)


def test_the_adapters_transaction_overwrites_through_the_serialized_evaluators(settings):
    catalog = load_catalog(settings)
    day = dt.date(2024, 3, 5)
    data = events(day, 10)
    table = load_or_create(catalog, "bronze.ov", data.schema, "at", "day")
    tx = transaction(table)
    overwrite = tx.update_snapshot().overwrite()
    assert isinstance(overwrite, pyiceberg_adapter.OverwriteFiles)
    assert overwrite._build_manifest_evaluator(0).__qualname__ == pyiceberg_adapter.serialized(bool).__qualname__
