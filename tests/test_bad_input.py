"""Bad landing input: each bad file is named, quarantined with its reason, and the day's good files
still load, each once — on real DuckDB parsing and a real Iceberg catalog."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from ratatouille_assets.ingest.bronze import BronzeLoad, bronze_identifier, load_day
from ratatouille_assets.ingest.readers import LINEAGE_COLUMNS, BadFile, IngestError
from ratatouille_assets.ingest.sources import Source, SourceConfigError, parse_sources
from ratatouille_assets.lakehouse import duck
from ratatouille_assets.lakehouse.catalog import load_catalog

DAY = "2024-01-01"
COLUMNS = {"id": "bigint", "name": "varchar", "qty": "integer", "ts": "timestamp"}
HEADER = "id,name,qty,ts\n"
GOOD_1 = HEADER + "1,apple,3,2024-01-01 08:00:00\n2,pear,1,2024-01-01 09:30:00\n"
GOOD_2 = HEADER + "3,plum,7,2024-01-01 10:15:00\n"
GOOD_ROWS = [
    (1, "apple", 3, "2024-01-01 08:00:00", "good-1.csv"),
    (2, "pear", 1, "2024-01-01 09:30:00", "good-1.csv"),
    (3, "plum", 7, "2024-01-01 10:15:00", "good-2.csv"),
]
RERUN = "re-materialize the partition"


def make_source(fmt: str = "csv", **extra) -> Source:
    spec = {"format": fmt, "path": f"shop/{{date}}/*.{fmt}", "columns": COLUMNS, "primary_key": ["id"],
            "event_time": "ts", **extra}
    return parse_sources({"sources": {"shop": spec}})["shop"]


def landing(settings, day: str = DAY) -> Path:
    folder = Path(settings.landing) / "shop" / day
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def with_good_csv(settings, day: str = DAY) -> Path:
    folder = landing(settings, day)
    (folder / "good-1.csv").write_text(GOOD_1)
    (folder / "good-2.csv").write_text(GOOD_2)
    return folder


def write_parquet(settings, path: Path, select: str) -> None:
    duck.connect(settings).execute(f"COPY ({select}) TO '{path}' (FORMAT parquet)")


def with_good_parquet(settings) -> Path:
    folder = landing(settings)
    for name, (start, stop) in {"good-1.parquet": (1, 3), "good-2.parquet": (3, 4)}.items():
        write_parquet(settings, folder / name, (
            "SELECT id::BIGINT AS id, ['apple', 'pear', 'plum'][id] AS name, [3, 1, 7][id]::INTEGER AS qty, "
            "[TIMESTAMP '2024-01-01 08:00:00', TIMESTAMP '2024-01-01 09:30:00', TIMESTAMP '2024-01-01 10:15:00'][id] "
            f"AS ts FROM range({start}, {stop}) t(id)"
        ))
    return folder


def load(settings, source: Source, day: str = DAY, max_file_bytes: int | None = None) -> BronzeLoad:
    return load_day(
        duck.connect(settings), load_catalog(settings), source, settings.landing, day, "run-1",
        quarantine_root=settings.quarantine, max_file_bytes=max_file_bytes,
    )


def bronze(settings, source: Source, columns: str = "id, name, qty", day: str = DAY) -> list[tuple]:
    """The bronze rows of ``day``: ``columns``, then ts as text and the source file, by id."""
    location = load_catalog(settings).load_table(bronze_identifier(source)).metadata_location
    return duck.connect(settings).execute(
        f"SELECT {columns}, strftime(ts, '%Y-%m-%d %H:%M:%S'), _source_file "
        f"FROM iceberg_scan('{location}') WHERE _landing_date = DATE '{day}' ORDER BY id"
    ).fetchall()


def assert_good_rows_only(settings, source: Source, ext: str = "csv") -> None:
    expected = [(i, n, q, ts, f"shop/{DAY}/{f.replace('.csv', '.' + ext)}") for i, n, q, ts, f in GOOD_ROWS]
    assert bronze(settings, source) == expected


def assert_quarantined(settings, result: BronzeLoad, name: str, reason: str, *phrases: str, copied: bool = True) -> dict:
    """Exactly ``name`` was set aside for ``reason``; its message names file, reason and fix; copy and sidecar exist."""
    file = f"shop/{DAY}/{name}"
    (q,) = result.quarantined
    assert (q.file, q.reason) == (file, reason)
    for phrase in (file, reason, "source 'shop'", RERUN, *phrases):
        assert phrase in q.message, f"{phrase!r} not in {q.message!r}"
    folder = Path(settings.quarantine) / "shop" / DAY
    (sidecar_path,) = folder.glob("*.reason.json")
    sidecar = json.loads(sidecar_path.read_text())
    assert (sidecar["file"], sidecar["reason"], sidecar["message"]) == (file, reason, q.message)
    assert (sidecar["source"], sidecar["day"], sidecar["run_id"]) == ("shop", DAY, "run-1")
    assert sidecar["quarantined_at"].endswith("+00:00")
    if copied:
        target = Path(q.target)
        assert target.read_bytes() == (Path(settings.landing) / file).read_bytes()
        assert sorted(p.name for p in folder.iterdir()) == [target.name, f"{target.name}.reason.json"]
    else:
        assert q.target is None and [p.name for p in folder.iterdir()] == [sidecar_path.name]
    assert os.path.lexists(Path(settings.landing) / file)  # landing is never moved or deleted
    assert result.result.summary["ratatouille.quarantined-files"] == "1"
    return sidecar


def test_corrupt_parquet_is_quarantined(settings):
    folder = with_good_parquet(settings)
    write_parquet(settings, folder / "bad.parquet", "SELECT range::BIGINT AS id, 'n' || range AS name, "
                  "(range % 7)::INTEGER AS qty, TIMESTAMP '2024-01-01' AS ts FROM range(2000)")
    data = bytearray((folder / "bad.parquet").read_bytes())
    data[4:2000] = bytes(1996)  # data pages zeroed, footer intact: the schema reads, the rows do not
    (folder / "bad.parquet").write_bytes(bytes(data))
    source = make_source("parquet")
    result = load(settings, source)
    assert_quarantined(settings, result, "bad.parquet", "corrupt_parquet", "cannot be read as Parquet", "Re-export")
    assert_good_rows_only(settings, source, "parquet")


def test_truncated_parquet_is_quarantined(settings):
    folder = with_good_parquet(settings)
    whole = (folder / "good-1.parquet").read_bytes()
    (folder / "cut.parquet").write_bytes(whole[: len(whole) // 2])
    source = make_source("parquet")
    result = load(settings, source)
    assert_quarantined(settings, result, "cut.parquet", "corrupt_parquet", "truncated or corrupt", "magic bytes")
    assert_good_rows_only(settings, source, "parquet")


def test_ragged_csv_row_is_an_error_not_padded(settings):
    folder = with_good_csv(settings)
    (folder / "ragged.csv").write_text(HEADER + "4,fig,2,2024-01-01 11:00:00\n5,kiwi\n")
    source = make_source()
    result = load(settings, source)
    assert_quarantined(
        settings, result, "ragged.csv", "csv_parse_error",
        "line 3: Expected Number of Columns: 4 Found: 2", "'5,kiwi'", "as many comma-separated fields as the header",
    )
    assert_good_rows_only(settings, source)


def test_unparseable_csv_value_names_column_and_value(settings):
    folder = with_good_csv(settings)
    (folder / "values.csv").write_text(HEADER + "4,fig,three,2024-01-01 11:00:00\n5,kiwi,2,2024-01-01 12:00:00\n")
    source = make_source()
    result = load(settings, source)
    assert_quarantined(
        settings, result, "values.csv", "type_mismatch",
        "column 'qty' has 1 value(s) that are not integer, e.g. 'three'",
        "Send 'qty' as integer, or change the type in sources.yml",
    )
    assert_good_rows_only(settings, source)


def test_invalid_json_line_is_quarantined(settings):
    folder = landing(settings)
    line = '{{"id": {}, "name": "{}", "qty": {}, "ts": "{}"}}'
    (folder / "good-1.jsonl").write_text("\n".join(line.format(*r[:4]) for r in GOOD_ROWS[:2]) + "\n")
    (folder / "good-2.jsonl").write_text(line.format(*GOOD_ROWS[2][:4]) + "\n")
    (folder / "broken.jsonl").write_text(line.format(4, "fig", 2, "2024-01-01 11:00:00") + '\n{"id": 5, "name": \n')
    source = make_source("jsonl")
    result = load(settings, source)
    assert_quarantined(settings, result, "broken.jsonl", "invalid_json", "Malformed JSON", "one complete JSON object")
    assert_good_rows_only(settings, source, "jsonl")


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_non_utf8_text_is_quarantined(settings, fmt):
    folder = with_good_csv(settings) if fmt == "csv" else landing(settings)
    if fmt == "jsonl":
        line = '{{"id": {}, "name": "{}", "qty": {}, "ts": "{}"}}\n'
        (folder / "good-1.jsonl").write_text("".join(line.format(*r[:4]) for r in GOOD_ROWS[:2]))
        (folder / "good-2.jsonl").write_text(line.format(*GOOD_ROWS[2][:4]))
        latin = line.format(4, "café", 2, "2024-01-01 11:00:00")
    else:
        latin = HEADER + "4,café,2,2024-01-01 11:00:00\n"
    (folder / f"latin1.{fmt}").write_bytes(latin.encode("latin-1"))
    source = make_source(fmt)
    result = load(settings, source)
    assert_quarantined(settings, result, f"latin1.{fmt}", "not_utf8", "not UTF-8 encoded", "Re-export it as UTF-8")
    assert_good_rows_only(settings, source, fmt)


def test_zero_byte_file_is_quarantined_idempotently(settings):
    folder = with_good_csv(settings)
    (folder / "empty.csv").write_bytes(b"")
    source = make_source()
    for _ in range(2):  # a re-run overwrites the same quarantine entry and loads the same rows
        result = load(settings, source)
        assert_quarantined(settings, result, "empty.csv", "empty_file", "the file is empty (0 bytes)")
        assert_good_rows_only(settings, source)


def test_extra_column_evolves_bronze_and_old_rows_read_null(settings):
    source = make_source()
    with_good_csv(settings, "2023-12-31")
    assert load(settings, source, "2023-12-31").quarantined == ()
    folder = landing(settings)
    (folder / "good-1.csv").write_text(GOOD_1)
    (folder / "good-2.csv").write_text("id,name,coupon,qty,ts\n3,plum,SPRING,7,2024-01-01 10:15:00\n")
    result = load(settings, source)
    assert result.quarantined == () and len(result.files) == 2
    # Iceberg appends the new nullable column after the existing ones.
    assert [f.name for f in result.result.schema.fields] == [*COLUMNS, *LINEAGE_COLUMNS, "coupon"]
    assert str(result.result.schema.find_field("coupon").field_type) == "string"
    assert [(r[0], r[1], r[3]) for r in bronze(settings, source, "id, coupon")] == [
        (1, None, f"shop/{DAY}/good-1.csv"), (2, None, f"shop/{DAY}/good-1.csv"), (3, "SPRING", f"shop/{DAY}/good-2.csv"),
    ]
    assert [r[:2] for r in bronze(settings, source, "id, coupon", day="2023-12-31")] == [(1, None), (2, None), (3, None)]


def test_missing_column_says_what_to_change(settings):
    folder = with_good_csv(settings)
    (folder / "short.csv").write_text("id,name,ts\n4,fig,2024-01-01 11:00:00\n")
    source = make_source()
    result = load(settings, source)
    assert_quarantined(
        settings, result, "short.csv", "missing_columns",
        "column 'qty' is missing (found: id, name, ts)", "Send it, or change the contract in sources.yml",
    )
    assert_good_rows_only(settings, source)


def test_renamed_column_is_missing_plus_extra(settings):
    folder = with_good_csv(settings)
    (folder / "renamed.csv").write_text("id,name,quantity,ts\n4,fig,2,2024-01-01 11:00:00\n")
    source = make_source()
    result = load(settings, source)
    assert_quarantined(
        settings, result, "renamed.csv", "missing_columns",
        "column 'qty' is missing and column 'quantity' is not in the contract (found: id, name, quantity, ts)",
        "If 'qty' is now called 'quantity', send it as 'qty' again or rename it to 'quantity' in sources.yml",
    )
    assert_good_rows_only(settings, source)


def test_column_named_like_lineage_is_refused(settings):
    folder = with_good_csv(settings)
    (folder / "lineage.csv").write_text("id,name,qty,ts,_run_id\n4,fig,2,2024-01-01 11:00:00,forged\n")
    source = make_source()
    result = load(settings, source)
    assert_quarantined(settings, result, "lineage.csv", "reserved_column", "column '_run_id' is reserved for lineage")
    assert_good_rows_only(settings, source)


def test_changed_type_that_cannot_cast_is_quarantined(settings):
    folder = with_good_parquet(settings)
    write_parquet(settings, folder / "retyped.parquet", "SELECT 4::BIGINT AS id, 'fig' AS name, 'lots' AS qty, "
                  "TIMESTAMP '2024-01-01 11:00:00' AS ts")
    source = make_source("parquet")
    result = load(settings, source)
    assert_quarantined(
        settings, result, "retyped.parquet", "type_mismatch",
        "column 'qty' has 1 value(s) that are not integer, e.g. 'lots' (the file stores it as VARCHAR)",
        "Send 'qty' as integer, or change the type in sources.yml",
    )
    assert_good_rows_only(settings, source, "parquet")


def test_odd_file_names_are_read(settings):
    folder = landing(settings)
    names = ["it's a \"file\".csv", "-leading-dash.csv", "ünïcödé名.csv", "sp ace[1].csv"]
    rows = GOOD_1.splitlines()[1:] + GOOD_2.splitlines()[1:] + ["4,fig,2,2024-01-01 11:00:00"]
    for name, row in zip(names, rows, strict=True):
        (folder / name).write_text(HEADER + row + "\n")
    (folder / "-bad 'x' ü.csv").write_bytes(b"")
    source = make_source()
    result = load(settings, source)
    assert len(result.files) == 4
    sidecar = assert_quarantined(settings, result, "-bad 'x' ü.csv", "empty_file")
    assert Path(result.quarantined[0].target).name == "-bad__x___.csv" and sidecar["file"].endswith("-bad 'x' ü.csv")
    got = [(r[0], r[-1]) for r in bronze(settings, source, "id")]
    assert got == [(i, f"shop/{DAY}/{n}") for i, n in zip([1, 2, 3, 4], names, strict=True)]


def test_symlink_out_of_landing_is_never_read(settings, tmp_path):
    folder = with_good_csv(settings)
    secret = tmp_path / "outside" / "secret.csv"
    secret.parent.mkdir()
    secret.write_text(HEADER + "666,secret,1,2024-01-01 00:00:00\n")
    (folder / "link.csv").symlink_to(secret)
    source = make_source()
    result = load(settings, source)
    assert_quarantined(
        settings, result, "link.csv", "unsafe_path", f"resolves to '{secret}', outside the landing zone",
        "it was not read or copied", "Replace the link with the file itself", copied=False,
    )
    assert not (Path(settings.quarantine) / "shop" / DAY / "link.csv").exists()
    assert_good_rows_only(settings, source)


def test_file_over_the_size_limit_is_quarantined(settings):
    folder = with_good_csv(settings)
    big = HEADER + "".join(f"{i},n{i},1,2024-01-01 11:00:00\n" for i in range(10, 20))
    (folder / "big.csv").write_text(big)
    source = make_source()
    limit = len(GOOD_1.encode()) + 1
    result = load(settings, source, max_file_bytes=limit)
    assert_quarantined(
        settings, result, "big.csv", "too_large", f"the file is {len(big.encode()):,} bytes, over the limit of {limit:,}",
        "Split it into several smaller files",
    )
    assert_good_rows_only(settings, source)


def test_on_bad_file_fail_raises_and_writes_nothing(settings):
    folder = with_good_csv(settings)
    source = make_source(on_bad_file="fail")
    before = load(settings, source).result.snapshot_id
    (folder / "ragged.csv").write_text(HEADER + "4,fig\n")
    with pytest.raises(BadFile) as info:
        load(settings, source)
    message = str(info.value)
    for phrase in (f"shop/{DAY}/ragged.csv", "csv_parse_error", "line 2: Expected Number of Columns: 4 Found: 2", RERUN):
        assert phrase in message
    assert load_catalog(settings).load_table(bronze_identifier(source)).current_snapshot().snapshot_id == before
    assert_good_rows_only(settings, source)
    assert not Path(settings.quarantine).exists()


def test_quarantine_needs_a_root(settings):
    (with_good_csv(settings) / "empty.csv").write_bytes(b"")
    with pytest.raises(IngestError, match=r"empty\.csv \(empty_file.*no quarantine folder was given"):
        load_day(duck.connect(settings), load_catalog(settings), make_source(), settings.landing, DAY, "run-1")


def test_on_bad_file_is_validated():
    with pytest.raises(SourceConfigError, match="source 'shop': on_bad_file 'skip' is not one of quarantine, fail"):
        make_source(on_bad_file="skip")
