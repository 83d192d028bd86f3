"""Hostile landing files: nothing loads changed, nothing loads from the wrong file.

Each test is one way a landing file used to load silently wrong (a value rounded, an offset
dropped, a column renamed, a neighbour's rows read); each asserts the rows that came out against
the input, or the quarantine reason that names file, column and fix — on real DuckDB parsing and
a real Iceberg catalog, locally and on S3 over HTTP.
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
import uuid
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest

from ratatouille_assets.ingest.bronze import BronzeLoad, MissingFilesError, bronze_identifier, load_day
from ratatouille_assets.ingest.bronze import load as load_bronze
from ratatouille_assets.ingest.sources import Source, SourceConfigError, parse_sources
from ratatouille_assets.lakehouse import duck, s3
from ratatouille_assets.lakehouse.catalog import load_catalog
from ratatouille_assets.settings import Settings, get_settings
from tests.conftest import use_home
from tests.xlsx import DateSerial, Formula, Sheet, write_xlsx

DAY = "2024-03-01"


def make_source(columns: dict[str, str], fmt: str = "csv", **extra) -> Source:
    spec = {"format": fmt, "path": f"feed/{{date}}/*.{fmt}", "columns": columns, **extra}
    return parse_sources({"sources": {"feed": spec}})["feed"]


def folder(settings: Settings, day: str = DAY) -> Path:
    path = Path(settings.landing) / "feed" / day
    path.mkdir(parents=True, exist_ok=True)
    return path


def load(settings: Settings, source: Source, day: str = DAY, max_file_bytes: int | None = None) -> BronzeLoad:
    return load_day(duck.connect(settings), load_catalog(settings), source, settings.landing, day, "run-1",
                    quarantine_root=settings.quarantine, max_file_bytes=max_file_bytes)


def rows(settings: Settings, source: Source, columns: str, order: str = "1") -> list[tuple]:
    location = load_catalog(settings).load_table(bronze_identifier(source)).metadata_location
    return duck.connect(settings).execute(
        f"SELECT {columns} FROM iceberg_scan('{location}') ORDER BY {order}").fetchall()


def quarantined(result: BronzeLoad) -> dict[str, tuple[str, str]]:
    """file name -> (reason, message) of what the load set aside."""
    return {q.file.rsplit("/", 1)[-1]: (q.reason, q.message) for q in result.quarantined}


def assert_set_aside(result: BronzeLoad, name: str, reason: str, *phrases: str) -> None:
    got = quarantined(result)
    assert name in got, f"{name} was not quarantined; quarantined: {got}"
    assert got[name][0] == reason, got[name]
    for phrase in (f"feed/{DAY}/{name}", "re-materialize the partition", *phrases):
        assert phrase in got[name][1], f"{phrase!r} not in {got[name][1]!r}"


# --- file names: a listed file is read as exactly that file ---------------------------------------

# name -> the id its one row holds; every name a glob would read as a pattern, or quote, or encode
HOSTILE_NAMES = {
    "*.csv": 1, "b.csv": 2, "c.csv": 3, "a[1].csv": 4, "a1.csv": 5, "?.csv": 6, "x.csv": 7, "**.csv": 8,
    "sp ace.csv": 9, "q'uote.csv": 10, 'dq"uote.csv': 11, "é-ü.csv": 12, "x{1,2}.csv": 13, "[].csv": 14,
}


def _wildcard_files() -> dict[str, bytes]:
    quoted = {name: '"' + name.replace('"', '""') + '"' for name in HOSTILE_NAMES}
    return {name: f"id,name\n{i},{quoted[name]}\n".encode() for name, i in HOSTILE_NAMES.items()}


def test_wildcard_and_quote_characters_in_names_read_exactly_that_file(tmp_path, monkeypatch):
    # The landing root itself has a bracket and a space: it must not glob either.
    monkeypatch.setenv("RATATOUILLE_LANDING", str(tmp_path / "land [1]" / "zone"))
    settings = use_home(monkeypatch, tmp_path / "rt")
    source = make_source({"id": "bigint", "name": "varchar"})
    for name, data in _wildcard_files().items():
        (folder(settings) / name).write_bytes(data)
    result = load(settings, source)
    assert result.quarantined == ()
    expected = sorted((i, name, f"feed/{DAY}/{name}") for name, i in HOSTILE_NAMES.items())
    assert rows(settings, source, "id, name, _source_file") == expected
    get_settings.cache_clear()


def use_s3_landing(tmp_path, monkeypatch, s3_srv, root: str) -> Settings:
    """A landing zone at ``s3://<new bucket>/<root>`` on the moto server; the rest stays local."""
    bucket = "hostile-" + uuid.uuid4().hex[:8]
    s3_srv.client().create_bucket(Bucket=bucket)
    for var, value in {"ENDPOINT": s3_srv.endpoint, "REGION": s3_srv.region, "ACCESS_KEY_ID": s3_srv.access_key_id,
                       "SECRET_ACCESS_KEY": s3_srv.secret_access_key}.items():
        monkeypatch.setenv(f"RATATOUILLE_S3_{var}", value)
    monkeypatch.setenv("RATATOUILLE_LANDING", f"s3://{bucket}/{root}")
    monkeypatch.setenv("RATATOUILLE_QUARANTINE", str(tmp_path / "quarantine"))
    return use_home(monkeypatch, tmp_path / "rt")


def test_wildcard_names_on_s3_read_exactly_that_object(tmp_path, monkeypatch, s3_srv):
    settings = use_s3_landing(tmp_path, monkeypatch, s3_srv, "land[1]")
    client = s3_srv.client()
    source = make_source({"id": "bigint", "name": "varchar"})
    for name, data in _wildcard_files().items():
        s3.put_bytes(client, s3.join(settings.landing, "feed", DAY, name), data)
    result = load(settings, source)
    assert result.quarantined == ()
    expected = sorted((i, name, f"feed/{DAY}/{name}") for name, i in HOSTILE_NAMES.items())
    assert rows(settings, source, "id, name, _source_file") == expected
    get_settings.cache_clear()


# --- values: a cast never changes one ---------------------------------------------------------------

NUMBERS = {"id": "bigint", "qty": "integer", "price": "decimal(12,2)"}


LOSSY_NUMBERS = [  # (column, text): a value a cast would round, re-read or truncate
    ("qty", "12.7"), ("qty", "2.5"), ("qty", "0x10"), ("qty", "1e3"), ("qty", "1_000"),
    ("price", "19.999"), ("price", "1.5e2"), ("id", "9007199254740993.5"),
]


def test_a_number_that_a_cast_would_change_quarantines_its_file(settings):
    """One file per lossy value, all in one day: each is set aside on its own, the good file loads."""
    source = make_source(NUMBERS)
    (folder(settings) / "good.csv").write_text("id,qty,price\n1,3,19.99\n2,-4,0.5\n3,+5,7\n4,12.0,19.990\n")
    for i, (column, text) in enumerate(LOSSY_NUMBERS):
        values = {"id": str(10 + i), "qty": "1", "price": "1.00"} | {column: text}
        (folder(settings) / f"lossy-{i}.csv").write_text(f"id,qty,price\n8,2,2.00\n{values['id']},{values['qty']},{values['price']}\n")
    result = load(settings, source)
    for i, (column, text) in enumerate(LOSSY_NUMBERS):
        assert_set_aside(result, f"lossy-{i}.csv", "lossy_value",
                         f"column '{column}' has 1 value(s) that would change if stored as {NUMBERS[column]}",
                         f"e.g. {text!r}", "fit exactly")
    assert set(quarantined(result)) == {f"lossy-{i}.csv" for i in range(len(LOSSY_NUMBERS))}
    # The good file's values, exactly: 12.0 is the integer 12, 19.990 the decimal 19.99.
    assert rows(settings, source, "id, qty, price") == [
        (1, 3, Decimal("19.99")), (2, -4, Decimal("0.50")), (3, 5, Decimal("7.00")), (4, 12, Decimal("19.99"))]


def test_a_value_that_is_no_number_is_a_type_mismatch_not_a_lossy_value(settings):
    source = make_source(NUMBERS)
    (folder(settings) / "words.csv").write_text("id,qty,price\n1,three,1.50\n2,4,1.2.3\n")
    result = load(settings, source)
    assert_set_aside(result, "words.csv", "type_mismatch", "column 'qty' has 1 value(s) that are not integer, e.g. 'three'",
                     "column 'price' has 1 value(s) that are not decimal(12,2), e.g. '1.2.3'")


def _parquet(settings: Settings, path: Path, select: str) -> None:
    duck.connect(settings).execute(f"COPY ({select}) TO '{path}' (FORMAT parquet)")


@pytest.mark.parametrize(("declared", "select", "reason", "phrase"), [
    ("decimal(12,2)", "SELECT 1::BIGINT AS id, 1.005::DOUBLE AS v", "lossy_value",
     "column 'v' has 1 value(s) that would change if stored as decimal(12,2), e.g. '1.005' (the file stores it as DOUBLE)"),
    ("bigint", "SELECT 1::BIGINT AS id, 12.7::DOUBLE AS v", "lossy_value", "e.g. '12.7'"),
    ("double", "SELECT 1::BIGINT AS id, 9007199254740993::BIGINT AS v", "lossy_value", "e.g. '9007199254740993'"),
    ("date", "SELECT 1::BIGINT AS id, TIMESTAMP '2024-03-01 10:00:00' AS v", "lossy_value", "stored as date"),
    ("timestamp", "SELECT 1::BIGINT AS id, '2024-03-01 10:00:00.000000001'::TIMESTAMP_NS AS v", "lossy_value",
     "stored as timestamp"),
    ("integer", "SELECT 1::BIGINT AS id, true AS v", "type_mismatch", "booleans and numbers do not convert"),
    ("varchar", "SELECT 1::BIGINT AS id, {'a': 1} AS v", "type_mismatch", "it holds nested values (STRUCT(a INTEGER))"),
    ("varchar", "SELECT 1::BIGINT AS id, [1, 2] AS v", "type_mismatch", "nested values (INTEGER[])"),
])
def test_a_parquet_value_that_a_cast_would_change_quarantines_its_file(settings, declared, select, reason, phrase):
    source = make_source({"id": "bigint", "v": declared}, fmt="parquet")
    _parquet(settings, folder(settings) / "bad.parquet", select)
    result = load(settings, source)
    assert_set_aside(result, "bad.parquet", reason, f"declared {declared}" if reason == "type_mismatch" else "", phrase)


def test_parquet_values_that_convert_exactly_load(settings):
    source = make_source({"id": "bigint", "price": "decimal(12,2)", "n": "bigint", "d": "date", "seen": "timestamp"},
                         fmt="parquet")
    _parquet(settings, folder(settings) / "ok.parquet",
             "SELECT 1::INTEGER AS id, 19.99::DOUBLE AS price, 12.0::DOUBLE AS n, "
             "TIMESTAMP '2024-03-01 00:00:00' AS d, TIMESTAMPTZ '2024-03-01 10:00:00+02:00' AS seen")
    result = load(settings, source)
    assert result.quarantined == ()
    assert rows(settings, source, "id, price, n, d, seen") == [
        (1, Decimal("19.99"), 12, dt.date(2024, 3, 1), dt.datetime(2024, 3, 1, 8, 0))]


# --- time stamps: UTC the same way in every format ----------------------------------------------------

STAMPS = [  # text as landed -> the UTC time stamp it is
    ("2024-03-01T10:00:00+02:00", dt.datetime(2024, 3, 1, 8, 0)),
    ("2024-03-01 23:30:00-05:00", dt.datetime(2024, 3, 2, 4, 30)),
    ("2024-03-01T10:00:00Z", dt.datetime(2024, 3, 1, 10, 0)),
    ("2024-03-01 10:00:00", dt.datetime(2024, 3, 1, 10, 0)),  # no offset: UTC, as documented
    ("2024-07-01 12:00:00 Europe/Paris", dt.datetime(2024, 7, 1, 10, 0)),
    ("2024-03-01 10:00:00.123456+01:00", dt.datetime(2024, 3, 1, 9, 0, 0, 123456)),
]


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_time_stamps_with_offsets_are_stored_in_utc_in_every_format(settings, fmt):
    source = make_source({"id": "bigint", "seen": "timestamp", "seen_tz": "timestamptz"}, fmt=fmt)
    path = folder(settings) / f"stamps.{fmt}"
    if fmt == "csv":
        path.write_text("id,seen,seen_tz\n" + "".join(f"{i},{text},{text}\n" for i, (text, _) in enumerate(STAMPS)))
    elif fmt == "jsonl":
        path.write_text("".join(json.dumps({"id": i, "seen": text, "seen_tz": text}) + "\n" for i, (text, _) in enumerate(STAMPS)))
    else:  # Parquet stores the instant (TIMESTAMPTZ); the declared timestamp is its UTC wall time
        values = ", ".join(f"({i}, TIMESTAMPTZ '{text}')" for i, (text, _) in enumerate(STAMPS))
        _parquet(settings, path, f"SELECT id::BIGINT AS id, t AS seen, t AS seen_tz FROM (VALUES {values}) v(id, t)")
    result = load(settings, source)
    assert result.quarantined == ()
    got = rows(settings, source, "id, seen, seen_tz", "id")
    utc = dt.UTC
    assert got == [(i, want, want.replace(tzinfo=utc)) for i, (_, want) in enumerate(STAMPS)]


def test_zoneless_time_stamps_take_the_plain_cast_and_get_the_same_value():
    """Text without an offset or zone skips the time zone conversion: pinned against the slow
    route (TIMESTAMPTZ, then the UTC wall time) over valid and invalid dates, times and fractions."""
    import random

    from ratatouille_assets.ingest.casts import column_cast

    rng = random.Random(18)
    texts = []
    for _ in range(20_000):
        text = f"{rng.choice(['0001', '1969', '2024', '2023', '9999', '0000'])}-{rng.randint(0, 13):02d}-{rng.randint(0, 32):02d}"
        if rng.random() < 0.8:
            text += f"{rng.choice('T ')}{rng.randint(0, 25):02d}:{rng.randint(0, 61):02d}"
            if rng.random() < 0.7:
                text += f":{rng.randint(0, 61):02d}" + (f".{rng.randint(0, 999999):0{rng.randint(1, 6)}d}" if rng.random() < 0.5 else "")
        texts.append(text)
    texts += [text + zone for text in texts[:2000] for zone in ("Z", "+02:00", "-0530", " Europe/Paris")][:4000]
    cast = column_cast("t", "VARCHAR", "timestamp")
    assert "regexp_full_match" in cast.fast[0] and "TIMESTAMPTZ" not in cast.fast[1]  # the fast path is there
    slow = "TRY_CAST(TRY_CAST(t AS TIMESTAMPTZ) AS TIMESTAMP)"
    conn = duck.session()
    try:
        conn.execute("CREATE TEMP TABLE texts AS SELECT unnest(?::VARCHAR[]) AS t", [texts])
        differ, plain, converted = conn.execute(
            f"SELECT count(*) FILTER (WHERE ({cast.try_value}) IS DISTINCT FROM {slow}), "
            f"count(*) FILTER (WHERE TRY_CAST(t AS TIMESTAMP) IS NOT NULL), count(*) FILTER (WHERE ({cast.try_value}) IS NOT NULL) "
            "FROM texts"
        ).fetchone()
        # A source with on_bad_value: null reads with this select: the slow route's values, NULL where it has none.
        differ_nulling = conn.execute(f"SELECT count(*) FILTER (WHERE t IS DISTINCT FROM s) FROM ("
                                      f"SELECT {cast.nulling_select('t')}, {slow} AS s FROM texts)").fetchone()[0]
        # The reader's own select: valid stamps read as on the slow route, an invalid one fails the file.
        valid = conn.execute(f"SELECT count(*) FROM texts WHERE {slow} IS NOT NULL").fetchone()[0]
        read = conn.execute(f"SELECT count(*) FILTER (WHERE t IS NOT DISTINCT FROM s) FROM ("
                            f"SELECT {cast.select('t')}, s FROM (SELECT t, {slow} AS s FROM texts WHERE {slow} IS NOT NULL))").fetchone()[0]
        with pytest.raises(duckdb.Error):
            conn.execute(f"SELECT {cast.select('t')} FROM texts").fetchall()
    finally:
        conn.close()
    assert differ == 0 and differ_nulling == 0
    assert plain > 10_000 and converted > plain  # valid stamps on both routes; offsets convert
    assert read == valid


def test_json_keys_that_vary_between_records_keep_their_order_of_first_appearance(settings):
    source = make_source({"id": "bigint"}, fmt="jsonl")
    names = [f"k{i}_{name}" for i, name in enumerate("zeta alpha mid omega beta kappa delta gamma iota rho".split())]
    lines = [{"id": 0}] + [{"id": i + 1, name: str(i)} for i, name in enumerate(names)] + [{"id": 99}]
    (folder(settings) / "varied.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines * 500))
    result = load(settings, source)
    assert result.quarantined == ()
    table = load_catalog(settings).load_table(bronze_identifier(source))
    assert [f.name for f in table.schema().fields][:len(names) + 1] == ["id", *names]
    assert rows(settings, source, f"count(*), count({names[-1]}), max({names[0]})", "1") == [(6000, 500, "0")]


def test_digits_past_the_microsecond_are_refused_not_truncated(settings):
    source = make_source({"id": "bigint", "at": "timestamp"})
    (folder(settings) / "ns.csv").write_text("id,at\n1,2024-03-01 10:00:00.1234567\n2,2024-03-01 10:00:00.1234560\n")
    result = load(settings, source)
    assert_set_aside(result, "ns.csv", "lossy_value", "column 'at' has 1 value(s) that would change",
                     "'2024-03-01 10:00:00.1234567'")


def test_a_time_of_day_in_a_date_column_is_refused_not_dropped(settings):
    source = make_source({"id": "bigint", "d": "date"})
    (folder(settings) / "d.csv").write_text("id,d\n1,2024-03-01\n2,2024-03-01 10:00\n")
    result = load(settings, source)
    assert_set_aside(result, "d.csv", "lossy_value", "column 'd' has 1 value(s) that would change if stored as date")


# --- nested JSON ------------------------------------------------------------------------------------

def test_a_nested_json_value_in_a_declared_column_is_refused(settings):
    source = make_source({"id": "bigint", "name": "varchar"}, fmt="jsonl")
    (folder(settings) / "good.jsonl").write_text('{"id": 1, "name": "plain"}\n{"id": 2, "name": null}\n'
                                                  '{"id": 3, "name": "{\\"looks\\": \\"nested\\"}"}\n')
    (folder(settings) / "nested.jsonl").write_text('{"id": 4, "name": {"first": "a"}}\n{"id": 5, "name": [1]}\n')
    result = load(settings, source)
    assert_set_aside(result, "nested.jsonl", "lossy_value", "column 'name' has 2 value(s) that would change")
    # A string that merely looks like JSON is a string.
    assert rows(settings, source, "id, name") == [(1, "plain"), (2, None), (3, '{"looks": "nested"}')]


def test_json_numbers_follow_the_same_rules_as_text(settings):
    source = make_source({"id": "bigint", "qty": "integer"}, fmt="jsonl")
    (folder(settings) / "good.jsonl").write_text('{"id": 1, "qty": 3}\n{"id": 2, "qty": "4"}\n')
    (folder(settings) / "fraction.jsonl").write_text('{"id": 3, "qty": 12.7}\n')
    (folder(settings) / "bool.jsonl").write_text('{"id": 4, "qty": true}\n')
    result = load(settings, source)
    assert_set_aside(result, "fraction.jsonl", "lossy_value", "e.g. '12.7'")
    assert_set_aside(result, "bool.jsonl", "type_mismatch", "e.g. 'true'")
    assert rows(settings, source, "id, qty") == [(1, 3), (2, 4)]


# --- headers ----------------------------------------------------------------------------------------

@pytest.mark.parametrize(("header", "phrase"), [
    ("id,email,email", "column 'email' appears more than once in the header"),
    ("id,email,EMAIL", "columns 'email' and 'EMAIL' differ only in case"),
    ("id,email,", "column 3 of the header has no name (a trailing comma ends the header line)"),
    ("id,,email", "column 2 of the header has no name"),
])
def test_a_header_duckdb_would_rename_quarantines_its_file(settings, header, phrase):
    source = make_source({"id": "bigint", "email": "varchar"})
    (folder(settings) / "good.csv").write_text("id,email\n1,a@x\n")
    width = header.count(",") + 1
    (folder(settings) / "bad.csv").write_text(header + "\n" + ",".join(["2"] + ["b@x"] * (width - 1)) + "\n")
    result = load(settings, source)
    assert_set_aside(result, "bad.csv", "bad_header", phrase)
    assert rows(settings, source, "id, email") == [(1, "a@x")]
    # No column was invented for the table either.
    table = load_catalog(settings).load_table(bronze_identifier(source))
    assert [f.name for f in table.schema().fields if not f.name.startswith("_")] == ["id", "email"]


def test_json_keys_that_differ_only_in_case_quarantine_the_file(settings):
    source = make_source({"id": "bigint", "email": "varchar"}, fmt="jsonl")
    (folder(settings) / "good.jsonl").write_text('{"id": 1, "email": "a@x", "email_1": "kept"}\n')
    (folder(settings) / "case.jsonl").write_text('{"id": 2, "email": "b@x", "EMAIL": "c@x"}\n')
    result = load(settings, source)
    assert_set_aside(result, "case.jsonl", "bad_header", "'email' and 'EMAIL' differ only in case")
    # A real column named email_1 is not mistaken for a rename.
    assert rows(settings, source, "id, email, email_1") == [(1, "a@x", "kept")]


def test_a_gzip_header_is_read_like_a_plain_one(settings):
    source = make_source({"id": "bigint", "email": "varchar"}, path="feed/{date}/*.csv.gz")
    with gzip.open(folder(settings) / "dup.csv.gz", "wt") as handle:
        handle.write("id,email,email\n1,a,b\n")
    result = load(settings, source)
    assert quarantined(result)["dup.csv.gz"][0] == "bad_header"


# --- an empty listing never deletes data ---------------------------------------------------------

def _snapshots(settings: Settings, source: Source) -> int:
    return len(load_catalog(settings).load_table(bronze_identifier(source)).snapshots())


def test_a_day_whose_folder_is_gone_fails_and_keeps_its_rows(settings):
    source = make_source({"id": "bigint"})
    (folder(settings) / "a.csv").write_text("id\n1\n2\n3\n")
    load(settings, source)
    commits = _snapshots(settings, source)
    for path in folder(settings).iterdir():
        path.unlink()
    folder(settings).rmdir()
    with pytest.raises(MissingFilesError) as error:
        load(settings, source)
    message = str(error.value)
    for phrase in (f"no landing files for 'feed' on 1 day(s) that hold rows: {DAY} (3 rows kept)",
                   f"looked for {settings.landing}/feed/{DAY}/*.csv", "nothing was written",
                   "on_missing_files: empty", "RATATOUILLE_LANDING"):
        assert phrase in message, f"{phrase!r} not in {message!r}"
    assert rows(settings, source, "id") == [(1,), (2,), (3,)]
    assert _snapshots(settings, source) == commits


def test_one_vanished_day_in_a_window_writes_none_of_it(settings):
    source = make_source({"id": "bigint"})
    days = ["2024-03-01", "2024-03-02", "2024-03-03"]
    for i, day in enumerate(days):
        (folder(settings, day) / "a.csv").write_text(f"id\n{i}\n")
    load_window(settings, source, days)
    (folder(settings, "2024-03-02") / "a.csv").unlink()
    (folder(settings, "2024-03-03") / "a.csv").write_text("id\n30\n31\n")  # a changed day beside it
    commits = _snapshots(settings, source)
    with pytest.raises(MissingFilesError, match=r"on 1 day\(s\) that hold rows: 2024-03-02 \(1 rows kept\)"):
        load_window(settings, source, days)
    assert rows(settings, source, "id") == [(0,), (1,), (2,)]
    assert _snapshots(settings, source) == commits


def test_a_day_without_files_that_holds_nothing_loads_empty(settings):
    """Gaps in a history (weekends, a source that started later) lose nothing: they load empty."""
    source = make_source({"id": "bigint"})
    (folder(settings, "2024-03-01") / "a.csv").write_text("id\n1\n")
    (folder(settings, "2024-03-03") / "a.csv").write_text("id\n3\n")
    result = load_window(settings, source, ["2024-03-01", "2024-03-02", "2024-03-03"])
    assert [(d.day, d.rows, d.files) for d in result.days] == [
        ("2024-03-01", 1, (str(folder(settings, "2024-03-01") / "a.csv"),)), ("2024-03-02", 0, ()),
        ("2024-03-03", 1, (str(folder(settings, "2024-03-03") / "a.csv"),))]
    assert rows(settings, source, "id") == [(1,), (3,)]


def test_a_reference_source_without_files_fails_and_keeps_its_table(settings):
    source = parse_sources({"sources": {"feed": {"format": "csv", "partitioned": False, "columns": {"id": "bigint"}}}})["feed"]
    ref = Path(settings.landing) / "feed"
    ref.mkdir(parents=True)
    (ref / "all.csv").write_text("id\n7\n8\n")
    load_day(duck.connect(settings), load_catalog(settings), source, settings.landing, None, "run-1",
             quarantine_root=settings.quarantine)
    (ref / "all.csv").unlink()
    with pytest.raises(MissingFilesError, match="no landing files for reference source 'feed'.*keeps its 2 rows"):
        load_day(duck.connect(settings), load_catalog(settings), source, settings.landing, None, "run-2",
                 quarantine_root=settings.quarantine)
    assert rows(settings, source, "id") == [(7,), (8,)]


def test_on_missing_files_empty_empties_a_day_on_purpose(settings):
    source = make_source({"id": "bigint"}, on_missing_files="empty")
    for i, day in enumerate(["2024-03-01", "2024-03-02", "2024-03-03"]):
        (folder(settings, day) / "a.csv").write_text(f"id\n{i}\n")
    load_window(settings, source, ["2024-03-01", "2024-03-02", "2024-03-03"])
    (folder(settings, "2024-03-02") / "a.csv").unlink()
    result = load_window(settings, source, ["2024-03-01", "2024-03-02", "2024-03-03"])
    assert [(d.day, d.rows) for d in result.days] == [("2024-03-01", 1), ("2024-03-02", 0), ("2024-03-03", 1)]
    assert rows(settings, source, "id") == [(0,), (2,)]


def test_on_missing_files_takes_fail_or_empty():
    with pytest.raises(SourceConfigError, match="on_missing_files 'skip' is not one of fail, empty"):
        make_source({"id": "bigint"}, on_missing_files="skip")


def load_window(settings: Settings, source: Source, days: list[str]) -> BronzeLoad:
    return load_bronze(duck.connect(settings), load_catalog(settings), source, settings.landing, days, "run-1",
                       quarantine_root=settings.quarantine)


# --- extra columns: a file whose extra column conflicts is set aside alone ----------------------

def test_an_extra_column_of_a_conflicting_type_sets_aside_that_file_only(settings):
    source = make_source({"id": "bigint"}, fmt="parquet")
    _parquet(settings, folder(settings) / "a.parquet", "SELECT 1::BIGINT AS id, {'x': 1} AS meta")
    _parquet(settings, folder(settings) / "b.parquet", "SELECT 2::BIGINT AS id, 'text' AS meta")
    _parquet(settings, folder(settings) / "c.parquet", "SELECT 3::BIGINT AS id, {'x': 3} AS meta")
    result = load(settings, source)
    assert_set_aside(result, "b.parquet", "extra_column_type_conflict", "extra column 'meta' is string here but struct")
    assert set(quarantined(result)) == {"b.parquet"}
    assert rows(settings, source, "id, meta.x") == [(1, 1), (3, 3)]
    # A later day meets the table's type, not just the window's.
    _parquet(settings, folder(settings, "2024-03-02") / "d.parquet", "SELECT 4::BIGINT AS id, [1, 2] AS meta")
    _parquet(settings, folder(settings, "2024-03-02") / "e.parquet", "SELECT 5::BIGINT AS id, {'x': 5} AS meta")
    later = load(settings, source, "2024-03-02")
    assert set(quarantined(later)) == {"d.parquet"}
    assert rows(settings, source, "id, meta.x") == [(1, 1), (3, 3), (5, 5)]


def test_an_extra_column_that_only_widens_loads(settings):
    source = make_source({"id": "bigint"}, fmt="parquet")
    _parquet(settings, folder(settings) / "a.parquet", "SELECT 1::BIGINT AS id, 7::INTEGER AS n")
    _parquet(settings, folder(settings) / "b.parquet", "SELECT 2::BIGINT AS id, 8000000000::BIGINT AS n")
    result = load(settings, source)
    assert result.quarantined == ()
    assert rows(settings, source, "id, n") == [(1, 7), (2, 8000000000)]


# --- compressed files -----------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_gzip_files_load_beside_plain_ones_with_the_default_path(settings, fmt):
    source = make_source({"id": "bigint", "name": "varchar"}, fmt=fmt, path=f"feed/{{date}}/*.{fmt}")
    lines = {"csv": ["id,name", "1,plain"], "jsonl": ['{"id": 1, "name": "plain"}']}[fmt]
    zipped = {"csv": ["id,name", "2,zipped", "3,\"with, comma\""],
              "jsonl": ['{"id": 2, "name": "zipped"}', '{"id": 3, "name": "with, comma"}']}[fmt]
    (folder(settings) / f"a.{fmt}").write_text("\n".join(lines) + "\n")
    with gzip.open(folder(settings) / f"b.{fmt}.gz", "wt") as handle:
        handle.write("\n".join(zipped) + "\n")
    # Two gzip members in one file (what `cat a.gz b.gz` makes) are one file's rows.
    first, second = {"csv": ("id,name\n4,second\n", "5,member\n"),
                     "jsonl": ('{"id": 4, "name": "second"}\n', '{"id": 5, "name": "member"}\n')}[fmt]
    (folder(settings) / f"c.{fmt}.gz").write_bytes(gzip.compress(first.encode()) + gzip.compress(second.encode()))
    result = load(settings, source)
    assert result.quarantined == ()
    assert rows(settings, source, "id, name, _source_file") == [
        (1, "plain", f"feed/{DAY}/a.{fmt}"), (2, "zipped", f"feed/{DAY}/b.{fmt}.gz"),
        (3, "with, comma", f"feed/{DAY}/b.{fmt}.gz"), (4, "second", f"feed/{DAY}/c.{fmt}.gz"),
        (5, "member", f"feed/{DAY}/c.{fmt}.gz")]


def test_a_decompression_bomb_is_refused_before_it_is_read(settings):
    source = make_source({"id": "bigint", "name": "varchar"})
    (folder(settings) / "a.csv").write_text("id,name\n1,ok\n")
    body = "id,name\n" + "".join(f"{i},{'x' * 90}\n" for i in range(40_000))  # ~3.7 MB of text
    (folder(settings) / "bomb.csv.gz").write_bytes(gzip.compress(body.encode(), compresslevel=9))
    assert (folder(settings) / "bomb.csv.gz").stat().st_size < 1_000_000
    result = load(settings, source, max_file_bytes=1_000_000)
    assert_set_aside(result, "bomb.csv.gz", "too_large", "decompresses to more than 1,000,000 bytes")
    assert rows(settings, source, "id") == [(1,)]


def test_a_truncated_gzip_file_is_named_as_such(settings):
    source = make_source({"id": "bigint", "name": "varchar"})
    (folder(settings) / "a.csv").write_text("id,name\n1,ok\n")
    whole = gzip.compress(("id,name\n" + "".join(f"{i},n{i}\n" for i in range(2, 5000))).encode())
    (folder(settings) / "cut.csv.gz").write_bytes(whole[: len(whole) // 2])
    (folder(settings) / "junk.csv.gz").write_bytes(b"this is not gzip at all\n")
    result = load(settings, source)
    assert_set_aside(result, "cut.csv.gz", "corrupt_gzip", "ends early (the file is truncated)")
    assert_set_aside(result, "junk.csv.gz", "corrupt_gzip", "not a valid gzip stream")
    assert rows(settings, source, "id") == [(1,)]


# --- Excel ------------------------------------------------------------------------------------------

def test_an_xlsx_sheet_loads_exactly_with_dates_formulas_and_blank_rows(settings):
    source = make_source({"id": "bigint", "qty": "integer", "day": "date", "seen": "timestamp", "name": "varchar",
                          "ok": "boolean", "total": "decimal(10,2)"}, fmt="xlsx", sheet="orders")
    write_xlsx(folder(settings) / "export.xlsx", [
        Sheet("cover", [["This workbook"], ["holds orders on the next sheet"]]),
        Sheet("orders", [
            ["id", "qty", "day", "seen", "name", "ok", "total"],
            [1, 3, DateSerial(45352), DateSerial(45352.5, "datetime"), "apple", True, Formula("B2*2.5", 7.5)],
            [None] * 7,  # a blank row: no record, and not the end of the sheet
            [2, 4.0, DateSerial(45353), DateSerial(45353.25, "datetime"), "pear", False, Formula("B4*2.5", 10)],
            [3, 5, DateSerial(45354), DateSerial(45354, "datetime"), None, True, 12.25],
        ], merged=["E4:E5"]),  # a merged cell holds its value in its first cell only, as the file does
    ])
    result = load(settings, source)
    assert result.quarantined == ()
    assert rows(settings, source, "id, qty, day, seen, name, ok, total, _source_file") == [
        (1, 3, dt.date(2024, 3, 1), dt.datetime(2024, 3, 1, 12, 0), "apple", True, Decimal("7.50"), f"feed/{DAY}/export.xlsx"),
        (2, 4, dt.date(2024, 3, 2), dt.datetime(2024, 3, 2, 6, 0), "pear", False, Decimal("10.00"), f"feed/{DAY}/export.xlsx"),
        (3, 5, dt.date(2024, 3, 3), dt.datetime(2024, 3, 3, 0, 0), None, True, Decimal("12.25"), f"feed/{DAY}/export.xlsx"),
    ]


def test_xlsx_and_gzip_files_on_s3_load_exactly(tmp_path, monkeypatch, s3_srv):
    settings = use_s3_landing(tmp_path, monkeypatch, s3_srv, "land")
    client = s3_srv.client()
    local = tmp_path / "made"
    local.mkdir()
    write_xlsx(local / "export.xlsx", [Sheet("cover", [["see next sheet"]]),
                                       Sheet("orders", [["id", "day"], [1, DateSerial(45352)], [2, DateSerial(45353)]])])
    s3.put_bytes(client, s3.join(settings.landing, "feed", DAY, "export.xlsx"), (local / "export.xlsx").read_bytes())
    xlsx = make_source({"id": "bigint", "day": "date"}, fmt="xlsx", sheet="orders")
    assert load(settings, xlsx).quarantined == ()
    assert rows(settings, xlsx, "id, day, _source_file") == [
        (1, dt.date(2024, 3, 1), f"feed/{DAY}/export.xlsx"), (2, dt.date(2024, 3, 2), f"feed/{DAY}/export.xlsx")]

    # The same source name, now CSV: gzip beside plain, and a bomb set aside (not read to the end).
    s3.put_bytes(client, s3.join(settings.landing, "feed", DAY, "a.csv"), b"id,name\n1,plain\n")
    s3.put_bytes(client, s3.join(settings.landing, "feed", DAY, "b.csv.gz"), gzip.compress(b"id,name\n2,zipped\n"))
    s3.put_bytes(client, s3.join(settings.landing, "feed", DAY, "bomb.csv.gz"),
                 gzip.compress(b"id,name\n" + b"3,aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\n" * 40_000))
    csv = parse_sources({"sources": {"feed": {"format": "csv", "columns": {"id": "bigint", "name": "varchar"}}}})["feed"]
    result = load(settings, csv, max_file_bytes=100_000)
    assert_set_aside(result, "bomb.csv.gz", "too_large")
    assert rows(settings, csv, "id, name, _source_file") == [
        (1, "plain", f"feed/{DAY}/a.csv"), (2, "zipped", f"feed/{DAY}/b.csv.gz")]
    get_settings.cache_clear()


@pytest.mark.parametrize(("sheet_rows", "reason", "phrase"), [
    ([["id", "qty"], [1, 3], [2, "four"]], "invalid_xlsx", "Failed to parse cell 'B3'"),
    ([["id", "qty"], [1, 12.7]], "lossy_value", "column 'qty' has 1 value(s) that would change if stored as integer, e.g. '12.7'"),
    ([["id", "day"], [1, 45352]], "type_mismatch", "it is DOUBLE in the file, which cannot become DATE"),
    ([["id", "qty", "qty"], [1, 2, 3]], "bad_header", "column 'qty' appears more than once"),
    ([["id", "qty", None], [1, 2, 3]], "bad_header", "cell C2 holds a value right of the header row"),
    ([["id", None, "qty"], [1, 2, 3]], "bad_header", "column 2 of the header has no name"),
    ([["id", "Qty"], [1, 2]], "missing_columns", "column 'qty' is missing"),
])
def test_an_xlsx_sheet_that_would_load_wrong_is_set_aside(settings, sheet_rows, reason, phrase):
    columns = {"id": "bigint", "day": "date"} if "day" in sheet_rows[0] else {"id": "bigint", "qty": "integer"}
    source = make_source(columns, fmt="xlsx")
    write_xlsx(folder(settings) / "bad.xlsx", [Sheet("Sheet1", sheet_rows)])
    result = load(settings, source)
    assert_set_aside(result, "bad.xlsx", reason, phrase)


def test_an_xlsx_source_names_a_sheet_that_is_not_there(settings):
    source = make_source({"id": "bigint"}, fmt="xlsx", sheet="orders")
    write_xlsx(folder(settings) / "wrong.xlsx", [Sheet("Orders 2024", [["id"], [1]])])
    result = load(settings, source)
    assert_set_aside(result, "wrong.xlsx", "invalid_xlsx", 'Sheet "orders" not found')


def test_sheet_is_for_xlsx_sources_only():
    with pytest.raises(SourceConfigError, match="sheet applies to xlsx sources only"):
        make_source({"id": "bigint"}, sheet="orders")


# --- a catalogue of hostile files: each loads exactly what it holds, or is set aside with a reason --

TWO_ROWS = [(1, "a"), (2, "b")]
HOSTILE_FILES = [  # (name, content, expected rows of (id, name) or the quarantine reason)
    ("bom.csv", b"\xef\xbb\xbfid,name\n1,a\n2,b\n", TWO_ROWS),
    ("crlf.csv", b"id,name\r\n1,a\r\n2,b\r\n", TWO_ROWS),
    ("no-final-newline.csv", b"id,name\n1,a\n2,b", TWO_ROWS),
    ("quoted-newline.csv", b'id,name\n1,"line one\nline two"\n2,b\n', [(1, "line one\nline two"), (2, "b")]),
    ("quoted-comma.csv", b'id,name\n1,"a, with comma"\n2,"say ""hi"""\n', [(1, "a, with comma"), (2, 'say "hi"')]),
    ("reordered.csv", b"name,id\na,1\nb,2\n", TWO_ROWS),
    ("padded-header.csv", b" id , name \n1,a\n2,b\n", TWO_ROWS),
    ("unicode.csv", "id,name\n1,ünïcödé ✓\n2,日本\n".encode(), [(1, "ünïcödé ✓"), (2, "日本")]),
    ("empty-strings.csv", b'id,name\n1,""\n2,\n', [(1, None), (2, None)]),
    ("header-only.csv", b"id,name\n", []),
    ("zero-byte.csv", b"", "empty_file"),
    ("latin1.csv", "id,name\n1,café\n".encode("latin-1"), "not_utf8"),
    ("binary.csv", bytes(range(256)) * 8, "not_utf8"),
    ("ragged.csv", b"id,name\n1,a,extra\n", "csv_parse_error"),
    ("semicolons.csv", b"id;name\n1;a\n", "missing_columns"),
    ("epoch-id.csv", b"id,name\n1.709e9,a\n", "lossy_value"),
    ("huge-line.csv", b"id,name\n1," + b"x" * 3_000_000 + b"\n", "csv_parse_error"),
    ("gzip-named-plain.csv.gz", b"id,name\n1,a\n", "corrupt_gzip"),
    (".half-uploaded.csv", b"id,name\n7,hidden\n", []),  # hidden: never a source's file (the landing check names it)
]


def _load_catalogue(settings: Settings, source: Source, files: list[tuple[str, bytes, object]], good: tuple[str, str]) -> None:
    """All ``files`` in one day beside a good one: each loads exactly what it holds or is set aside
    with its own reason, and the rest of the day loads."""
    for name, content, _ in files:
        (folder(settings) / name).write_bytes(content)
    (folder(settings) / good[0]).write_text(good[1])
    result = load(settings, source)
    reasons = {name: expected for name, _, expected in files if isinstance(expected, str)}
    assert set(quarantined(result)) == set(reasons)
    for name, reason in reasons.items():
        assert_set_aside(result, name, reason)
    by_file: dict[str, list[tuple]] = {}
    for file, *row in rows(settings, source, "_source_file, id, name", "_source_file, id"):
        by_file.setdefault(file.rsplit("/", 1)[-1], []).append(tuple(row))
    loaded = {name: expected for name, _, expected in files if not isinstance(expected, str) and expected}
    assert by_file == {**loaded, good[0]: [(100, "good")]}


def test_hostile_csv_files_load_exactly_or_are_set_aside_with_a_reason(settings):
    _load_catalogue(settings, make_source({"id": "bigint", "name": "varchar"}), HOSTILE_FILES,
                    ("~good.csv", "id,name\n100,good\n"))


HOSTILE_JSON = [
    ("duplicate-key.jsonl", b'{"id": 1, "name": "a", "name": "b"}\n', "invalid_json"),
    ("array-line.jsonl", b'[1, "a"]\n', "invalid_json"),
    ("truncated.jsonl", b'{"id": 1, "name": "a"}\n{"id": 2, "na', "invalid_json"),
    ("key-order.jsonl", b'{"name": "a", "id": 1}\n{"id": 2, "name": "b"}\n', TWO_ROWS),
    ("late-key.jsonl", b'{"id": 1, "name": "a"}\n{"id": 2, "name": "b", "extra": "x"}\n', TWO_ROWS),
    ("null-values.jsonl", b'{"id": 1, "name": null}\n{"id": 2}\n', [(1, None), (2, None)]),
    ("number-as-name.jsonl", b'{"id": 1, "name": 42}\n{"id": 2, "name": true}\n', [(1, "42"), (2, "true")]),
    ("big-id.jsonl", b'{"id": 12345678901234567890, "name": "a"}\n', "type_mismatch"),
    # DuckDB's reader calls an empty key C0 and would read it as NULLs: refused instead.
    ("empty-key.jsonl", b'{"id": 1, "name": "a", "": "lost"}\n', "bad_header"),
    ("case-twins.jsonl", b'{"id": 1, "name": "a"}\n{"id": 2, "Name": "b"}\n', "bad_header"),
    ("nested.jsonl", b'{"id": 1, "name": {"first": "a"}}\n', "lossy_value"),
    ("bracket-text.jsonl", b'{"id": 1, "name": "[a]"}\n{"id": 2, "name": "{b}"}\n', [(1, "[a]"), (2, "{b}")]),
]


def test_hostile_json_lines_files_load_exactly_or_are_set_aside_with_a_reason(settings):
    _load_catalogue(settings, make_source({"id": "bigint", "name": "varchar"}, fmt="jsonl"), HOSTILE_JSON,
                    ("~good.jsonl", '{"id": 100, "name": "good"}\n'))


# --- on_bad_value: null — the opt-in that keeps the file and counts what it nulls --------------------

def test_on_bad_value_null_sets_a_lossy_or_unconvertible_value_to_null_and_counts_it(settings):
    source = make_source({"id": "bigint", "qty": "integer", "seen": "timestamp"}, on_bad_value="null")
    (folder(settings) / "a.csv").write_text(
        "id,qty,seen\n1,12.7,2024-03-01 10:00:00+02:00\n2,three,2024-03-01 11:00:00\n3,5,not a time\n4,,2024-03-01\n")
    (folder(settings) / "b.csv").write_text("id,qty,seen\n5,0x10,2024-03-01 12:00:00\n")
    result = load(settings, source)
    assert result.quarantined == ()
    assert rows(settings, source, "id, qty, seen") == [
        (1, None, dt.datetime(2024, 3, 1, 8, 0)), (2, None, dt.datetime(2024, 3, 1, 11, 0)), (3, 5, None),
        (4, None, dt.datetime(2024, 3, 1, 0, 0)), (5, None, dt.datetime(2024, 3, 1, 12, 0))]
    # 12.7, three, 'not a time' and 0x10: four values nulled; the empty qty was NULL already.
    assert [d.nulled for d in result.days] == [4]
    assert result.result.summary["ratatouille.nulled-values"] == "4"


def test_on_bad_value_null_still_sets_aside_a_column_of_the_wrong_type(settings):
    source = make_source({"id": "bigint", "v": "integer"}, fmt="parquet", on_bad_value="null")
    _parquet(settings, folder(settings) / "bool.parquet", "SELECT 1::BIGINT AS id, true AS v")
    result = load(settings, source)
    assert_set_aside(result, "bool.parquet", "type_mismatch", "booleans and numbers do not convert")


@pytest.mark.slow
def test_the_nulled_values_show_on_the_bronze_materialization(settings, monkeypatch, tmp_path):
    import dagster as dg

    from ratatouille_assets.definitions import build_definitions
    from tests.project import make_project

    make_project(tmp_path / "project", monkeypatch, start="2024-03-01", sources="""
        feed:
          format: csv
          on_bad_value: "null"
          columns: {id: bigint, qty: integer}
    """)
    (folder(settings) / "a.csv").write_text("id,qty\n1,12.7\n2,3\n")
    defs = build_definitions()
    with dg.instance_for_test() as instance:
        result = dg.materialize(list(defs.assets), selection=[dg.AssetKey(["bronze", "feed"])], partition_key=DAY,
                                resources=dict(defs.resources), instance=instance)
        (event,) = result.asset_materializations_for_node("bronze_feed")
    assert event.metadata["nulled_values"].value == 1 and event.metadata["dagster/row_count"].value == 2


def test_an_epoch_number_in_a_timestamp_column_is_no_timestamp(settings):
    source = make_source({"id": "bigint", "seen": "timestamp"})
    (folder(settings) / "epoch.csv").write_text("id,seen\n1,1709287200\n")
    (folder(settings) / "millis.csv").write_text("id,seen\n2,1709287200000\n")
    result = load(settings, source)
    assert_set_aside(result, "epoch.csv", "type_mismatch", "column 'seen' has 1 value(s) that are not timestamp, e.g. '1709287200'")
    assert_set_aside(result, "millis.csv", "type_mismatch", "e.g. '1709287200000'")
