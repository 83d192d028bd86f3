"""A window's landing files read ahead in threads (ingest/readers.py stream_window) give what
reading each file on its own gives: the same rows in the same order, the bad files quarantined with
their reasons, the per-day counts; with on_bad_file: fail the first bad file in listing order
stops the stream."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import duckdb
import pytest

from ratatouille_assets.ingest.readers import BadFile, list_window_files, read_file, stream_window
from ratatouille_assets.ingest.sources import parse_sources
from tests.project import write_csv

DAYS = [(dt.date(2023, 12, 30) + dt.timedelta(days=i)).isoformat() for i in range(8)]


def _source(on_bad_file: str):
    return parse_sources({"sources": {"meter": {
        "format": "csv", "on_bad_file": on_bad_file, "columns": {"id": "bigint", "kwh": "decimal(8,2)"}}}})["meter"]


@pytest.fixture
def landing(tmp_path):
    root = tmp_path / "landing"
    for i, day in enumerate(DAYS):
        if i == 2:
            continue  # a day with no folder
        for f in range(i % 3 + 1):
            rows = [f"{i * 100 + f * 10 + r},{r}.5" for r in range(f + 1)]
            if (i, f) in {(4, 1), (6, 0)}:
                rows.append("not-a-number,1.0")  # breaks the contract: the whole file is bad
            write_csv(root / "meter" / day / f"part-{f}.csv", "id,kwh", rows)
    return str(root)


def _one_by_one(conn, source, landing, listing):
    """The reference: each listed file read on its own, in order (the empty days, an empty table)."""
    tables, days = [], {}
    at = dt.datetime(2024, 1, 1)
    for day, files in listing.items():
        good, rows, bad = [], 0, []
        for path in files:
            try:
                table = read_file(conn, source, path, landing_root=landing, day=day, run_id="run", ingested_at=at)
            except BadFile as exc:
                bad.append((exc.file, exc.reason))
                continue
            good.append(path)
            rows += table.num_rows
            tables.append(table)
        days[day] = (good, rows, bad)
    return _rows(tables), days


def _rows(tables):
    """Every row of ``tables`` in order, as dicts (files may differ in their extra columns)."""
    return [row for t in tables for row in t.drop_columns(["_ingested_at"]).to_pylist()]


def _summary(tables, reads):
    data = _rows(tables)
    days = {day: (f.files, f.rows, [(q.file, q.reason) for q in f.quarantined]) for day, f in reads.items()}
    return data, days


def test_read_ahead_equals_reading_file_by_file(landing, tmp_path):
    conn = duckdb.connect()
    conn.execute("SET TimeZone = 'UTC'")
    source = _source("quarantine")
    listing = list_window_files(conn, landing, source, DAYS)
    expected = _one_by_one(conn, source, landing, listing)
    reads: dict = {}
    tables = list(stream_window(conn, source, landing, listing, "run", reads, quarantine_root=str(tmp_path / "q")))
    got = _summary(tables, reads)
    assert got == expected
    data, days = got
    assert days[DAYS[2]] == ([], 0, [])  # the empty day still yields its (empty) table
    assert [q for _, _, qs in days.values() for q in qs] == [
        (f"meter/{DAYS[4]}/part-1.csv", "type_mismatch"), (f"meter/{DAYS[6]}/part-0.csv", "type_mismatch")]
    assert sum(rows for _, rows, _ in days.values()) == len(data) == 15
    # The bad files were set aside, each under its day, beside the reason.
    copies = sorted(p.relative_to(tmp_path / "q").as_posix() for p in (tmp_path / "q").rglob("*.csv"))
    assert copies == [f"meter/{DAYS[4]}/part-1.csv", f"meter/{DAYS[6]}/part-0.csv"]


def test_with_on_bad_file_fail_the_first_bad_file_stops_the_stream(landing):
    conn = duckdb.connect()
    source = _source("fail")
    listing = list_window_files(conn, landing, source, DAYS)
    seen = []
    with pytest.raises(BadFile) as raised:
        for table in stream_window(conn, source, landing, listing, "run", {}):
            seen.append(table)
    assert raised.value.file == f"meter/{DAYS[4]}/part-1.csv"
    # Everything listed before it was yielded, in order, nothing after it.
    assert [t.column("_source_file")[0].as_py() for t in seen if t.num_rows] == [
        f"meter/{DAYS[0]}/part-0.csv", f"meter/{DAYS[1]}/part-0.csv", f"meter/{DAYS[1]}/part-1.csv",
        f"meter/{DAYS[3]}/part-0.csv", f"meter/{DAYS[4]}/part-0.csv"]


def _write(path, fmt: str, header: list[str], rows: list[list[str]]) -> None:
    """One landing file of ``fmt`` with text values (Parquet through DuckDB, as VARCHAR columns)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "csv":
        write_csv(path, ",".join(header), [",".join(r) for r in rows])
    elif fmt == "jsonl":
        import json
        path.write_text("".join(json.dumps(dict(zip(header, r))) + "\n" for r in rows))
    else:
        values = " UNION ALL ".join(
            "SELECT " + ", ".join(f"'{v}'::VARCHAR AS \"{h}\"" for h, v in zip(header, r)) for r in rows)
        select = values or "SELECT " + ", ".join(f"NULL::VARCHAR AS \"{h}\"" for h in header) + " LIMIT 0"
        duckdb.connect().execute(f"COPY ({select}) TO '{path}' (FORMAT parquet)")


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_files_read_in_batches_equal_files_read_one_by_one(tmp_path, fmt, monkeypatch):
    """Small batches (3 files) over a window whose files change shape: an extra column on some
    days, a file with no rows, a bad value inside a batch, a name with glob characters, a file
    with the scan's own file column, one with DuckDB's file_index. Each comes out as reading it alone gives; only the batch with
    the bad file (and the files with the scan's columns) is read file by file."""
    from ratatouille_assets.ingest import readers

    monkeypatch.setattr(readers, "BATCH_FILES", 3)
    root = tmp_path / "landing"
    ext = {"csv": "csv", "jsonl": "jsonl", "parquet": "parquet"}[fmt]
    for i, day in enumerate(DAYS):
        folder = root / "meter" / day
        header = ["id", "kwh", *(["note"] if i in (3, 4) else [])]
        for f in range(2):
            rows = [[str(i * 100 + f * 10 + r), f"{r}.25", *(["n"] if i in (3, 4) else [])] for r in range(f + 2)]
            _write(folder / f"part-{f}.{ext}", fmt, header, rows)
    _write(root / "meter" / DAYS[1] / f"empty.{ext}", fmt, ["id", "kwh"], [])
    _write(root / "meter" / DAYS[5] / f"part-[x].{ext}", fmt, ["id", "kwh"], [["777", "7.5"]])
    _write(root / "meter" / DAYS[6] / f"lossy.{ext}", fmt, ["id", "kwh"], [["1", "0.125"]])  # decimal(8,2)
    _write(root / "meter" / DAYS[7] / f"odd.{ext}", fmt, ["id", "kwh", "__ratatouille_file"], [["5", "1.5", "x"]])
    # A column named as DuckDB's virtual file_index, which a batched scan numbers its files in.
    for name in ("shadow-a", "shadow-b"):  # both would be file 0 of their batch
        _write(root / "meter" / DAYS[0] / f"{name}.{ext}", fmt, ["id", "kwh", "File_Index"], [["6", "2.5", "0"]])
    if fmt == "csv":  # Windows line ends beside Unix ones: DuckDB refuses the mixed scan, never a '\r' in a value
        (root / "meter" / DAYS[2] / "crlf.csv").write_bytes(b"id,kwh\r\n901,1.5\r\n")
    source = parse_sources({"sources": {"meter": {
        "format": fmt, "columns": {"id": "bigint", "kwh": "decimal(8,2)"}}}})["meter"]
    conn = duckdb.connect()
    conn.execute("SET TimeZone = 'UTC'")
    listing = list_window_files(conn, str(root), source, DAYS)
    expected = _one_by_one(conn, source, str(root), listing)

    alone = []
    read_one = readers._Reader._read_one
    monkeypatch.setattr(readers._Reader, "_read_one", lambda self, c, day, path: alone.append(path) or read_one(self, c, day, path))
    reads: dict = {}
    tables = list(stream_window(conn, source, str(root), listing, "run", reads, quarantine_root=str(tmp_path / "q")))
    data, days = _summary(tables, reads)
    assert (data, days) == expected
    empty = [(f"meter/{DAYS[1]}/empty.jsonl", "empty_file")] if fmt == "jsonl" else []  # no rows: 0 bytes
    assert [q for _, _, qs in days.values() for q in qs] == [*empty, (f"meter/{DAYS[6]}/lossy.{ext}", "lossy_value")]
    assert {r["_source_file"] for r in data} >= {f"meter/{DAYS[5]}/part-[x].{ext}", f"meter/{DAYS[7]}/odd.{ext}"}
    assert len(data) == 8 * 5 + 1 + 1 + 2 + (fmt == "csv")  # 2 + 3 rows a day, the glob-named, odd and shadow files
    assert [(r["_source_file"], r["File_Index"]) for r in data if r["id"] == 6] == [
        (f"meter/{DAYS[0]}/shadow-{x}.{ext}", "0") for x in "ab"]
    if fmt == "csv":
        assert [r["kwh"] for r in data if r["id"] == 901] == [Decimal("1.50")]
    # Batches were read as batches: only the bad file's batch went file by file, and the odd file.
    files = sum(len(f) for f in listing.values())
    batch_of_the_bad_file = [p for p in alone if f"/{DAYS[6]}/" in p or f"/{DAYS[5]}/" in p]
    assert 1 <= len(batch_of_the_bad_file) <= 3
    assert len(alone) <= 3 + 3 + (3 if fmt == "csv" else 0) < files  # csv: the crlf file's batch too
    assert {p.rsplit("/", 1)[1] for p in alone} >= {f"odd.{ext}", f"shadow-a.{ext}", f"shadow-b.{ext}"}
