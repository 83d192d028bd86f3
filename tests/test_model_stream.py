"""A model's result as the dbt plugin streams it to the write path (lakehouse/dbt_plugin.py
_ModelStream): rows split from their rejects on the way, DuckDB reading a batch ahead in a
thread that ends with the stream, even when the write stops it halfway."""

from __future__ import annotations

import threading

import duckdb
import pyarrow as pa

from ratatouille_assets.lakehouse.dbt_plugin import NULL_PARTITION_REASON, REJECT_COLUMN, _ModelStream


def _read_ahead_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "stream-ahead"]


def _result(conn: duckdb.DuckDBPyConnection, rows: int, batch: int) -> pa.RecordBatchReader:
    # Every 1000th row has a reject reason, every 1500th no partition value (some both).
    return conn.execute(f"""
        SELECT i AS id, CASE WHEN i % 1500 = 0 THEN NULL ELSE DATE '2024-01-01' END AS day,
               DATE '2024-01-01' AS _landing_date,
               CASE WHEN i % 1000 = 0 THEN 'bad_id' END AS {REJECT_COLUMN}
        FROM range({rows}) t(i)""").to_arrow_reader(batch)


def test_rows_and_rejects_are_split_on_the_way():
    conn = duckdb.connect()
    stream = _ModelStream(_result(conn, 10_000, 2_048), partition_by="day")
    kept = pa.concat_tables(list(stream))
    rejected = stream.rejected()
    expected_bad = {i for i in range(10_000) if i % 1000 == 0 or i % 1500 == 0}
    assert REJECT_COLUMN not in kept.column_names
    assert sorted(kept.column("id").to_pylist()) == [i for i in range(10_000) if i not in expected_bad]
    reasons = dict(zip(rejected.column("id").to_pylist(), rejected.column(REJECT_COLUMN).to_pylist()))
    assert reasons == {i: "bad_id" if i % 1000 == 0 else NULL_PARTITION_REASON for i in expected_bad}
    assert (stream.rows, stream.rejected_rows) == (kept.num_rows, len(expected_bad))


def test_a_model_without_a_reject_column_keeps_every_row():
    conn = duckdb.connect()
    reader = conn.execute("SELECT i AS id, DATE '2024-01-01' AS day FROM range(5000) t(i)").to_arrow_reader(1024)
    stream = _ModelStream(reader, partition_by="day")
    kept = pa.concat_tables(list(stream))
    assert kept.column_names == ["id", "day"] and kept.num_rows == 5000
    assert stream.rejected().num_rows == 0 and REJECT_COLUMN in stream.rejected().column_names


def test_closing_a_stream_halfway_ends_its_read_ahead_thread():
    conn = duckdb.connect()
    cursor = conn.cursor()
    before = _read_ahead_threads()
    stream = _ModelStream(_result(cursor, 2_000_000, 10_000), partition_by="day")
    chunks = iter(stream)
    next(chunks)  # the write took one chunk, then failed
    assert len(_read_ahead_threads()) == len(before) + 1
    stream.close()
    assert _read_ahead_threads() == before
    cursor.close()  # nothing reads from it any more
    assert conn.execute("SELECT 42").fetchone() == (42,)
