"""A window's landing files read ahead in threads (ingest/readers.py stream_window) give what
reading each file on its own gives: the same rows in the same order, the bad files quarantined with
their reasons, the per-day counts; with on_bad_file: fail the first bad file in listing order
stops the stream."""

from __future__ import annotations

import datetime as dt

import duckdb
import pyarrow as pa
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
    return pa.concat_tables(tables).drop_columns(["_ingested_at"]).to_pylist(), days


def _summary(tables, reads):
    data = pa.concat_tables(tables).drop_columns(["_ingested_at"]).to_pylist()
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
