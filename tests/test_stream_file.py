"""A landing file too large to read whole is streamed to bronze in record batches (ingest/readers.py
STREAM_BYTES) and kept all-or-nothing by the write path (a write Segment): the rows are the ones
reading the file whole gives, and a bad row anywhere in it, even the last, leaves nothing of that
file in bronze and no data file behind, while the day's other files load."""

from __future__ import annotations

import datetime as dt
import gzip
import json
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest

from ratatouille_assets.ingest import readers
from ratatouille_assets.ingest.bronze import bronze_identifier, load_day
from ratatouille_assets.ingest.readers import BadFile
from ratatouille_assets.ingest.sources import parse_sources
from ratatouille_assets.lakehouse import duck, write
from ratatouille_assets.lakehouse.catalog import load_catalog
from ratatouille_assets.lakehouse.maintenance import _key, referenced_files

DAY = "2024-03-10"
ROWS = 12_000
COLUMNS = {"id": "bigint", "name": "varchar", "amount": "decimal(10,2)", "ts": "timestamp"}


def _rows(start: int, count: int) -> list[dict]:
    base = dt.datetime(2024, 3, 10)
    return [{"id": i, "name": f"n{i % 97}", "amount": f"{i % 1000}.{i % 100:02d}",
             "ts": (base + dt.timedelta(seconds=i)).isoformat(sep=" ")} for i in range(start, start + count)]


def _write(path: Path, fmt: str, rows: list[dict], tail: str | None = None) -> None:
    """``rows`` as a landing file of ``fmt`` (csv, csv.gz, jsonl, parquet); ``tail``: one more raw line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "parquet":
        body = json.dumps([{k: str(v) for k, v in r.items()} for r in rows])
        scratch = path.with_suffix(".json")
        scratch.write_text(body)
        duckdb.connect().execute(f"COPY (SELECT * FROM read_json('{scratch}', columns = {{id: 'VARCHAR', name: 'VARCHAR', "
                          f"amount: 'VARCHAR', ts: 'VARCHAR'}})) TO '{path}' (FORMAT parquet)")
        scratch.unlink()
        return
    if fmt == "jsonl":
        text = "".join(json.dumps(r) + "\n" for r in rows) + (tail + "\n" if tail else "")
    else:
        text = "id,name,amount,ts\n" + "".join(f"{r['id']},{r['name']},{r['amount']},{r['ts']}\n" for r in rows)
        text += tail + "\n" if tail else ""
    path.write_bytes(gzip.compress(text.encode()) if fmt == "csv.gz" else text.encode())


def _source(name: str, fmt: str, **extra):
    ext = fmt
    spec = {"format": fmt.removesuffix(".gz"), "path": f"shop/{{date}}/*.{ext}", "columns": COLUMNS,
            "primary_key": ["id"], **extra}
    return parse_sources({"sources": {name: spec}})[name]


def _load(settings, source, **options):
    return load_day(duck.connect(settings), load_catalog(settings), source, settings.landing, DAY, "run-1",
                    quarantine_root=settings.quarantine, **options)


def _content(settings, source) -> tuple[int, str, Decimal]:
    """Rows, a hash of every value but the per-load lineage (_ingested_at, _run_id), sum(amount)."""
    location = load_catalog(settings).load_table(bronze_identifier(source)).metadata_location
    return duck.connect(settings).execute(
        "SELECT count(*), md5(string_agg(concat_ws('|', id, name, amount, ts, _landing_date, _source_file), '\n' "
        f"ORDER BY _source_file, id)), sum(amount) FROM iceberg_scan('{location}')"
    ).fetchone()


def _orphans(settings, source) -> list[str]:
    """Files under the table's folder that its metadata does not reach."""
    table = load_catalog(settings).load_table(bronze_identifier(source))
    folder = Path(table.location().removeprefix("file://"))
    on_disk = {_key(f"file://{p}") for p in folder.rglob("*") if p.is_file()}
    return sorted(on_disk - referenced_files(table))


@pytest.fixture
def small_chunks(monkeypatch):
    """Batches and data files far smaller than a file, so a file spans several of each."""
    monkeypatch.setattr(readers, "STREAM_BATCH_ROWS", 1_000)
    monkeypatch.setattr(write, "CHUNK_ROWS", 2_500)


@pytest.mark.parametrize("fmt", ["csv", "csv.gz", "jsonl", "parquet"])
@pytest.mark.parametrize("nulling", [False, True], ids=["strict", "on_bad_value_null"])
def test_streaming_gives_what_reading_whole_gives(settings, monkeypatch, small_chunks, fmt, nulling):
    folder = Path(settings.landing) / "shop" / DAY
    _write(folder / f"a.{fmt}", fmt, _rows(0, ROWS))
    _write(folder / f"b.{fmt}", fmt, _rows(ROWS, 300))
    extra = {"on_bad_value": "null"} if nulling else {}
    if nulling and fmt != "parquet":  # two values that do not fit: NULL, counted, whichever way the file is read
        bad = "jsonl" if fmt == "jsonl" else "csv"
        line = (json.dumps({"id": 10**9, "name": "x", "amount": "1.005", "ts": "nope"}) if bad == "jsonl"
                else "1000000000,x,1.005,nope")
        _write(folder / f"a.{fmt}", fmt, _rows(0, ROWS), tail=line)
    whole, streamed = _source("whole", fmt, **extra), _source("streamed", fmt, **extra)
    loaded_whole = _load(settings, whole)

    streams = []
    stream = readers._Reader.stream
    monkeypatch.setattr(readers._Reader, "stream", lambda self, *a: streams.append(a[1].file) or stream(self, *a))
    monkeypatch.setattr(readers, "STREAM_BYTES", 0)  # every file streamed
    loaded_streamed = _load(settings, streamed)

    assert streams == [f"shop/{DAY}/a.{fmt}", f"shop/{DAY}/b.{fmt}"]
    assert loaded_whole.quarantined == loaded_streamed.quarantined == ()
    expected_rows = ROWS + 300 + (1 if nulling and fmt != "parquet" else 0)
    assert loaded_whole.rows == loaded_streamed.rows == expected_rows
    assert loaded_whole.nulled == loaded_streamed.nulled == (2 if nulling and fmt != "parquet" else 0)
    got_whole, got_streamed = _content(settings, whole), _content(settings, streamed)
    assert got_streamed == got_whole
    # Independently of both reads: the generated amounts.
    assert got_streamed[0] == expected_rows
    assert got_streamed[2] == sum(Decimal(r["amount"]) for r in _rows(0, ROWS + 300))
    # The big file was written in several data files as it streamed, and none is left over.
    table = load_catalog(settings).load_table(bronze_identifier(streamed))
    assert len(table.inspect.files()) >= ROWS // 2_500
    assert _orphans(settings, streamed) == []


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_a_bad_row_at_the_end_of_a_streamed_file_leaves_nothing_of_it(settings, monkeypatch, small_chunks, fmt):
    folder = Path(settings.landing) / "shop" / DAY
    _write(folder / f"1-small.{fmt}", fmt, _rows(0, 10))
    bad_line = json.dumps({"id": "zz", "name": "x", "amount": "1", "ts": "2024-03-10 00:00:00"}) if fmt == "jsonl" \
        else "zz,x,1,2024-03-10 00:00:00"
    _write(folder / f"2-big.{fmt}", fmt, _rows(100, ROWS), tail=bad_line)
    _write(folder / f"3-small.{fmt}", fmt, _rows(50_000, 7))
    monkeypatch.setattr(readers, "STREAM_BYTES", 50_000)  # the big file streams, the small ones are read whole
    deleted = []
    delete = write._delete_files
    monkeypatch.setattr(write, "_delete_files", lambda table, files: deleted.extend(files) or delete(table, files))
    source = _source("shop", fmt)

    result = _load(settings, source)

    # Data files of the big file had been written before its last row was read: they are gone.
    assert len(deleted) >= ROWS // 2_500 - 1
    (q,) = result.quarantined
    assert (q.file, q.reason) == (f"shop/{DAY}/2-big.{fmt}", "type_mismatch")
    assert "'zz'" in q.message and "column 'id'" in q.message
    assert Path(q.target).read_bytes() == (folder / f"2-big.{fmt}").read_bytes()
    rows, _, total = _content(settings, source)
    assert rows == 17 and result.rows == 17
    assert total == sum(Decimal(r["amount"]) for r in _rows(0, 10) + _rows(50_000, 7))
    location = load_catalog(settings).load_table(bronze_identifier(source)).metadata_location
    files = duck.connect(settings).execute(
        f"SELECT DISTINCT _source_file FROM iceberg_scan('{location}') ORDER BY 1").fetchall()
    assert files == [(f"shop/{DAY}/1-small.{fmt}",), (f"shop/{DAY}/3-small.{fmt}",)]
    assert result.result.summary["ratatouille.quarantined-files"] == "1"
    assert _orphans(settings, source) == []


def test_with_on_bad_file_fail_a_bad_streamed_file_commits_nothing(settings, monkeypatch, small_chunks):
    folder = Path(settings.landing) / "shop" / DAY
    _write(folder / "1-small.csv", "csv", _rows(0, 10))
    _write(folder / "2-big.csv", "csv", _rows(100, ROWS), tail="101,x,1.001,2024-03-10 00:00:00")
    monkeypatch.setattr(readers, "STREAM_BYTES", 50_000)
    source = _source("shop", "csv", on_bad_file="fail")

    with pytest.raises(BadFile) as raised:
        _load(settings, source)

    assert raised.value.file == f"shop/{DAY}/2-big.csv" and raised.value.reason == "lossy_value"
    table = load_catalog(settings).load_table(bronze_identifier(source))
    assert table.current_snapshot() is None
    assert _orphans(settings, source) == []


def test_a_write_that_stops_mid_file_leaves_no_read_ahead_behind(settings, monkeypatch, small_chunks):
    """The writer failed after a streamed file's first batch and the window is closed: the
    file's read-ahead thread ends before the window closes its cursors (never reading from a
    closed one)."""
    import threading

    folder = Path(settings.landing) / "shop" / DAY
    _write(folder / "a.csv", "csv", _rows(0, ROWS))
    monkeypatch.setattr(readers, "STREAM_BYTES", 0)  # every file streamed
    source = _source("stopped", "csv")
    conn = duck.connect(settings)
    listing = readers.list_window_files(conn, settings.landing, source, [DAY])

    def ahead() -> int:
        return sum(t.name == "stream-ahead" for t in threading.enumerate())

    before = ahead()
    window = readers.stream_window(conn, source, settings.landing, listing, "run", {})
    segment = next(window)
    assert isinstance(segment, write.Segment)
    first = next(iter(segment.tables))
    assert first.num_rows == 1_000
    assert ahead() == before + 1  # the next batches are being read
    window.close()
    assert ahead() == before
    assert conn.execute("SELECT 42").fetchone() == (42,)
